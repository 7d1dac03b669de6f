"""The default operating point (metrics.choose_operating_point) on synthetic scores."""

import numpy as np
import pytest

from edge_xray import metrics


def _scores(n_pos, n_neg, pos_mean, neg_mean, seed):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    logit = np.r_[rng.normal(pos_mean, 1.0, n_pos), rng.normal(neg_mean, 1.0, n_neg)]
    return y, 1 / (1 + np.exp(-logit))


def test_wilson_lower_bound_known_value():
    # 95 of 100 at one-sided 95 %: (p + z^2/2n - z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.645
    assert metrics.sensitivity_lower_bound(95, 100, 0.95) == pytest.approx(0.9008, abs=5e-4)
    assert metrics.sensitivity_lower_bound(0, 0) == 0.0
    # the bound tightens with more cases
    assert metrics.sensitivity_lower_bound(950, 1000) > metrics.sensitivity_lower_bound(95, 100)


def test_validation_only_keeps_target_with_margin_and_no_cap():
    y, p = _scores(600, 200, 4.0, -3.0, 0)
    t, rec = metrics.choose_operating_point(y, p, target=0.95, confidence=0.95)
    sens = (p[y] >= t).mean()
    hits = int((p[y] >= t).sum())
    assert metrics.sensitivity_lower_bound(hits, 600, 0.95) >= 0.95
    assert sens > 0.95  # the margin: above the target itself
    # the next positive score up would break the bound: the threshold is the highest such one
    above = np.sort(p[y])[np.sort(p[y]) > t][0]
    assert metrics.sensitivity_lower_bound(int((p[y] >= above).sum()), 600, 0.95) < 0.95
    assert t > 0.5  # no cap: well-separated classes give a threshold above 0.5
    assert t < metrics.choose_threshold(y, p, 0.95, 1.0)  # lower than the plain 95 % point
    assert rec["binding_set"] == "val" and set(rec["expected"]) == {"val"}


def test_harder_proxy_binds_and_keeps_its_target():
    y, p = _scores(600, 200, 4.0, -3.0, 1)
    rng = np.random.default_rng(2)
    p_proxy = np.where(y, p * rng.uniform(0.5, 1.0, len(p)), np.minimum(1, p * 1.5))  # pneumonia scores fall
    t_val, _ = metrics.choose_operating_point(y, p, confidence=0.95)
    t, rec = metrics.choose_operating_point(y, p, y, p_proxy, confidence=0.95)
    assert rec["binding_set"] == "shift_proxy"
    assert t < t_val and t == pytest.approx(rec["per_set_threshold"]["shift_proxy"], abs=1e-4)
    for name, scores in (("val", p), ("shift_proxy", p_proxy)):
        m = metrics.binary_metrics(y, scores, t)
        assert m["sensitivity"] >= 0.95
        assert rec["expected"][name]["sensitivity"] == pytest.approx(m["sensitivity"], abs=1e-4)
        assert rec["expected"][name]["specificity"] == pytest.approx(m["specificity"], abs=1e-4)
        assert rec["expected"][name]["sensitivity_lower_bound"] >= 0.95
    assert "shift_proxy" in rec["rule"] and "95%" in rec["rule"] and rec["assumption"]
    assert rec["target_sensitivity"] == 0.95 and rec["confidence"] == 0.95


def test_easier_proxy_does_not_raise_the_threshold():
    y, p = _scores(300, 300, 2.0, -2.0, 3)
    p_proxy = np.where(y, np.sqrt(p), p)  # pneumonia scores rise
    t_val, _ = metrics.choose_operating_point(y, p)
    t, rec = metrics.choose_operating_point(y, p, y, p_proxy)
    assert t == t_val and rec["binding_set"] == "val"


def test_ties_at_the_threshold_count_as_found():
    y = np.r_[np.ones(200, bool), np.zeros(50, bool)]
    p = np.r_[np.full(200, 0.8), np.full(50, 0.1)]
    t, rec = metrics.choose_operating_point(y, p)
    assert t == 0.8 and rec["expected"]["val"]["sensitivity"] == 1.0


def test_no_pneumonia_is_an_error_and_legacy_rule_unchanged():
    y = np.zeros(10, bool)
    with pytest.raises(ValueError, match="no pneumonia"):
        metrics.choose_operating_point(y, np.linspace(0, 1, 10))
    y, p = _scores(600, 200, 4.0, -3.0, 4)
    assert metrics.choose_threshold(y, p) <= metrics.MAX_THRESHOLD  # the legacy rule keeps its cap


def test_default_is_the_plain_target_on_the_harder_set():
    y, p = _scores(500, 200, 3.5, -3.0, 5)
    p_proxy = np.where(y, p * 0.7, np.minimum(1, p * 1.3))
    t, rec = metrics.choose_operating_point(y, p, y, p_proxy)  # defaults: 95 %, no sampling bound
    assert metrics.OPERATING_TARGET == 0.95 and metrics.OPERATING_CONFIDENCE is None
    assert t == min(metrics.choose_threshold(y, p, 0.95, 1.0), metrics.choose_threshold(y, p_proxy, 0.95, 1.0))
    assert (p_proxy[y] >= t).mean() >= 0.95 and (p[y] >= t).mean() >= 0.95
    assert rec["confidence"] is None and "Wilson" not in rec["rule"]
    # a sampling bound on top can only lower the threshold
    assert metrics.choose_operating_point(y, p, y, p_proxy, confidence=0.95)[0] <= t
