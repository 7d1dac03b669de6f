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
    """Fit on real training scans through the bundled model (bounds widened with edge-enhanced copies,
    as convert fits), then: every development non-X-ray is refused, and at most 1 % of other real scans;
    of 100 scans sharpened as the copies were, at most 5 (3 when written), where bounds without the copies
    refuse more than twice as many (14)."""
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
    # scans a unit sharpened (2 px at 120 %, within the copies; 1.5 px at 180 %, beyond them): fewer
    # refused than by bounds set on the scans as they are, which read them as "too much fine detail"
    plain = Gate(fit_from_features(tx, tf, vx, vf))
    refused = {}
    for radius, percent in ((2, 120), (1.5, 180)):
        sharp = [prepare(edge_enhance(load_image(p, m.size), radius, percent), m.size) for p in paths[1500:1600]]
        sharp_f = [m.run(x, features=True)[1] for x in sharp]
        refused[percent] = [sum(g.check_features(x, f) is not None for x, f in zip(sharp, sharp_f)) for g in (gate, plain)]
    assert refused[120][0] <= 5 and refused[120][1] >= 2 * refused[120][0] + 5 and refused[180][0] < refused[180][1], refused
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
def test_refit_bounds_widens_the_bounds_the_sharpened_scans_need_and_keeps_the_rest(data_dir, tmp_path):
    """The bundled card's fine-detail bound comes from the edge-enhanced copies (`refit_bounds`): set
    back to a narrow one on a copy, the command widens it to the bundled value again and changes
    nothing else; a folder that is not the model's training data is refused."""
    import shutil

    from edge_xray.calibration.gate import main, refit_bounds
    from edge_xray.card import ModelCard, read_model
    from edge_xray.runtime import DEFAULT_MODEL

    need_data()
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled model")
    flatbuffer, bundled = read_model(DEFAULT_MODEL)
    assert bundled["gate"]["fit"]["bounds_enhanced_images"] > 0
    k = STAT_NAMES.index("fine_detail")
    narrowed = json.loads(json.dumps({key: v for key, v in bundled.items() if key not in ("sha256", "size_bytes")}))
    narrowed["gate"]["shape"]["max_z"][k] = 1.0
    narrowed["version"] = "0.0.9"  # the command sets the version it is given
    copy = tmp_path / DEFAULT_MODEL.name
    ModelCard.write(copy, flatbuffer, narrowed)
    main([str(copy), str(data_dir), "--version", bundled["version"]])
    after_fb, after = read_model(copy)  # embedded and side card agree, or read_model refuses
    assert after_fb == flatbuffer and after["gate"]["shape"]["max_z"] == bundled["gate"]["shape"]["max_z"]
    assert {key: v for key, v in after.items() if key not in ("sha256", "size_bytes")} == \
        {key: v for key, v in bundled.items() if key not in ("sha256", "size_bytes")}

    other = tmp_path / "data"
    for label in ("NORMAL", "PNEUMONIA"):
        (other / label).mkdir(parents=True)
        for f in sorted((data_dir / label).iterdir())[:20]:
            shutil.copy(f, other / label / f.name)
    from edge_xray.errors import InputError

    with pytest.raises(InputError, match="not the file list the model was trained on"):
        refit_bounds(copy, other)
    with pytest.raises(SystemExit) as e:  # on the command line: one line and the input error's exit code
        main([str(copy), str(other)])
    assert e.value.code == InputError.exit_code
