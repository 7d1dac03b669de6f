"""Heatmaps: what one overlay costs, and where the evidence map puts its mass.

    python benchmarks/heatmaps.py --scans DIR [--model FILE] [--repeat N]
    python benchmarks/heatmaps.py --run RUN_DIR --data DATA_DIR [--model FILE] [--masks PNG]
    python benchmarks/heatmaps.py --example SCAN --out runs/heatmap-example.png [--side 640]

Timing (--scans, e.g. the full-resolution scans): for every scan, the time of screening it
(`Screener.classify` without heatmap) and of screening it and writing its overlay (decode for the
overlay, draw, PNG write), best of --repeat runs each; prints the median, 95th percentile and
maximum of the extra milliseconds per overlay written (PNEUMONIA results only), as wall time and as
CPU time of the process (the CPU time is the figure to trust on a machine shared with other work).

Where the map lies (--run/--data: the run's validation scans, PNEUMONIA results): a rough lung-field
mask is made per scan from the prepared (equalised, 128 px) image: smoothed, the darkest
LUNG_QUANTILE of a central box (BOX: the image without its top, bottom and side margins), and on
each side of the midline the largest connected dark region of at least MIN_LUNG_AREA. Scans where
that does not find one region on each side use the same rule on the mean training layout (the
gate's template) instead. The map (positive part, upsampled as drawn) is split into: lung
fields, the central column between the lungs (mediastinum and heart, rows of the lungs), the image
border (outer BORDER of each side) and the rest; the fraction of the map's mass in each is compared
with the fraction of the image area each covers. Needs scikit-image (the `dev` extra).

Example (--example): one overlay, resized so that its long side is --side pixels.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

import edge_xray
from edge_xray.batch import Batch
from edge_xray.gate import Gate
from edge_xray.train.rundir import RunDir
from edge_xray.heatmap import cam, render_heatmap
from edge_xray.inputs import list_images
from edge_xray.preprocess import load_image, prepare
from edge_xray.runtime import Model

BOX = (0.10, 0.85, 0.08, 0.92)  # rows and columns (fractions) where the lungs are looked for
LUNG_QUANTILE = 0.40  # the darkest 40 % of the smoothed box are candidate lung
MIN_LUNG_AREA = 0.03  # of the image, per lung
BORDER = 0.08  # of each side


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000


def timing(screener, scans, repeat: int):
    """Extra wall and CPU milliseconds of screening with an overlay over screening alone (best of REPEAT)."""
    extra_wall, extra_cpu, screen = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for f in scans:
            plain = [_timed(lambda: screener.classify(f).to_dict()) for _ in range(repeat)]
            heat = [_timed(lambda: next(iter(Batch(screener, [f], heatmap_dir=Path(tmp)))).screening.to_dict())
                    for _ in range(repeat)]
            screen.append(min(p[1] for p in plain))
            if heat[0][0].get("heatmap"):
                extra_wall.append(min(h[1] for h in heat) - min(p[1] for p in plain))
                extra_cpu.append(min(h[2] for h in heat) - min(p[2] for p in plain))
    q = lambda v, p: float(np.quantile(v, p)) if v else float("nan")  # noqa: E731
    print(f"screening alone: median {statistics.median(screen):.1f} ms wall per scan ({len(screen)} scans)")
    print(f"overlays written: {len(extra_wall)} (PNEUMONIA results)")
    for name, v in (("wall", extra_wall), ("CPU", extra_cpu)):
        print(f"extra {name} time per overlay: median {q(v, 0.5):.1f} ms, p95 {q(v, 0.95):.1f} ms, max {max(v) if v else float('nan'):.1f} ms")


def lung_mask(x: np.ndarray, template: np.ndarray | None):
    """(mask, how) for a prepared image X (size, size) in 0..1; see the module's docstring."""
    from skimage.measure import label, regionprops

    n = x.shape[0]
    smooth = np.asarray(Image.fromarray(np.uint8(x * 255)).filter(ImageFilter.BoxBlur(n // 32)), np.float32) / 255
    box = np.zeros((n, n), bool)
    box[int(BOX[0] * n): int(BOX[1] * n), int(BOX[2] * n): int(BOX[3] * n)] = True
    dark = box & (smooth < np.quantile(smooth[box], LUNG_QUANTILE))
    lab = label(dark, connectivity=1)
    keep = []
    for half in (slice(0, n // 2), slice(n // 2, n)):  # the largest dark region on each side
        side = np.zeros_like(dark)
        side[:, half] = True
        regions = [r for r in regionprops(lab) if side[int(r.centroid[0]), int(r.centroid[1])]
                   and r.area >= MIN_LUNG_AREA * n * n]
        if regions:
            keep.append(max(regions, key=lambda r: r.area).label)
    if len(keep) == 2:
        return np.isin(lab, keep), "scan"
    t = np.asarray(Image.fromarray(template.reshape(16, 16).astype(np.float32), mode="F").resize((n, n), Image.Resampling.BICUBIC))
    return box & (t < np.quantile(t[box], LUNG_QUANTILE)), "template"


def regions_of(mask: np.ndarray):
    n = mask.shape[0]
    border = np.zeros_like(mask)
    b = max(1, int(round(BORDER * n)))
    border[:b] = border[-b:] = True
    border[:, :b] = border[:, -b:] = True
    centre = np.zeros_like(mask)
    rows = np.flatnonzero(mask.any(1))
    cols_l = np.flatnonzero(mask[:, : n // 2].any(0))
    cols_r = np.flatnonzero(mask[:, n // 2:].any(0)) + n // 2
    if len(rows) and len(cols_l) and len(cols_r):
        # between the inner edges of the two lungs, over the rows of the lungs
        inner_l = int(np.median([np.flatnonzero(mask[r, : n // 2]).max() for r in rows if mask[r, : n // 2].any()]))
        inner_r = int(np.median([np.flatnonzero(mask[r, n // 2:]).min() + n // 2 for r in rows if mask[r, n // 2:].any()]))
        if inner_r > inner_l:
            centre[rows.min(): rows.max() + 1, inner_l + 1: inner_r] = True
    else:
        centre[n // 5: 4 * n // 5, 2 * n // 5: 3 * n // 5] = True
    lung = mask & ~border
    centre &= ~lung & ~border
    rest = ~(lung | centre | border)
    return {"lung fields": lung, "centre (mediastinum, heart)": centre, "border": border & ~lung, "rest": rest}


def where(model, run, data, masks_png=None):
    gate, screener = Gate.from_card(model.card), edge_xray.Screener(model)
    split = RunDir(run).split
    mass = {}
    area = {}
    hows = []
    peaks = {}
    examples = []
    for f in split["val_files"]:
        x = prepare(load_image(Path(data) / f, model.size), model.size)
        row = screener.classify(Path(data) / f).to_dict()
        if row["label"] != "PNEUMONIA":
            continue
        _, feats = model.run(x, features=True)
        c = {"bacterial": 1, "viral": 2}[row["pneumonia_type"]]
        m = cam(model.card, feats, c)
        heat = np.clip(np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize(x.shape[::-1], Image.Resampling.BICUBIC)), 0, None)
        mask, how = lung_mask(x, gate.template)
        hows.append(how)
        total = heat.sum()
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        for name, reg in regions_of(mask).items():
            mass.setdefault(name, []).append(heat[reg].sum() / total if total > 0 else 0.0)
            area.setdefault(name, []).append(reg.mean())
            peaks[name] = peaks.get(name, 0) + bool(reg[peak])
        if len(examples) < 12:
            examples.append((x, mask, heat))
    n = len(hows)
    print(f"validation scans screened PNEUMONIA: {n}; lung mask from the scan for {hows.count('scan')}, "
          f"from the mean layout for {hows.count('template')}")
    print(f"{'region':30s} {'map mass':>9s} {'area':>7s} {'peak here':>10s}")
    for name in mass:
        print(f"{name:30s} {np.mean(mass[name]):9.3f} {np.mean(area[name]):7.3f} {peaks[name] / n:10.3f}")
    lung = np.array(mass["lung fields"])
    print(f"scans with at least half the map's mass in the lung fields: {np.mean(lung >= 0.5):.3f}")
    if masks_png:  # a contact sheet: scan, mask outline in green, map in red
        tiles = []
        for x, mask, heat in examples:
            g = np.uint8(x * 255)
            rgb = np.stack([g, g, g], -1).astype(np.float32)
            rgb[..., 1] = np.where(mask, 0.6 * rgb[..., 1] + 100, rgb[..., 1])
            rgb[..., 0] = rgb[..., 0] * (1 - 0.5 * heat / max(heat.max(), 1e-9)) + 255 * 0.5 * heat / max(heat.max(), 1e-9)
            tiles.append(np.clip(rgb, 0, 255).astype(np.uint8))
        sheet = np.concatenate([np.concatenate(tiles[i: i + 4], 1) for i in range(0, len(tiles) - len(tiles) % 4, 4)], 0)
        Image.fromarray(sheet).save(masks_png)


def example(model, scan, out, side):
    row = edge_xray.Screener(model).classify(scan).to_dict()
    if row["status"] != "ok":
        raise SystemExit(f"{scan}: {row['error']}")
    x = prepare(load_image(scan, model.size), model.size)
    _, feats = model.run(x, features=True)
    im = render_heatmap(model.card, load_image(scan), feats, row)
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    im.save(out, optimize=True)
    print(f"{out}: {im.size[0]}x{im.size[1]}, {Path(out).stat().st_size // 1024} KB, {row['label']} p={row['pneumonia_probability']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--scans", default=None, help="a folder of scans to time the overlay on")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--run", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--masks", default=None, help="write a contact sheet of lung masks and maps here")
    ap.add_argument("--example", default=None, help="a scan to draw one example overlay from")
    ap.add_argument("--out", default="runs/heatmap-example.png")
    ap.add_argument("--side", type=int, default=640)
    args = ap.parse_args()
    model = Model(args.model, threads=1)
    if args.scans:
        timing(edge_xray.Screener(model), list_images([args.scans]), args.repeat)
    if args.run and args.data:
        where(model, args.run, args.data, args.masks)
    if args.example:
        example(model, args.example, args.out, args.side)
    return 0


if __name__ == "__main__":
    sys.exit(main())
