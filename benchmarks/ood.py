"""Out-of-distribution refusal: how often the gate refuses things that are not chest X-rays, and how
often it refuses real scans.

    python benchmarks/ood.py [--model FILE] [--real DIR_OR_FILES...] [--run RUN_DIR --data DATA_DIR]

Non-X-ray inputs are made here: synthetic images (noise, gradients, checkerboards, blank, text
documents, shapes), the sample photos shipped by scikit-learn, and, when scikit-image is installed,
its sample images, each also in grey. Real scans: a run's patient-level validation files, or any
folder, and the same with their acquisition swapped (shift proxy). Prints one line per category and
the totals; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edge_xray.classify import classify_file
from edge_xray.gate import Gate
from edge_xray.runtime import Model


def synthetic(rng):
    s = 512
    yy, xx = np.mgrid[0:s, 0:s] / s
    out = {
        "noise-uniform": rng.integers(0, 256, (s, s)),
        "noise-gaussian": np.clip(rng.normal(128, 50, (s, s)), 0, 255),
        "gradient-h": xx * 255,
        "gradient-v": yy * 255,
        "gradient-radial": np.clip(255 * (1 - np.hypot(xx - 0.5, yy - 0.5) * 1.6), 0, 255),
        "blank-black": np.zeros((s, s)),
        "blank-white": np.full((s, s), 255),
        "blank-grey": np.full((s, s), 128),
    }
    for k in (8, 32, 64):
        out[f"checkerboard-{k}"] = (((np.arange(s)[:, None] // k) + (np.arange(s)[None] // k)) % 2) * 255
    for i in range(6):
        im = Image.new("L", (600, 800), 255)
        d = ImageDraw.Draw(im)
        for line in range(40):
            d.text((30, 20 + line * 19), " ".join("word%d" % rng.integers(0, 999) for _ in range(8)), fill=0)
        if i % 2:
            d.rectangle((40, 300, 560, 500), outline=0, width=3)
        out[f"document-{i}"] = np.asarray(im)
    for i in range(4):
        im = Image.new("L", (512, 512), int(rng.integers(0, 255)))
        d = ImageDraw.Draw(im)
        for _ in range(12):
            x, y = rng.integers(0, 450, 2)
            d.ellipse((x, y, x + rng.integers(20, 200), y + rng.integers(20, 200)), fill=int(rng.integers(0, 255)))
        out[f"shapes-{i}"] = np.asarray(im)
    return {k: Image.fromarray(np.asarray(v).astype(np.uint8)) for k, v in out.items()}


def photos():
    out = {}
    from sklearn.datasets import load_sample_images

    for i, a in enumerate(load_sample_images().images):
        out[f"sklearn-{i}"] = Image.fromarray(a)
    try:
        import skimage.data as sd
    except ImportError:
        return out
    for name in ("astronaut", "camera", "coffee", "chelsea", "coins", "horse", "moon", "page", "rocket", "text",
                 "brick", "grass", "gravel", "clock", "hubble_deep_field", "immunohistochemistry", "microaneurysms",
                 "retina", "cell", "human_mitosis", "colorwheel", "logo", "motorcycle_left", "checkerboard"):
        try:
            a = getattr(sd, name)()
        except Exception:
            continue
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        if a.dtype != np.uint8:
            a = (255 * (a - a.min()) / max(1e-9, a.max() - a.min())).astype(np.uint8)
        out[f"skimage-{name}"] = Image.fromarray(a)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--run", default=None, help="a training run: its validation files are the real scans")
    ap.add_argument("--data", default=None, help="the run's training folder")
    ap.add_argument("--tmp", default=None, help="where to write the generated images (default: a new temporary folder)")
    args = ap.parse_args()
    model = Model(args.model)
    gate = Gate.from_card(model.card)
    import tempfile

    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="edge-xray-ood-"))
    tmp.mkdir(parents=True, exist_ok=True)
    cats: dict[str, list] = {}
    images = {**synthetic(np.random.default_rng(0)), **photos()}
    for name, im in images.items():
        variants = {"": im}
        if im.mode != "L":
            variants["-grey"] = im.convert("L")
        for suffix, v in variants.items():
            p = tmp / f"{name}{suffix}.png"
            v.save(p)
            row = classify_file(model, p, gate)
            cat = name.split("-")[0] + ("-grey" if suffix else "")
            cats.setdefault(cat, []).append((p.name, row["status"], row.get("error")))
    total = refused = 0
    for cat, rows in sorted(cats.items()):
        n = sum(r[1] == "rejected" for r in rows)
        total += len(rows)
        refused += n
        missed = [r[0] for r in rows if r[1] != "rejected"]
        print(f"{cat:16s} refused {n}/{len(rows)}" + (f"   accepted: {', '.join(missed)}" if missed else ""))
    print(f"out-of-distribution refusal: {refused}/{total} = {refused / total:.3f}")
    if args.run and args.data:
        split = json.loads((Path(args.run) / "split.json").read_text())
        rows = [classify_file(model, Path(args.data) / f, gate) for f in split["val_files"]]
        bad = [r for r in rows if r["status"] != "ok"]
        print(f"real validation scans refused: {len(bad)}/{len(rows)} = {len(bad) / len(rows):.4f}")
        for r in bad[:10]:
            print(f"  {Path(r['path']).name}: {r['error']}")
        # the same scans with their class-typical acquisition swapped: a proxy for other machines
        from edge_xray.preprocess import load_image
        from edge_xray.train.augment import shift_proxy

        refused = 0
        for f in split["val_files"]:
            gray = np.asarray(load_image(Path(args.data) / f))
            p = tmp / "proxy.png"
            Image.fromarray(shift_proxy(gray, 0 if f.startswith("NORMAL") else 1)).save(p)
            refused += classify_file(model, p, gate)["status"] != "ok"
        n = len(split["val_files"])
        print(f"shift-proxy validation scans refused: {refused}/{n} = {refused / n:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
