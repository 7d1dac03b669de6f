"""Site calibration on a population the model was not tuned on: how well a 40 + 40 sample sets the threshold.

    python benchmarks/site_simulation.py --run RUN_DIR --data TRAIN_DIR [--model FILE] [--draws 200]

The "site" is the run's patient-level validation scans with their class-typical acquisition swapped
(train/augment.py: shift_proxy), a population whose score distribution differs from the one the card's
threshold was set on. Each draw takes 40 NORMAL and 40 PNEUMONIA scans of it as the labelled sample,
sets the threshold with the same rule as `edge-xray site calibrate` (edge_xray.site.site_threshold,
95 % target) and screens the rest of the site's scans at that threshold. Prints the mean and the 5th
percentile of sensitivity and specificity over the draws, beside the card's own threshold. Asserts
nothing. Every scan is screened once through the edge runtime (the gate's refusals are not used).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from edge_xray.decision import Calibration, pneumonia_probability
from edge_xray.preprocess import load_image, prepare
from edge_xray.runtime import Model
from edge_xray.site import DEFAULT_SENSITIVITY, site_threshold
from edge_xray.train.augment import shift_proxy
from edge_xray.train.rundir import RunDir

SAMPLE = 40  # scans of each class in a site's labelled sample


def site_scores(model: Model, run, data_dir) -> tuple[np.ndarray, np.ndarray]:
    cal = Calibration.from_card(model.card)
    y, p = [], []
    for f in RunDir(run).split["val_files"]:
        label = 0 if f.startswith("NORMAL") else 1
        g = shift_proxy(np.asarray(load_image(Path(data_dir) / f)), label)
        logits = model.run(prepare(Image.fromarray(g), model.size))
        y.append(label)
        p.append(float(pneumonia_probability(cal.probabilities(logits))))
    return np.array(y, bool), np.array(p)


def simulate(y, p, draws: int, target: float = DEFAULT_SENSITIVITY, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    sens, spec = [], []
    for _ in range(draws):
        sp, sn = rng.choice(pos, SAMPLE, replace=False), rng.choice(neg, SAMPLE, replace=False)
        t = site_threshold(p[sp], target)
        rest_pos, rest_neg = np.setdiff1d(pos, sp), np.setdiff1d(neg, sn)
        sens.append(float((p[rest_pos] >= t).mean()))
        spec.append(float((p[rest_neg] < t).mean()))
    return {"sens_mean": np.mean(sens), "sens_p05": np.quantile(sens, 0.05),
            "spec_mean": np.mean(spec), "spec_p05": np.quantile(spec, 0.05)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--draws", type=int, default=200)
    args = ap.parse_args()
    m = Model(args.model)
    y, p = site_scores(m, args.run, args.data)
    t = m.card.threshold
    print(f"site: {y.sum()} PNEUMONIA and {(~y).sum()} NORMAL shift-proxy validation scans; model {m.sha256[:12]}")
    print(f"card threshold {t:.3f}: sensitivity {(p[y] >= t).mean():.3f}, specificity {(p[~y] < t).mean():.3f}")
    r = simulate(y, p, args.draws)
    print(f"site threshold from {SAMPLE} + {SAMPLE} scans, {args.draws} draws: sensitivity mean {r['sens_mean']:.3f} "
          f"(5th percentile {r['sens_p05']:.3f}), specificity mean {r['spec_mean']:.3f} (5th percentile {r['spec_p05']:.3f})")


if __name__ == "__main__":
    main()
