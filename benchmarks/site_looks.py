"""Child scans under one site's acquisition look, through the whole screen: how many are refused, and
by which check.

    python benchmarks/site_looks.py --data TRAIN_DIR [--negatives DIR ...] [--model FILE]
        [--intended-use-model FILE] [--json]

- The bundled model's validation scans (split seed 1, fraction 0.15), kept at the training side
  (224 px), as they are, with their acquisition swapped (the shift proxy: each class given the other's
  look), under each look of train/augment.SITE_LOOKS (one look on every scan, as a single site would
  give them), and under the parts of the sharp look alone (PARTS: edge enhancement
  at several radii and strengths, three of them beyond the copies the gate's bounds were widened
  with, the sideways stretch, the contrast), each through edge_xray.load_model (DICOM
  tags aside, every check): refused, refused by the intended-use check, and the reasons.
- With --negatives (folders with adult_frontal/ and a labels.csv): every adult frontal film in them
  through the same screen with the intended-use check passed over (each film taken as in use), by
  collection: which of the other checks refuse real films from units other than the training
  hospital's, and why.
Prints one line per figure; asserts nothing. The looks are a proxy for another site, not a site.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict

import numpy as np
from intended_use import reason_kind, screen_all, tally, validation_scans  # benchmarks/intended_use.py
from PIL import Image

import edge_xray
from edge_xray.intended_use import LABELS, decide
from edge_xray.screen import Screener
from edge_xray.train import augment as aug
from edge_xray.train.intended_use import negative_files


def _unsharp(radius: float, percent: int):
    return lambda g: np.asarray(aug.edge_enhance(Image.fromarray(g), radius, percent))


# The sharp look's parts, one at a time (at the 224 px training side, like the looks), and more edge
# enhancement: 2 px at 60 % and 120 % lie within the copies the gate's bounds were widened with
# (train/augment.EDGE_RADIUS, EDGE_PERCENT), the other three beyond them
PARTS = {
    "edge enhancement, radius 2 px, 120 %": _unsharp(2, 120),
    "edge enhancement, radius 2 px, 60 %": _unsharp(2, 60),
    "edge enhancement, radius 1 px, 150 %": _unsharp(1, 150),
    "edge enhancement, radius 1.5 px, 180 %": _unsharp(1.5, 180),
    "edge enhancement, radius 3 px, 100 %": _unsharp(3, 100),
    "stretched sideways to 1.3": lambda g: np.asarray(aug.affine(Image.fromarray(g), 0.0, 1.3, 1.0, 0.0, 0.0)),
    "contrast 1.15": lambda g: np.rint(aug.tone(g, 1.0, 1.15, 0.0)).clip(0, 255).astype(np.uint8),
}


SWAPPED = "acquisition swapped (the shift proxy, train/augment.shift_proxy)"


def looked(name: str, gray: np.ndarray, pneumonia: int) -> np.ndarray:
    """GRAY as look NAME gives it ("as they are", SWAPPED, a SITE_LOOKS key, a PARTS key)."""
    if name == "as they are":
        return gray
    if name == SWAPPED:
        return aug.shift_proxy(gray, pneumonia)
    if name in aug.SITE_LOOKS:
        return aug.site_look(gray, name)
    return PARTS[name](gray)


class InUse:
    """The intended-use check's place in the screen, answering "in use" for every input."""

    def __init__(self, size: int, threshold: float):
        self.size, self.threshold = size, threshold
        self.p = np.eye(len(LABELS))[0]

    def check(self, x):
        return decide(self.p, self.threshold)


def check_passed_over(screener: Screener) -> Screener:
    """SCREENER's models and gate with the intended-use check passed over (every input taken as in use):
    what the other checks refuse on their own."""
    iu = screener.intended_use
    return Screener(screener.model, orientation=screener.orientation, intended_use=InUse(iu.size, iu.threshold))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="Kermany-layout training folder (for the validation split)")
    ap.add_argument("--negatives", action="append", default=[], help="folders of adult films (adult_frontal/, labels.csv)")
    ap.add_argument("--model", default=None, help="a screening model (default: the bundled one), e.g. an earlier "
                                              "version from git history, with its card beside it")
    ap.add_argument("--intended-use-model", default=None, help="an intended-use model (default: the bundled one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    screener = edge_xray.load_model(args.model, intended_use_model=args.intended_use_model,
                                    allow_unverified=args.model is not None or args.intended_use_model is not None)
    t = screener.intended_use.threshold
    report = {"model": screener.model.path.name, "model_sha256": screener.model.sha256,
              "intended_use_model": screener.intended_use.path.name, "intended_use_sha256": screener.intended_use.sha256,
              "intended_use_threshold": t}
    paths, images = validation_scans(args.data)
    pneumonia = [int(p.parent.name.upper() != "NORMAL") for p in paths]
    print(f"-- {len(images)} validation scans at 224 px, whole screen (intended-use threshold {t:.4g})")
    for name in ("as they are", SWAPPED, *aug.SITE_LOOKS, *PARTS):
        r = tally(screen_all(screener, [Image.fromarray(looked(name, a, y)) for a, y in zip(images, pneumonia)]), t)
        name = f"{name} look ({aug.SITE_LOOKS[name]})" if name in aug.SITE_LOOKS else name
        report[name] = r
        print(f"{name}: refused {r['refused']}/{r['n']} (by the intended-use check {r['refused_by_check']})  "
              f"reasons {r['reasons']}")
    if args.negatives:
        passed_over = check_passed_over(screener)
        films = [n for n in negative_files(args.negatives) if n.kind == "adult_frontal"]
        by = defaultdict(list)
        for n, row in zip(films, screen_all(passed_over, [n.path for n in films])):
            by[n.collection].append(row)
        print(f"-- {len(films)} adult frontal films, the intended-use check passed over")
        for collection, rows in sorted(by.items()):
            reasons = Counter(reason_kind(r.error) for r in rows if r.status != "ok")
            report[f"adults/{collection}"] = {"n": len(rows), "refused": sum(reasons.values()), "reasons": dict(reasons)}
            print(f"{collection}: refused {sum(reasons.values())}/{len(rows)}  reasons {dict(reasons.most_common())}")
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
