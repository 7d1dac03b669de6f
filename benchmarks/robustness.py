"""How often the answer flips under field perturbations, and full-resolution against 224 px copies.

    python benchmarks/robustness.py --run RUN_DIR --data TRAIN_DIR [--fullres FULLRES_DIR] [--model FILE]

Validation scans (the run's patient-level split, 224 px copies): JPEG quality 20, brightness and
contrast +-20 %, 5 degree rotation. Full-resolution scans: downscaling to 512 px, and the answer on
the original against the answer on its 224 px copy in the training folder. Uses the edge runtime
and the bundled (or given) model; prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from edge_xray.decision import Calibration
from edge_xray.preprocess import load_image, prepare
from edge_xray.runtime import Model
from edge_xray.train.augment import perturb
from edge_xray.train.rundir import RunDir

FIELD = ("jpeg20", "bright+20", "bright-20", "contrast+20", "contrast-20", "rotate5")


def decide(model, gray: np.ndarray) -> str:
    return Calibration.from_card(model.card).decide(model.run(prepare(Image.fromarray(gray), model.size))).label


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--fullres", default=None)
    args = ap.parse_args()
    m = Model(args.model)
    grays = [np.asarray(load_image(Path(args.data) / f)) for f in RunDir(args.run).split["val_files"]]
    base = [decide(m, g) for g in grays]
    out = {"model_sha256": m.sha256, "val_images": len(grays)}
    for kind in FIELD:
        flips = sum(decide(m, perturb(g, kind)) != b for g, b in zip(grays, base))
        out[kind] = round(flips / len(grays), 4)
        print(f"{kind:12s} flips {flips}/{len(grays)} = {flips / len(grays):.4f}")
    if args.fullres:
        files = sorted(Path(args.fullres).rglob("*.jpeg"))
        agree = flips = 0
        for f in files:
            g = np.asarray(load_image(f))
            full = decide(m, g)
            flips += decide(m, perturb(g, "down512")) != full
            small = Path(args.data) / f.parent.name / f.name
            agree += decide(m, np.asarray(load_image(small))) == full
        out["down512"] = round(flips / len(files), 4)
        out["fullres_vs_224_agreement"] = round(agree / len(files), 4)
        print(f"{'down512':12s} flips {flips}/{len(files)} = {flips / len(files):.4f} (full-resolution scans)")
        print(f"full resolution against 224 px copy: agreement {agree}/{len(files)} = {agree / len(files):.4f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
