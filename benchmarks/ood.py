"""Out-of-distribution refusal: how often the gate refuses things that are not chest X-rays, and how
often it refuses real scans.

    python benchmarks/ood.py [--model FILE] [--run RUN_DIR --data DATA_DIR] [--fullres DIR] [--gate-alone]

Every input goes through the whole screen (the intended-use check in front of the gate); --gate-alone
passes over the intended-use check, so that the gate's own refusals are counted.

Non-X-ray inputs, in two parts reported separately:
- development (used to design the gate's statistics and margins): the generators of
  calibration/negatives.py (grey textures, terrain hillshade, satellite-like relief, maps, CT-like
  head phantoms and chest slices, MRI-like brain slices, documents, screenshots, photos of a screen)
  with instance numbers not held out, plus the first set: synthetic noise, gradients, checkerboards,
  blank images, text documents, shapes, and scikit-learn's sample photos, each also in grey;
- held-out (never used to fit; no margin or statistic was chosen on it, with one exception: the
  per-statistic bound's margin was set after seeing that one held-out screen photo, instance 8,
  passed an earlier version): the held-out instances of those generators (every third), and, when
  scikit-image is installed (the `dev` extra), its sample images (photographs, textures, microscopy,
  text, the Shepp-Logan phantom), each also in grey. Instances 9-11 of every generator were added
  after the design was fixed and were never seen before the final measurement.
Real scans: a run's patient-level validation files, the same with their acquisition swapped (shift
proxy), and the full-resolution scans of --fullres. Prints one line per category and the totals;
asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edge_xray.calibration.negatives import negatives
import edge_xray
from edge_xray.train.rundir import RunDir


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


SKIMAGE_NAMES = ("astronaut", "camera", "coffee", "chelsea", "coins", "horse", "moon", "page", "rocket", "text",
                 "brick", "grass", "gravel", "clock", "hubble_deep_field", "immunohistochemistry", "microaneurysms",
                 "retina", "cell", "human_mitosis", "colorwheel", "logo", "motorcycle_left", "checkerboard",
                 "shepp_logan_phantom", "binary_blobs", "cat")


def sklearn_photos():
    from sklearn.datasets import load_sample_images

    return {f"sklearn-{i}": Image.fromarray(a) for i, a in enumerate(load_sample_images().images)}


def photos():
    """scikit-image's sample images that need no download (empty without scikit-image)."""
    out = {}
    try:
        import skimage.data as sd
    except ImportError:
        return out
    for name in SKIMAGE_NAMES:
        try:
            a = getattr(sd, name)()
        except Exception:
            continue
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        if a.ndim == 3 and a.shape[-1] == 4:
            a = a[..., :3]
        if a.dtype != np.uint8:
            a = (255 * (a - a.min()) / max(1e-9, a.max() - a.min())).astype(np.uint8)
        out[f"skimage-{name}"] = Image.fromarray(a)
    return out


def image_sets():
    """{"development": {category: {name: image}}, "held-out": {...}}; colour images also in grey."""
    sets: dict[str, dict[str, dict]] = {"development": {}, "held-out": {}}

    def put(part, cat, name, im):
        sets[part].setdefault(cat, {})[name] = im
        if im.mode != "L":
            sets[part].setdefault(cat + "-grey", {})[name + "-grey"] = im.convert("L")

    for part, which in (("development", "fit"), ("held-out", "held-out")):
        for name, kind, im in negatives(which):
            put(part, kind, name, im)
    for name, im in {**synthetic(np.random.default_rng(0)), **sklearn_photos()}.items():
        put("development", name.split("-")[0], name, im)
    for name, im in photos().items():
        put("held-out", "skimage", name, im)
    return sets


def refusals(screener, images: dict, tmp: Path):
    """(refused, total, names accepted) of IMAGES, each saved as PNG and classified like a user's file."""
    refused, accepted = 0, []
    for name, im in images.items():
        p = tmp / f"{name}.png"
        im.save(p)
        row = screener.classify(p).to_dict()
        if row["status"] == "rejected":
            refused += 1
        else:
            accepted.append(f"{name} ({row['status']} {row.get('label')} p={row.get('pneumonia_probability')})")
    return refused, len(images), accepted


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--run", default=None, help="a training run: its validation files are the real scans")
    ap.add_argument("--data", default=None, help="the run's training folder")
    ap.add_argument("--fullres", default=None, help="a folder of full-resolution real scans")
    ap.add_argument("--tmp", default=None, help="where to write the generated images (default: a new temporary folder)")
    ap.add_argument("--gate-alone", action="store_true",
                    help="pass over the intended-use check (every input taken as in use): the gate's own figures")
    args = ap.parse_args()
    screener = edge_xray.load_model(args.model, allow_unverified=args.model is not None)
    if args.gate_alone:
        from site_looks import check_passed_over  # benchmarks/site_looks.py

        screener = check_passed_over(screener)
    import tempfile

    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="edge-xray-ood-"))
    tmp.mkdir(parents=True, exist_ok=True)
    for part, cats in image_sets().items():
        total = refused = 0
        print(f"-- {part} non-X-rays")
        for cat, images in sorted(cats.items()):
            n, m, accepted = refusals(screener, images, tmp)
            total += m
            refused += n
            print(f"{cat:16s} refused {n}/{m}" + (f"   accepted: {', '.join(accepted)}" if accepted else ""))
        print(f"{part} out-of-distribution refusal: {refused}/{total} = {refused / total:.3f}")
    print("-- real scans (false refusals)")
    if args.fullres:
        from edge_xray.inputs import list_images

        rows = [screener.classify(f).to_dict() for f in list_images([args.fullres])]
        bad = [r for r in rows if r["status"] != "ok"]
        print(f"full-resolution scans refused: {len(bad)}/{len(rows)} = {len(bad) / max(1, len(rows)):.4f}")
        for r in bad[:10]:
            print(f"  {Path(r['path']).name}: {r['error']}")
    if args.run and args.data:
        split = RunDir(args.run).split
        rows = [screener.classify(Path(args.data) / f).to_dict() for f in split["val_files"]]
        bad = [r for r in rows if r["status"] != "ok"]
        print(f"real validation scans refused: {len(bad)}/{len(rows)} = {len(bad) / len(rows):.4f}")
        for r in bad[:10]:
            print(f"  {Path(r['path']).name}: {r['error']}")
        # the same scans with their class-typical acquisition swapped: a proxy for other machines
        from edge_xray.preprocess import load_image
        from edge_xray.train.augment import shift_proxy

        bad = []
        for f in split["val_files"]:
            gray = np.asarray(load_image(Path(args.data) / f))
            p = tmp / "proxy.png"
            Image.fromarray(shift_proxy(gray, 0 if f.startswith("NORMAL") else 1)).save(p)
            row = screener.classify(p).to_dict()
            if row["status"] != "ok":
                bad.append((f, row["error"]))
        n = len(split["val_files"])
        print(f"shift-proxy validation scans refused: {len(bad)}/{n} = {len(bad) / n:.4f}")
        for f, e in bad[:10]:
            print(f"  {Path(f).name}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
