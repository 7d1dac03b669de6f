"""Fit the out-of-distribution gate of a converted model (see edge_xray.gate).

Pooled features of the model itself (its `features` output averaged over space) are gathered on
training images of the run; the top principal components, their variances and the residual
variance define a Mahalanobis-style distance. The refusal threshold is DISTANCE_MARGIN times the
REFUSAL_QUANTILE quantile of the distances on the run's patient-level validation images. The margin
is there for real scans from other machines, whose features drift: with the plain 99.5th percentile,
1.9 % of the validation scans with their acquisition swapped (`train.augment.shift_proxy`) were
refused. The layout threshold sits TEMPLATE_MARGIN below the lowest correlation of any real scan
seen in the fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_xray.gate import Gate, correlation, layout
from edge_xray.preprocess import ImageError, load_and_prepare
from edge_xray.train.data import scan_folder
from edge_xray.train.rundir import RunDir, file_key

COMPONENTS = 16
FIT_IMAGES = 1500
REFUSAL_QUANTILE = 0.995
DISTANCE_MARGIN = 1.5  # the distance threshold is this many times the REFUSAL_QUANTILE of real scans
TEMPLATE_MARGIN = 0.06  # the layout threshold sits this far below the lowest real scan seen


def pooled_features(model, paths):
    """Pooled features and layouts of the readable PATHS, through MODEL (an edge_xray.runtime.Model)."""
    out, layouts = [], []
    for p in paths:
        try:
            x = load_and_prepare(p, model.size)
        except ImageError:
            continue
        _, f = model.run(x, features=True)
        out.append(f.mean(axis=(0, 1)))
        layouts.append(layout(x))
    return np.stack(out), np.stack(layouts)


def fit_gate(model, run: Path, data_dir, seed: int = 0) -> dict:
    """Gate parameters for MODEL (an edge_xray.runtime.Model of the converted network)."""
    val_names = RunDir(run).val_files()
    items = scan_folder(data_dir)
    val = [i.path for i in items if file_key(i.path) in val_names]
    train = [i.path for i in items if file_key(i.path) not in val_names]
    rng = np.random.default_rng(seed)
    train = [train[i] for i in sorted(rng.choice(len(train), min(FIT_IMAGES, len(train)), replace=False))]
    f, lay = pooled_features(model, train)
    template = lay.mean(0)
    mean = f.mean(0)
    _, s, vt = np.linalg.svd(f - mean, full_matrices=False)
    k = min(COMPONENTS, len(s) - 1)
    var = s**2 / (len(f) - 1)
    resid = float(var[k:].sum() / max(1, f.shape[1] - k))
    params = {"method": "Mahalanobis in the top principal components of pooled features, plus residual",
              "mean": mean.round(5).tolist(), "components": vt[:k].round(5).tolist(),
              "variances": var[:k].round(6).tolist(), "residual_variance": max(resid, 1e-8), "threshold": 0.0}
    g = Gate(params)
    fv, lv = pooled_features(model, val)
    dv = np.array([g.distance(x) for x in fv])
    params["threshold"] = round(DISTANCE_MARGIN * float(np.quantile(dv, REFUSAL_QUANTILE)), 4)
    cors = np.array([correlation(v, template) for v in np.concatenate([lay, lv])])
    params["template"] = template.round(2).tolist()
    params["template_min_correlation"] = round(float(cors.min()) - TEMPLATE_MARGIN, 3)
    refused = (dv > params["threshold"]) | (cors[len(lay):] < params["template_min_correlation"])
    params["fit"] = {"train_images": len(f), "val_images": len(dv), "refusal_quantile": REFUSAL_QUANTILE,
                     "distance_margin": DISTANCE_MARGIN,
                     "template_margin": TEMPLATE_MARGIN, "lowest_real_correlation": round(float(cors.min()), 3),
                     "val_false_refusal_rate": round(float(refused.mean()), 4)}
    return params
