"""The out-of-distribution gate: its statistics, the fit's floors, the old card, the two-call split."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from PIL import Image

from conftest import need_data, xray_like
from edge_xray.gate import (STAT_NAMES, TEMPLATE_SIDE, Gate, correlation, fine_detail, layout,
                            mediastinum_contrast, pool_map)
from edge_xray.preprocess import prepare

SIZE = 128


def _x(a) -> np.ndarray:
    return prepare(Image.fromarray(np.asarray(a, np.uint8)), SIZE)


@functools.lru_cache(maxsize=None)
def _chest_set(n, seed=0):
    """Prepared chest-like images with varied geometry and noise."""
    rng = np.random.default_rng(seed)
    return [_x(xray_like((int(rng.integers(130, 180)), int(rng.integers(130, 180))), seed=int(s)))
            for s in rng.integers(0, 10**6, n)]


def test_fine_detail_separates_noise_text_and_smooth_images():
    smooth = _x(xray_like())
    noise = _x(np.random.default_rng(0).integers(0, 256, (300, 300)))
    ratio_s, edges_s = fine_detail(smooth)
    ratio_n, edges_n = fine_detail(noise)
    assert ratio_n > 0.8 > 0.5 > ratio_s  # white noise: neighbours differ as much as far pixels
    assert edges_n > 3 * edges_s


def test_mediastinum_contrast_sign():
    lay = np.full((TEMPLATE_SIDE, TEMPLATE_SIDE), 100.0)
    lay[:, 7:9] = 200  # a bright central column
    lay[:, 3:6] = lay[:, 10:13] = 50  # two dark lung bands
    assert mediastinum_contrast(lay.ravel()) == pytest.approx(150.0)
    assert mediastinum_contrast((300 - lay).ravel()) == pytest.approx(-150.0)
    assert mediastinum_contrast(layout(_x(xray_like()))) > 20


def test_pool_map_regions_and_tiny_maps():
    f = np.zeros((8, 8, 3), np.float32)
    f[:4, :4, 0] = 1.0  # top-left region only
    p = pool_map(f).reshape(2, 2, 3)
    assert p[0, 0, 0] == 1.0 and p[1, 1, 0] == 0.0 and p[..., 1:].sum() == 0
    assert pool_map(np.ones((1, 1, 5), np.float32)).shape == (5,)  # a 1x1 map: one region


@functools.lru_cache(maxsize=None)
def _degenerate_fit(n_train=30, n_val=10, channels=6, hw=4):
    from edge_xray.calibration.gate import fit_from_features

    tx, vx = _chest_set(n_train, 1), _chest_set(n_val, 2)
    zeros = np.zeros((hw, hw, channels), np.float32)
    return fit_from_features(tx, [zeros] * n_train, vx, [zeros] * n_val), tx


def test_fit_floors_variances_on_a_degenerate_model():
    params, tx = _degenerate_fit()
    params = json.loads(json.dumps(params))
    # every number is finite, so the card is valid JSON and no check is silently off (NaN > x is False)
    text = json.dumps(params, allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text
    assert min(params["variances"]) > 0 and params["residual_variance"] > 0
    assert math.isfinite(params["threshold"]) and math.isfinite(params["shape"]["threshold"])
    assert all(v > 0 for v in params["shape"]["scale"])
    gate = Gate(params)
    zeros = np.zeros((4, 4, 6), np.float32)
    assert all(gate.check_features(x, zeros) is None for x in tx[:10])  # the scans it was fitted on pass
    # the image statistics still work with dead features: noise and a document are refused
    noise = _x(np.random.default_rng(3).integers(0, 256, (300, 300)))
    assert gate.check_features(noise, zeros)
    # a feature map off the (zero) training features is refused by the distance, not passed as NaN
    assert gate.check_features(tx[0], np.full((4, 4, 6), 5.0, np.float32))


def test_statistics_follow_the_names_and_are_finite():
    params, vx = _degenerate_fit()
    s = Gate(params).statistics(vx[0], np.zeros((4, 4, 6), np.float32))
    assert s.shape == (len(STAT_NAMES),) and np.all(np.isfinite(s))
    assert s[STAT_NAMES.index("layout_correlation")] == pytest.approx(correlation(layout(vx[0]), np.asarray(params["template"])), abs=1e-3)


def test_check_image_needs_no_model_and_says_what_is_wrong():
    gate = Gate(None)
    grey = Image.fromarray(xray_like())
    assert gate.check_image(grey, 0.0) is None
    assert "colour" in gate.check_image(grey, 40.0)
    assert "blank" in gate.check_image(Image.new("L", (300, 300), 128), 0.0)
    assert "long and narrow" in gate.check_image(Image.new("L", (1000, 200), 128), 0.0)


def _old_check(params, x, features):
    """The first gate's decision, written out independently: layout correlation, then the distance."""
    t = np.asarray(params["template"], np.float32)
    if correlation(layout(x), t) < params["template_min_correlation"]:
        return True
    d = features.mean(axis=(0, 1)) - np.asarray(params["mean"], np.float32)
    comp = np.asarray(params["components"], np.float32)
    z = comp @ d
    resid = max(float(d @ d - z @ z), 0.0)
    k = len(params["variances"])
    dist = (np.sum(z * z / np.asarray(params["variances"])) + resid / params["residual_variance"]) / (k + 1)
    return dist > params["threshold"]


