"""Framed scans: how often the screening answer flips when a scan is framed by a border, before and after
the border crop of `edge_xray.preprocess.prepare`.

    python benchmarks/framing.py --data TRAIN_DIR [--fullres FULLRES_DIR] [--model FILE] [--limit N]

Scans: the full-resolution scans (FULLRES_DIR, decoded as the classify loop decodes them) and the
validation scans of the model's patient-level split (TRAIN_DIR's 224 px copies; the split rebuilt as
`edge-xray train` makes it, from the val fraction and split seed in the model card's recipe: fold 1 of
split seed 1, 746 scans, for the bundled model). Each scan is framed (train/augment.add_border) on all
four sides by 5, 10, 15, 20 and 30 % of its height and width, in black, white, and a noisy dark surround
(a photographed film: level 10-45 with a gradient and pixel noise, then saved as JPEG quality 85), and
at 20 % in a black letterbox (top and bottom), on one side (left, black) and on three sides (noisy).
A flip is an answer (NORMAL / PNEUMONIA) that differs from the answer on the same scan unframed;
"before" runs the model without the crop (prepare(..., crop=False)), "after" with it. The unframed
scans' own crops (how many are cropped at all, and how deep) and the answers the crop changes on them
are printed first. Uses the edge runtime; prints a table and a JSON line; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from edge_xray.decision import Calibration
from edge_xray.preprocess import border_box, load_image, prepare
from edge_xray.runtime import Model
from edge_xray.train.augment import add_border
from edge_xray.train.data import recipe_split

FRACTIONS = (0.05, 0.10, 0.15, 0.20, 0.30)
KINDS = ("black", "white", "noisy")
SIDES = {  # (top, bottom, left, right): which sides of the scan get the border
    "4 sides": (1, 1, 1, 1), "letterbox": (1, 1, 0, 0), "1 side": (0, 0, 1, 0), "3 sides": (1, 0, 1, 1)}
EXTRA = (("letterbox", "black", 0.20), ("1 side", "black", 0.20), ("3 sides", "noisy", 0.20))
NOISY_JPEG_QUALITY = 85


def framed(gray: np.ndarray, sides: str, kind: str, fraction: float, seed: int) -> Image.Image:
    out = add_border(gray, [fraction * s for s in SIDES[sides]], kind, np.random.default_rng(seed))
    im = Image.fromarray(out)
    if kind == "noisy":  # a photograph of a film reaches the device as a JPEG
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=NOISY_JPEG_QUALITY)
        im = Image.open(io.BytesIO(buf.getvalue())).convert("L")
    return im


def validation_grays(data: Path, card) -> list[np.ndarray]:
    recipe = card.get("training", {}).get("recipe", {})
    seed = recipe.get("split_seed")
    seed = recipe.get("seed", 0) if seed is None else seed
    _, images, _, _, va = recipe_split(data, recipe)
    print(f"validation: {len(va)} scans (patient-level split, val fraction {recipe.get('val_fraction', 0.15)}, "
          f"split seed {seed})")
    return [images[i] for i in va]


def figures(name: str, model: Model, grays: list[np.ndarray]) -> dict:
    cal = Calibration.from_card(model.card)

    def label(im: Image.Image, crop: bool) -> str:
        return cal.decide(model.run(prepare(im, model.size, crop=crop))).label

    n = len(grays)
    base = {c: [label(Image.fromarray(g), c) for g in grays] for c in (False, True)}
    depths = []
    for g in grays:
        h, w = g.shape
        l, t, r, b = border_box(Image.fromarray(g))
        depths.append(max(t / h, (h - b) / h, l / w, (w - r) / w))
    depths = np.array(depths)
    changed = sum(a != b for a, b in zip(base[False], base[True]))
    print(f"\n{name}: {n} scans; unframed scans cropped: {int((depths > 0).sum())} (over 2 % of a side: "
          f"{int((depths > 0.02).sum())}, deepest {depths.max():.1%}); unframed answers changed by the crop: {changed}")
    print(f"{'border':28s} {'flips before':>14s} {'to PNEUMONIA':>13s} {'flips after':>13s} {'to PNEUMONIA':>13s}")
    rows = {}
    cases = [("4 sides", k, f) for k in KINDS for f in FRACTIONS] + list(EXTRA)
    for sides, kind, fraction in cases:
        counts = []
        for crop in (False, True):
            flips = to_pneumonia = 0
            for i, g in enumerate(grays):
                got = label(framed(g, sides, kind, fraction, seed=i), crop)
                flips += got != base[crop][i]
                to_pneumonia += got != base[crop][i] and got == "PNEUMONIA"
            counts += [flips, to_pneumonia]
        key = f"{kind} {fraction:.0%} {sides}"
        rows[key] = counts
        print(f"{key:28s} {counts[0]:>6d} ({counts[0] / n:5.1%}) {counts[1]:>13d} "
              f"{counts[2]:>5d} ({counts[2] / n:5.1%}) {counts[3]:>13d}")
    return {"scans": n, "unframed_cropped": int((depths > 0).sum()),
            "unframed_cropped_over_2pct": int((depths > 0.02).sum()),
            "unframed_deepest_crop": round(float(depths.max()), 4), "unframed_answers_changed": changed,
            "flips": {k: {"before": v[0], "before_to_pneumonia": v[1], "after": v[2], "after_to_pneumonia": v[3]}
                      for k, v in rows.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the training folder (NORMAL/, PNEUMONIA/): validation scans")
    ap.add_argument("--fullres", default=None, help="full-resolution scans (NORMAL/, PNEUMONIA/)")
    ap.add_argument("--model", default=None, help="screening model (default: bundled)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N scans of each set (a quick look)")
    args = ap.parse_args()
    model = Model(args.model)
    out = {"model_sha256": model.sha256}
    if args.fullres:
        files = sorted(p for p in Path(args.fullres).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        grays = [np.asarray(load_image(f, model.size)) for f in files[:args.limit]]
        out["fullres"] = figures("full-resolution scans", model, grays)
    out["validation"] = figures("validation scans", model, validation_grays(Path(args.data), model.card)[:args.limit])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
