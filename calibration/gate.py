"""Fit the out-of-distribution gate of a converted model (see edge_xray.gate).

Pooled features of the model itself (its `features` output averaged over space) are gathered on
training images of the run; the top principal components, their variances and the residual
variance define a Mahalanobis-style distance. The refusal threshold is DISTANCE_MARGIN times the
REFUSAL_QUANTILE quantile of the distances on the run's patient-level validation images. The margin
is there for real scans from other machines, whose features drift (validation scans with their
acquisition swapped, `train.augment.shift_proxy`, are the proxy for them). The layout threshold sits
TEMPLATE_MARGIN below the lowest correlation of any real scan seen in the fit.

The shape score (edge_xray.gate.STATS): its statistics are standardised on the same training images
together with edge-enhanced copies of every ENHANCED_EVERY-th of them (train/augment.random_edge_enhance:
X-ray units sharpen their images, some strongly, and a child's scan so sharpened read as "too much fine
detail" to a gate fitted on one hospital's scans alone); the joint score is their Mahalanobis distance
per statistic, refused above SHAPE_MARGIN times its SHAPE_QUANTILE quantile on those images; each
statistic alone is refused beyond STAT_BOUND_MARGIN standard deviations past the most extreme of them.
These margins were chosen on real scans (validation, full-resolution, shift proxy) and the development
part of the non-X-ray set in calibration/negatives.py (the held-out part only once: see
benchmarks/ood.py). The distance and the layout are fitted on the training images as they are.

`python -m edge_xray.calibration.gate MODEL DATA_DIR --split-seed S` refits the shape score of a
converted screening model whose run folder is not at hand (the bundled one): its training scans are
DATA_DIR less the patient split of seed S, as `edge-xray train` made it; the rest of the gate, and the
card's other fields, are kept. The card is rewritten in place (embedded and beside), so the file's
sha256 changes.

Every number written is finite: variances are floored (VARIANCE_FLOOR, relative to the features'
total variance, and an absolute MIN_VARIANCE), so a degenerate model (all features zero) gives a gate
that still refuses, not a NaN threshold that silently turns a check off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_xray.gate import MIN_STD_LAYOUT, STAT_NAMES, Gate, correlation, layout, pool_map
from edge_xray.preprocess import ImageError, load_image, prepare
from edge_xray.train.augment import random_edge_enhance
from edge_xray.train.data import scan_folder
from edge_xray.train.rundir import RunDir, file_key

COMPONENTS = 16
FIT_IMAGES = 1500
REFUSAL_QUANTILE = 0.995
DISTANCE_MARGIN = 2.0  # the distance threshold is this many times the REFUSAL_QUANTILE of real scans
TEMPLATE_MARGIN = 0.06  # the layout threshold sits this far below the lowest real scan seen
SHAPE_QUANTILE = 0.999
SHAPE_MARGIN = 1.5  # the shape-score threshold is this many times its SHAPE_QUANTILE on training scans
STAT_BOUND_MARGIN = 3.0  # standard deviations beyond the most extreme training scan, per statistic
ENHANCED_EVERY = 3  # every third fit image is also added edge-enhanced to the shape score's fit
VARIANCE_FLOOR = 1e-4  # relative to the mean variance per feature
MIN_VARIANCE = 1e-8
COVARIANCE_RIDGE = 1e-4  # added to the statistics' correlation matrix before it is inverted
MIN_SCALE = 1e-4  # floor of the feature-map spread per channel and region
MIN_STAT_SCALE = 1e-3  # floor of a statistic's standard deviation (they are logs, ratios, correlations)


def run_scans(model, paths, enhance: np.random.Generator | None = None):
    """(prepared image, logits, feature map) of each readable scan in PATHS, through MODEL (an
    edge_xray.runtime.Model); unreadable files are passed over. ENHANCE: each scan is edge-enhanced
    (random_edge_enhance, drawing from this generator) before it is prepared."""
    for p in paths:
        try:
            im = load_image(p, model.size)
        except ImageError:
            continue
        x = prepare(random_edge_enhance(im, enhance) if enhance is not None else im, model.size)
        logits, f = model.run(x, features=True)
        yield x, logits, np.asarray(f, np.float32)


def features_of(model, paths, enhance: np.random.Generator | None = None):
    """(prepared images, feature maps) of the readable PATHS through MODEL (ENHANCE: as run_scans)."""
    xs, fs = [], []
    for x, _, f in run_scans(model, paths, enhance):
        xs.append(x)
        fs.append(f)
    return xs, fs


def _finite(v, name: str):
    a = np.asarray(v, np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"gate fit: {name} is not finite")
    return v


def fit_from_features(train_x, train_f, val_x, val_f, enhanced_x=(), enhanced_f=()) -> dict:
    """Gate parameters from prepared images and feature maps of training and validation scans (and
    of edge-enhanced copies of training scans, for the shape score only)."""
    f = np.stack([m.mean(axis=(0, 1)) for m in train_f]).astype(np.float64)
    lay = np.stack([layout(x) for x in train_x]).astype(np.float64)
    template = lay.mean(0)
    mean = f.mean(0)
    _, s, vt = np.linalg.svd(f - mean, full_matrices=False)
    k = max(1, min(COMPONENTS, len(s) - 1))
    var = s**2 / max(1, len(f) - 1)
    floor = max(MIN_VARIANCE, VARIANCE_FLOOR * float(var.sum()) / f.shape[1])
    resid = float(var[k:].sum() / max(1, f.shape[1] - k))
    params = {"method": "Mahalanobis in the top principal components of pooled features, plus residual; "
                        "layout correlation; shape score of image and feature-map statistics",
              "mean": mean.round(5).tolist(), "components": vt[:k].round(5).tolist(),
              "variances": np.maximum(var[:k], floor).round(8).tolist(),
              "residual_variance": max(resid, floor), "threshold": 0.0}
    g = Gate(params)
    dv = np.array([g.distance(m.mean(axis=(0, 1))) for m in val_f])
    params["threshold"] = round(DISTANCE_MARGIN * float(np.quantile(dv, REFUSAL_QUANTILE)), 4)
    lv = [layout(x) for x in val_x]
    cors = np.array([correlation(v, template) for v in list(lay) + lv])
    params["template"] = template.round(2).tolist()
    params["template_min_correlation"] = round(float(cors.min()) - TEMPLATE_MARGIN, 3)

    params["shape"] = fit_shape(params, list(train_x) + list(enhanced_x), list(train_f) + list(enhanced_f))
    for key in ("mean", "components", "variances", "residual_variance", "threshold", "template",
                "template_min_correlation"):
        _finite(params[key], key)

    g = Gate(params)
    refused = [g.check_features(x, m) is not None for x, m in zip(val_x, val_f)]
    params["fit"] = {"train_images": len(f), "enhanced_images": len(enhanced_x), "val_images": len(dv),
                     "refusal_quantile": REFUSAL_QUANTILE,
                     "distance_margin": DISTANCE_MARGIN, "template_margin": TEMPLATE_MARGIN,
                     "shape_quantile": SHAPE_QUANTILE, "shape_margin": SHAPE_MARGIN,
                     "stat_bound_margin": STAT_BOUND_MARGIN, "enhanced_every": ENHANCED_EVERY,
                     "lowest_real_correlation": round(float(cors.min()), 3),
                     "val_false_refusal_rate": round(float(np.mean(refused)), 4)}
    return params


def fit_shape(params: dict, xs, fs) -> dict:
    """The shape score's parameters (the gate's `shape`) from prepared images XS and their feature maps
    FS, given the rest of the gate PARAMS (its distance and template)."""
    # the shape score: the moments it needs are stored first (rounded as in the card), and the
    # statistics computed from the stored values, so that fit and check agree exactly
    lay = np.stack([layout(x) for x in xs]).astype(np.float64)
    template_std = np.maximum(lay.std(0), MIN_STD_LAYOUT)
    pm = np.stack([pool_map(m) for m in fs]).astype(np.float64)
    map_std = np.maximum(pm.std(0), max(MIN_SCALE, np.sqrt(VARIANCE_FLOOR) * float(pm.std(0).mean())))
    shape = {"template_std": template_std.round(2).tolist(), "map_mean": pm.mean(0).round(5).tolist(),
             "map_std": map_std.round(6).tolist(), "mean": [0.0] * len(STAT_NAMES), "scale": [1.0] * len(STAT_NAMES),
             "inverse_covariance": np.eye(len(STAT_NAMES)).tolist(), "threshold": 0.0,
             "max_z": [1.0] * len(STAT_NAMES)}
    g = Gate(dict(params, shape=shape))
    st = np.stack([g.statistics(x, m) for x, m in zip(xs, fs)])
    s_mean = st.mean(0).round(5)
    s_scale = np.maximum(st.std(0), MIN_STAT_SCALE).round(6)
    z = (st - s_mean) / s_scale
    # statistics that do not vary on these scans (a degenerate model) stay out of the joint
    # score; their per-statistic bound still holds them near the training value
    varies = st.std(0) > MIN_STAT_SCALE
    inv = np.zeros((z.shape[1], z.shape[1]))
    if varies.any():
        zv = z[:, varies]
        cov = np.atleast_2d(np.cov(zv.T)) + COVARIANCE_RIDGE * np.eye(zv.shape[1])
        inv[np.ix_(varies, varies)] = np.linalg.pinv(cov)
    inv = inv.round(5)
    score = np.einsum("ij,jk,ik->i", z, inv, z) / z.shape[1]
    shape.update({"mean": s_mean.tolist(), "scale": s_scale.tolist(), "inverse_covariance": inv.tolist(),
                  "threshold": round(SHAPE_MARGIN * float(np.quantile(score, SHAPE_QUANTILE)), 4),
                  "max_z": (np.abs(z).max(0) + STAT_BOUND_MARGIN).round(3).tolist()})
    for key, value in shape.items():
        _finite(value, f"shape.{key}")
    return shape


def fit_images(data_dir, val_names: set, seed: int = 0) -> tuple[list, list]:
    """(training paths to fit on: up to FIT_IMAGES, drawn with SEED; validation paths) of DATA_DIR, the
    validation scans being those whose file keys are in VAL_NAMES."""
    items = scan_folder(data_dir)
    val = [i.path for i in items if file_key(i.path) in val_names]
    train = [i.path for i in items if file_key(i.path) not in val_names]
    rng = np.random.default_rng(seed)
    train = [train[i] for i in sorted(rng.choice(len(train), min(FIT_IMAGES, len(train)), replace=False))]
    return train, val


def enhanced_features(model, train, seed: int = 0):
    """(prepared images, feature maps) of every ENHANCED_EVERY-th of the paths TRAIN, edge-enhanced."""
    return features_of(model, train[::ENHANCED_EVERY], enhance=np.random.default_rng(seed + 1))


def fit_gate(model, run: Path, data_dir, seed: int = 0) -> dict:
    """Gate parameters for MODEL (an edge_xray.runtime.Model of the converted network)."""
    train, val = fit_images(data_dir, RunDir(run).val_files(), seed)
    tx, tf = features_of(model, train)
    vx, vf = features_of(model, val)
    ex, ef = enhanced_features(model, train, seed)
    return fit_from_features(tx, tf, vx, vf, ex, ef)


def refit_shape(model_path, data_dir, split_seed: int, val_fraction: float = 0.15, seed: int = 0) -> dict:
    """Refit the shape score of the converted screening model MODEL_PATH (module docstring); the card
    is rewritten in place. Returns the new card."""
    from edge_xray.card import ModelCard, read_model
    from edge_xray.runtime import Model
    from edge_xray.train.data import SOURCE_SIZE, load_images, patient_split

    flatbuffer, card = read_model(model_path)
    if not card.get("gate") or "template" not in card["gate"]:
        raise ValueError(f"{model_path}: its card has no gate with a layout template to refit")
    items, images, _ = load_images(scan_folder(data_dir), SOURCE_SIZE)
    _, va, _ = patient_split(items, images, val_fraction, split_seed)
    train, val = fit_images(data_dir, {file_key(items[i].path) for i in va}, seed)
    model = Model(flatbuffer=flatbuffer, card=card)
    tx, tf = features_of(model, train)
    ex, ef = enhanced_features(model, train, seed)
    gate = {k: v for k, v in card["gate"].items() if k != "shape"}
    gate["shape"] = fit_shape(gate, list(tx) + list(ex), list(tf) + list(ef))
    vx, vf = features_of(model, val)
    g = Gate(gate)
    gate["fit"] = dict(gate.get("fit", {}), enhanced_images=len(ex), enhanced_every=ENHANCED_EVERY,
                       val_false_refusal_rate=round(float(np.mean([g.check_features(x, f) is not None
                                                                   for x, f in zip(vx, vf)])), 4),
                       shape_refit=f"python -m edge_xray.calibration.gate MODEL DATA_DIR --split-seed {split_seed}: "
                                   f"{len(tx)} training scans and {len(ex)} edge-enhanced copies")
    card = {k: v for k, v in card.items() if k not in ("sha256", "size_bytes")}
    card["gate"] = gate
    return ModelCard.write(Path(model_path), flatbuffer, card).to_dict()


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description="Refit the gate's shape score of a converted screening model, in place.")
    ap.add_argument("model", help="the .tflite (its card is rewritten, embedded and beside)")
    ap.add_argument("data_dir", help="the Kermany-layout training folder the model was trained on")
    ap.add_argument("--split-seed", type=int, required=True, help="the training run's split seed (the card's recipe)")
    ap.add_argument("--val-fraction", type=float, default=0.15)
    args = ap.parse_args(argv)
    card = refit_shape(args.model, args.data_dir, args.split_seed, args.val_fraction)
    fit = card["gate"]["fit"]
    print(f"{card['file']}: shape score refitted ({fit['shape_refit']}); validation refused by the gate's "
          f"feature checks: {fit['val_false_refusal_rate']:.4f}; sha256 {card['sha256']}")


if __name__ == "__main__":
    main()