def test_an_old_card_gates_as_before():
    """A card from the first fit (no `shape` section) loads and takes the same decisions as before."""
    from edge_xray.runtime import DEFAULT_MODEL, Model

    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled model")
    m = Model()
    params = dict(m.card["gate"])
    params.pop("shape", None)  # as the first fit wrote it
    gate = Gate(params)
    assert gate.shape is None
    rng = np.random.default_rng(0)
    images = _chest_set(4, 5) + [_x(rng.integers(0, 256, (200, 200))), _x(np.tile(np.arange(200), (200, 1)))]
    for x in images:
        _, f = m.run(x, features=True)
        assert (gate.check_features(x, f) is not None) == _old_check(params, x, f)


@pytest.mark.slow
def test_a_gate_fitted_here_refuses_the_development_negatives_and_keeps_real_scans(data_dir):
    """Fit on real training scans through the bundled model (with edge-enhanced copies, as convert
    fits), then: every development non-X-ray is refused, and at most 1 % of other real scans, sharpened
    or not."""
    from edge_xray.calibration.gate import enhanced_features, features_of, fit_from_features
    from edge_xray.calibration.negatives import negatives
    from edge_xray.preprocess import load_image
    from edge_xray.train.augment import edge_enhance
    from edge_xray.runtime import DEFAULT_MODEL, Model
    from edge_xray.train.data import scan_folder

    need_data()
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled model")
    m = Model()
    items = scan_folder(data_dir)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(items))
    paths = [items[i].path for i in order]
    tx, tf = features_of(m, paths[:1200])
    vx, vf = features_of(m, paths[1200:1500])
    ex, ef = enhanced_features(m, paths[:1200])
    gate = Gate(fit_from_features(tx, tf, vx, vf, ex, ef))
    ox, of = features_of(m, paths[1500:1800])
    false = sum(gate.check_features(x, f) is not None for x, f in zip(ox, of))
    assert false <= 3, f"{false} of 300 real scans refused"
    # scans a unit sharpened harder than any copy in the fit (180 %): kept, where a gate fitted on the
    # scans as they are refuses many of them as "too much fine detail"
    sharp = [prepare(edge_enhance(load_image(p, m.size), 1.5, 180), m.size) for p in paths[1500:1600]]
    sharp_f = [m.run(x, features=True)[1] for x in sharp]
    plain = Gate(fit_from_features(tx, tf, vx, vf))
    kept_out = sum(gate.check_features(x, f) is not None for x, f in zip(sharp, sharp_f))
    plain_out = sum(plain.check_features(x, f) is not None for x, f in zip(sharp, sharp_f))
    assert kept_out <= 3 and plain_out >= kept_out + 5, (kept_out, plain_out)
    escaped = []
    for name, _, im in negatives("fit"):
        x = prepare(im, m.size)
        _, f = m.run(x, features=True)
        if not (gate.check_image(im, 0.0) or gate.check_features(x, f)):
            escaped.append(name)
    assert not escaped, f"accepted: {escaped}"


def test_fit_on_constant_quantised_features_keeps_scans_of_the_same_kind():
    """A tiny int8 model whose feature map is the same int8 level everywhere on every scan: the fit
    must not turn the rounding of the stored numbers into refusals of scans like those it was
    fitted on (a first version refused 100 % of them)."""
    from edge_xray.calibration.gate import fit_from_features

    level = np.full((2, 2, 16), 0.0234375, np.float32)  # 6 / 256: not a round decimal
    tx, vx, ox = _chest_set(30, 1), _chest_set(10, 2), _chest_set(20, 4)
    gate = Gate(json.loads(json.dumps(fit_from_features(tx, [level] * 30, vx, [level] * 10))))
    assert all(gate.check_features(x, level) is None for x in tx)
    refused = [gate.check_features(x, level) for x in ox]  # new scans: only sampling noise of a 30-scan fit
    assert sum(r is not None for r in refused) <= 5, refused


@pytest.mark.slow
def test_refit_shape_rewrites_only_the_shape_score_of_a_model_s_card(data_dir, tmp_path):
    import shutil

    from edge_xray.calibration.gate import main
    from edge_xray.card import read_model
    from edge_xray.runtime import DEFAULT_MODEL

    need_data()
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled model")
    for f in (DEFAULT_MODEL, DEFAULT_MODEL.with_suffix(".json")):
        shutil.copy(f, tmp_path / f.name)
    copy = tmp_path / DEFAULT_MODEL.name
    before_fb, before = read_model(DEFAULT_MODEL)
    main([str(copy), str(data_dir), "--split-seed", "1"])
    after_fb, after = read_model(copy)  # embedded and side card agree, or read_model refuses
    assert after_fb == before_fb
    assert {k: v for k, v in after.items() if k not in ("gate", "sha256", "size_bytes")} == \
        {k: v for k, v in before.items() if k not in ("gate", "sha256", "size_bytes")}
    kept = [k for k in before["gate"] if k not in ("shape", "fit")]
    assert kept and all(after["gate"][k] == before["gate"][k] for k in kept)  # distance and layout as they were
    fit = after["gate"]["fit"]
    assert fit["enhanced_images"] > 0 and "--split-seed 1" in fit["shape_refit"] and fit["val_false_refusal_rate"] <= 0.01
    assert sorted(after["gate"]["shape"]) == sorted(before["gate"]["shape"])
