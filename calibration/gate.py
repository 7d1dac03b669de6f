"""Fit the out-of-distribution gate of a converted model (see edge_xray.gate).

Pooled features of the model itself (its `features` output averaged over space) are gathered on
training images of the run; the top principal components, their variances and the residual
variance define a Mahalanobis-style distance. The refusal threshold is DISTANCE_MARGIN times the
REFUSAL_QUANTILE quantile of the distances on the run's patient-level validation images. The margin
is there for real scans from other machines, whose features drift (validation scans with their
acquisition swapped, `train.augment.shift_proxy`, are the proxy for them). The layout threshold sits
TEMPLATE_MARGIN below the lowest correlation of any real scan seen in the fit.

The shape score (edge_xray.gate.STATS): its statistics are standardised on the same training images;
the joint score is their Mahalanobis distance per statistic, refused above SHAPE_MARGIN times its
SHAPE_QUANTILE quantile on the training images; each statistic alone is refused beyond
STAT_BOUND_MARGIN standard deviations past the most extreme training image or edge-enhanced copy of
one (every ENHANCED_EVERY-th fit image is also measured sharpened, train/augment.random_edge_enhance:
X-ray units sharpen their images, some strongly, and a child's scan so sharpened read as "too much fine
detail" to bounds set on one hospital's scans alone). The copies widen the bounds only: fitting the
whole shape score on them too kept more sharpened scans but let through many more adult films from
units the intended-use check never learnt from (docs/evidence.md, round 7). These margins were chosen
on real scans (validation, full-resolution, shift proxy) and the development part of the non-X-ray set
in calibration/negatives.py (the held-out part only once: see benchmarks/ood.py).

`python -m edge_xray.calibration.gate MODEL DATA_DIR [--version V]` widens the bounds of a converted screening
model whose run folder is not at hand (the bundled one) the same way: its training scans are DATA_DIR
less the validation scans of the recipe in its card (train/data.recipe_split; the card's file-list hash
must match DATA_DIR); the rest of the card is kept, and rewritten in place (embedded and beside), so
the file's sha256 changes. A builder's model converted without a run is fitted on its images as they are.

Every number written is finite: variances are floored (VARIANCE_FLOOR, relative to the features'
total variance, and an absolute MIN_VARIANCE), so a degenerate model (all features zero) gives a gate
that still refuses, not a NaN threshold that silently turns a check off.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edge_xray.errors import EdgeXrayError, InputError, ModelError
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
ENHANCED_EVERY = 3  # every third fit image is also measured edge-enhanced, to widen the per-statistic bounds
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

    params["shape"] = fit_shape(params, train_x, train_f, enhanced_x, enhanced_f)
    for key in ("mean", "components", "variances", "residual_variance", "threshold", "template",
                "template_min_correlation"):
        _finite(params[key], key)

    g = Gate(params)
    refused = [g.check_features(x, m) is not None for x, m in zip(val_x, val_f)]
    params["fit"] = {"train_images": len(f), "val_images": len(dv), "refusal_quantile": REFUSAL_QUANTILE,
                     "distance_margin": DISTANCE_MARGIN, "template_margin": TEMPLATE_MARGIN,
                     "shape_quantile": SHAPE_QUANTILE, "shape_margin": SHAPE_MARGIN,
                     "stat_bound_margin": STAT_BOUND_MARGIN,
                     **({"bounds_enhanced_images": len(enhanced_x), "enhanced_every": ENHANCED_EVERY} if len(enhanced_x) else {}),
                     "lowest_real_correlation": round(float(cors.min()), 3),
                     "val_false_refusal_rate": round(float(np.mean(refused)), 4)}
    return params


def fit_shape(params: dict, xs, fs, enhanced_x=(), enhanced_f=()) -> dict:
    """The shape score's parameters (the gate's `shape`) from prepared images XS and their feature maps
    FS, given the rest of the gate PARAMS (its distance and template); the per-statistic bounds also
    cover the edge-enhanced copies ENHANCED_X, ENHANCED_F."""
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
    if len(enhanced_x):
        shape["max_z"] = widened_bounds(Gate(dict(params, shape=shape)), enhanced_x, enhanced_f)
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


def widened_bounds(gate: Gate, xs, fs) -> list:
    """GATE's per-statistic bounds (`shape.max_z`), widened to hold the images XS (feature maps FS) with
    STAT_BOUND_MARGIN to spare."""
    sh = gate.shape
    z = (np.stack([gate.statistics(x, f) for x, f in zip(xs, fs)]) - sh["mean"]) / sh["scale"]
    return np.maximum(sh["max_z"], np.abs(z).max(0) + STAT_BOUND_MARGIN).round(3).tolist()


def refit_bounds(model_path, data_dir, seed: int = 0, version: str | None = None) -> dict:
    """Widen the per-statistic bounds of the converted screening model MODEL_PATH with edge-enhanced
    training scans (module docstring); its card is rewritten in place, with VERSION if given (the gate
    is part of what the model does). Returns the new card."""
    from edge_xray.card import ModelCard, read_model
    from edge_xray.runtime import Model
    from edge_xray.train.data import SOURCE_SIZE, file_list_hash, recipe_split

    flatbuffer, card = read_model(model_path)
    if not (card.get("gate") or {}).get("shape"):
        raise ModelError(f"{Path(model_path).name}: its card has no gate shape score to widen")
    training = card.get("training") or {}
    if not isinstance(training.get("recipe"), dict) or "file_list_sha256" not in (training.get("data") or {}):
        raise ModelError(f"{Path(model_path).name}: its card has no training recipe and file list "
                         "(a model converted without a run): fit its gate with convert --gate-data")
    recipe, data = training["recipe"], training["data"]
    items, _, _, _, va = recipe_split(data_dir, recipe, side=min(SOURCE_SIZE, 2 * recipe["image_size"]))
    if file_list_hash(items) != data["file_list_sha256"]:
        raise InputError(f"{data_dir}: not the file list the model was trained on (its card's file_list_sha256)")
    train, _ = fit_images(data_dir, {file_key(items[i].path) for i in va}, seed)
    model = Model(flatbuffer=flatbuffer, card=card)
    ex, ef = enhanced_features(model, train, seed)
    gate = dict(card["gate"])
    gate["shape"] = dict(gate["shape"], max_z=widened_bounds(Gate(gate), ex, ef))
    gate["fit"] = dict(gate.get("fit", {}), bounds_enhanced_images=len(ex), enhanced_every=ENHANCED_EVERY,
                       bounds_widened="python -m edge_xray.calibration.gate MODEL DATA_DIR")
    card = {k: v for k, v in card.items() if k not in ("sha256", "size_bytes")}
    card["gate"] = gate
    if version:
        card["version"] = version
    return ModelCard.write(Path(model_path), flatbuffer, card).to_dict()


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description="Widen the gate's per-statistic bounds of a converted screening model "
                                             "with edge-enhanced training scans, in place.")
    ap.add_argument("model", help="the .tflite (its card is rewritten, embedded and beside)")
    ap.add_argument("data_dir", help="the Kermany-layout training folder the model was trained on")
    ap.add_argument("--version", default=None, help="the model's new version in its card (default: kept)")
    args = ap.parse_args(argv)
    try:
        card = refit_bounds(args.model, args.data_dir, version=args.version)
    except EdgeXrayError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    print(f"{card['file']} {card['version']}: bounds widened with {card['gate']['fit']['bounds_enhanced_images']} edge-enhanced "
          f"training scans; sha256 {card['sha256']}")


if __name__ == "__main__":
    main()
