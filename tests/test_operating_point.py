"""Operating points (edge_xray.operating_point): the training rule, the site rule, the rank formula they
share, and both interval methods, on synthetic and hand-computed cases."""

import math

import numpy as np
import pytest

from edge_xray import metrics
from edge_xray import operating_point as op


def _scores(n_pos, n_neg, pos_mean, neg_mean, seed):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    logit = np.r_[rng.normal(pos_mean, 1.0, n_pos), rng.normal(neg_mean, 1.0, n_neg)]
    return y, 1 / (1 + np.exp(-logit))


def test_wilson_lower_bound_known_value():
    # 95 of 100 at one-sided 95 %: (p + z^2/2n - z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.645
    assert op.wilson_lower_bound(95, 100, 0.95) == pytest.approx(0.9008, abs=5e-4)
    assert op.wilson_lower_bound(0, 0) == 0.0
    # the bound tightens with more cases
    assert op.wilson_lower_bound(950, 1000) > op.wilson_lower_bound(95, 100)


def test_validation_only_keeps_target_with_margin_and_no_cap():
    y, p = _scores(600, 200, 4.0, -3.0, 0)
    t, rec = op.choose_operating_point(y, p, target=0.95, confidence=0.95)
    sens = (p[y] >= t).mean()
    hits = int((p[y] >= t).sum())
    assert op.wilson_lower_bound(hits, 600, 0.95) >= 0.95
    assert sens > 0.95  # the margin: above the target itself
    # the next positive score up would break the bound: the threshold is the highest such one
    above = np.sort(p[y])[np.sort(p[y]) > t][0]
    assert op.wilson_lower_bound(int((p[y] >= above).sum()), 600, 0.95) < 0.95
    assert t > 0.5  # no cap: well-separated classes give a threshold above 0.5
    assert t < op.choose_threshold(y, p, 0.95, 1.0)  # lower than the plain 95 % point
    assert rec["binding_set"] == "val" and set(rec["expected"]) == {"val"}


def test_harder_proxy_binds_and_keeps_its_target():
    y, p = _scores(600, 200, 4.0, -3.0, 1)
    rng = np.random.default_rng(2)
    p_proxy = np.where(y, p * rng.uniform(0.5, 1.0, len(p)), np.minimum(1, p * 1.5))  # pneumonia scores fall
    t_val, _ = op.choose_operating_point(y, p, confidence=0.95)
    t, rec = op.choose_operating_point(y, p, y, p_proxy, confidence=0.95)
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
    t_val, _ = op.choose_operating_point(y, p)
    t, rec = op.choose_operating_point(y, p, y, p_proxy)
    assert t == t_val and rec["binding_set"] == "val"


def test_ties_at_the_threshold_count_as_found():
    y = np.r_[np.ones(200, bool), np.zeros(50, bool)]
    p = np.r_[np.full(200, 0.8), np.full(50, 0.1)]
    t, rec = op.choose_operating_point(y, p)
    assert t == 0.8 and rec["expected"]["val"]["sensitivity"] == 1.0


def test_no_pneumonia_is_an_error_and_legacy_rule_unchanged():
    y = np.zeros(10, bool)
    with pytest.raises(ValueError, match="no pneumonia"):
        op.choose_operating_point(y, np.linspace(0, 1, 10))
    y, p = _scores(600, 200, 4.0, -3.0, 4)
    assert op.choose_threshold(y, p) <= op.MAX_THRESHOLD  # the legacy rule keeps its cap


def test_default_is_the_plain_target_on_the_harder_set():
    y, p = _scores(500, 200, 3.5, -3.0, 5)
    p_proxy = np.where(y, p * 0.7, np.minimum(1, p * 1.3))
    t, rec = op.choose_operating_point(y, p, y, p_proxy)  # defaults: 95 %, no sampling bound
    assert op.OPERATING_TARGET == 0.95 and op.OPERATING_CONFIDENCE is None
    assert t == min(op.choose_threshold(y, p, 0.95, 1.0), op.choose_threshold(y, p_proxy, 0.95, 1.0))
    assert (p_proxy[y] >= t).mean() >= 0.95 and (p[y] >= t).mean() >= 0.95
    assert rec["confidence"] is None and "Wilson" not in rec["rule"]
    # a sampling bound on top can only lower the threshold
    assert op.choose_operating_point(y, p, y, p_proxy, confidence=0.95)[0] <= t


def test_legacy_rule_reaches_the_sensitivity_and_is_capped():
    y = np.array([1] * 10 + [0] * 5)
    p = np.array([0.05, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99] + [0.1] * 5)
    t = op.choose_threshold(y, p, target=0.9, cap=1.0)
    assert t == 0.3 and (p[y == 1] >= t).mean() >= 0.9
    assert op.choose_threshold(y, p, target=0.9, cap=0.25) == 0.25


@pytest.mark.parametrize("n, target, k", [(20, 0.95, 1), (19, 0.95, 0), (100, 0.9, 10), (10, 0.9, 1), (1, 0.5, 0)])
def test_allowed_below_is_the_empirical_rank(n, target, k):
    # (1 - 0.95) * 20 and (1 - 0.9) * 10 are a hair under 1 in floating point: the rule must still allow 1
    assert op.allowed_below(n, target) == k
    assert (n - k) / n >= target and (k + 1 > n or (n - k - 1) / n < target)


@pytest.mark.parametrize("n", [1, 5, 19, 20, 39, 40, 41, 80, 200])
@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 0.99])
def test_site_rank_is_the_largest_rank_that_keeps_the_target_on_new_scans(n, target):
    j = op.site_rank(n, target)
    assert 1 <= j <= n
    assert op.expected_sensitivity(n, target) == (n - j + 1) / (n + 1)
    if j > 1 or (n - j + 1) / (n + 1) >= target:  # j = 1 is the floor when no rank reaches the target
        assert (n - j + 1) / (n + 1) >= target - 1e-12
    assert (n - j) / (n + 1) < target  # one rank higher would miss it


def test_site_threshold_is_the_site_rank_and_needs_pneumonia_scores():
    from edge_xray.errors import InputError

    p = np.linspace(0.01, 0.99, 40)[::-1]  # unsorted on purpose
    assert op.site_threshold(p, 0.95) == pytest.approx(np.sort(p)[op.site_rank(40, 0.95) - 1])
    assert op.site_rank(40, 0.95) == 2  # floor(0.05 * 41) = 2
    with pytest.raises(InputError, match="no pneumonia scans"):
        op.site_threshold([], 0.95)


def test_wilson_lower_bound_against_its_formula_and_edges():
    for hits, n, c in ((0, 10, 0.95), (10, 10, 0.95), (37, 40, 0.9), (500, 510, 0.99)):
        z = {0.9: 1.2815515655446004, 0.95: 1.6448536269514722, 0.99: 2.3263478740408408}[c]
        ph = hits / n
        want = (ph + z * z / (2 * n) - z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))) / (1 + z * z / n)
        assert op.wilson_lower_bound(hits, n, c) == pytest.approx(want, abs=1e-12)
        assert 0.0 <= op.wilson_lower_bound(hits, n, c) <= ph
    assert op.wilson_lower_bound(0, 10) == 0.0  # never below 0 (the formula gives -2e-17)


def test_clopper_pearson_hand_computed_and_nested():
    # k = 0: the upper end is 1 - (alpha / 2) ** (1 / n); k = n: the lower end is (alpha / 2) ** (1 / n)
    assert op.clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** 0.1, abs=1e-9))
    assert op.clopper_pearson(10, 10) == (pytest.approx(0.025 ** 0.1, abs=1e-9), 1.0)
    assert op.clopper_pearson(0, 0) == (0.0, 1.0)
    lo95, hi95 = op.clopper_pearson(38, 40, 0.95)
    lo80, hi80 = op.clopper_pearson(38, 40, 0.80)
    assert lo95 < lo80 < 38 / 40 < hi80 < hi95
    # exact: the binomial tails at the ends are alpha / 2
    assert op._binom_sf(38, 40, lo95) == pytest.approx(0.025, abs=1e-9)
    assert 1 - op._binom_sf(39, 40, hi95) == pytest.approx(0.025, abs=1e-9)


def test_site_sensitivity_interval_narrows_with_the_sample():
    widths = [np.subtract(*op.site_sensitivity_interval(n)[::-1]) for n in (20, 40, 80, 160)]
    assert all(a > b for a, b in zip(widths, widths[1:]))
    n = 40
    assert op.site_sensitivity_interval(n) == op.clopper_pearson(n - op.site_rank(n) + 1, n)


def test_site_module_uses_this_module():
    """One owner: the site module offers the operating-point functions under its old names, not copies."""
    from edge_xray import site

    for name in ("clopper_pearson", "site_threshold", "expected_sensitivity"):
        assert getattr(site, name) is getattr(op, name)
    assert site.DEFAULT_SENSITIVITY == op.SITE_TARGET and site.CONFIDENCE == op.INTERVAL_CONFIDENCE


def test_no_rank_formula_outside_this_module():
    """The rank at a target sensitivity, (1 - target) * n, is written once (issue 23)."""
    import re
    from pathlib import Path

    root = Path(op.__file__).resolve().parent
    pattern = re.compile(r"\(1(\.0)? - target\) \*")
    for path in sorted(root.glob("*.py")):
        if path.name != "operating_point.py":
            assert not pattern.search(path.read_text()), f"{path.name} computes a rank at a target itself"
