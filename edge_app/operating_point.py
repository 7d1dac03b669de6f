"""Operating points: choosing a threshold on pneumonia scores, and the intervals that say how sure it is.

The one owner of:

- the rank at a target sensitivity, in its two forms: `allowed_below` (the empirical rule of training:
  with n pneumonia scores sorted, at most floor((1 - target) n) may lie below the threshold) and
  `site_rank` (the predictive rule of a site: the j-th lowest of n scores flags a new pneumonia scan
  of the same site with probability (n - j + 1) / (n + 1), by exchangeability; j is the largest rank
  for which that is at least the target, so the target holds for the site's next scans, not only on
  the sample, which would be optimistic by about 1 / n);
- the training rule (`choose_operating_point`: the harder of the validation split and its shift proxy
  binds) and the legacy rule it replaced (`choose_threshold`);
- the site rule (`site_threshold`, `expected_sensitivity`, `site_sensitivity_interval`);
- both interval methods: the one-sided Wilson lower bound (training's sampling margin) and the exact
  two-sided Clopper-Pearson interval (a site's small sample).

Numpy and the standard library only: it runs on the device (`edge-xray site calibrate`).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from .errors import InputError

# the legacy training rule (choose_threshold), kept in metrics.json for comparison
SENSITIVITY_TARGET = 0.97
MAX_THRESHOLD = 0.5  # the legacy default never referred fewer children than a plain 0.5 would
# the default operating point (choose_operating_point): 95 % sensitivity on a new population
OPERATING_TARGET = 0.95
# None: the plain empirical sensitivity on each reference set (the shift proxy is the margin); a number
# asks instead for that one-sided Wilson lower bound of sensitivity to reach the target (a sampling margin)
OPERATING_CONFIDENCE = None
REPORT_CONFIDENCE = 0.95  # the lower bound reported beside each expected sensitivity
SITE_TARGET = 0.95  # the site rule's default target sensitivity on the site's new scans
INTERVAL_CONFIDENCE = 0.95  # the site's two-sided Clopper-Pearson intervals
_EPS = 1e-9  # (1 - 0.95) * 20 is 0.9999999999999998: floor must see 1


# the rank at a target sensitivity ---------------------------------------------------------------
def allowed_below(n: int, target: float) -> int:
    """Training's rule: how many of N sorted pneumonia scores may lie below the threshold (0-based index
    of the threshold among them) for an empirical sensitivity of at least TARGET."""
    return int(math.floor((1.0 - target) * n + _EPS))


def site_rank(n: int, target: float = SITE_TARGET) -> int:
    """The site rule: the 1-based rank j among N sorted pneumonia scores whose score is the threshold,
    the largest with (n - j + 1) / (n + 1) >= TARGET (at least 1)."""
    return max(1, int(math.floor((1.0 - target) * (n + 1) + _EPS)))


# intervals ---------------------------------------------------------------------------------------
def wilson_lower_bound(hits: int, n: int, confidence: float = REPORT_CONFIDENCE) -> float:
    """One-sided Wilson lower bound of a proportion HITS / N at CONFIDENCE (0 when N is 0)."""
    if n <= 0:
        return 0.0
    z = NormalDist().inv_cdf(confidence)
    ph = hits / n
    centre = ph + z * z / (2 * n)
    half = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
    return max(0.0, float((centre - half) / (1 + z * z / n)))  # 0 hits: -1e-17 in floating point


def _log_binom_pmf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    lg = math.lgamma
    return np.array([lg(n + 1) - lg(i + 1) - lg(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p) for i in k])


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return float(np.exp(_log_binom_pmf(np.arange(k, n + 1), n, p)).sum())


def _bisect(f, lo=0.0, hi=1.0, iters=80) -> float:
    """The root of an increasing F on [lo, hi]."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, confidence: float = INTERVAL_CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a proportion K / N."""
    if n <= 0:
        return (0.0, 1.0)
    a = (1.0 - confidence) / 2
    lo = 0.0 if k == 0 else _bisect(lambda p: _binom_sf(k, n, p) - a)
    hi = 1.0 if k == n else _bisect(lambda p: a - (1.0 - _binom_sf(k + 1, n, p)))
    return (lo, hi)


# the site rule -----------------------------------------------------------------------------------
def site_threshold(p_pneumonia, target: float = SITE_TARGET) -> float:
    """The threshold that flags a new pneumonia scan of the site with probability >= TARGET (site_rank).
    Raises InputError (exit code 3) without pneumonia scores."""
    pos = np.sort(np.asarray(p_pneumonia, np.float64))
    if len(pos) == 0:
        raise InputError("no pneumonia scans to set a threshold on")
    return float(pos[site_rank(len(pos), target) - 1])


def expected_sensitivity(n: int, target: float = SITE_TARGET) -> float:
    """The probability that the site rule's threshold, set on N pneumonia scans, flags the next one."""
    return (n - site_rank(n, target) + 1) / (n + 1)


def site_sensitivity_interval(n: int, target: float = SITE_TARGET,
                              confidence: float = INTERVAL_CONFIDENCE) -> tuple[float, float]:
    """The Clopper-Pearson interval of the sensitivity on N pneumonia scans at the site rule's threshold
    (ties aside, n - j + 1 of them are flagged): how sure a sample of N can be."""
    return clopper_pearson(n - site_rank(n, target) + 1, n, confidence)


# the training rule -------------------------------------------------------------------------------
def choose_threshold(y, p, target: float = SENSITIVITY_TARGET, cap: float = MAX_THRESHOLD) -> float:
    """The legacy rule: the highest threshold whose sensitivity on (Y, P) is at least TARGET, capped at CAP."""
    y = np.asarray(y).astype(bool)
    pos = np.sort(np.asarray(p)[y])
    if len(pos) == 0:
        return cap
    return float(min(float(pos[allowed_below(len(pos), target)]), cap))


def bounded_threshold(pos: np.ndarray, target: float, confidence=None) -> tuple[float, int]:
    """The highest threshold on sorted positive scores POS whose sensitivity (or, with CONFIDENCE, its
    one-sided Wilson lower bound) is >= TARGET. Returns the threshold and the number of positives below it."""
    n = len(pos)
    k = allowed_below(n, target)
    while confidence is not None and k > 0 and wilson_lower_bound(n - k, n, confidence) < target:
        k -= 1
    t = float(pos[k])
    return t, int((pos < t).sum())  # ties at the threshold count as found


def _sensitivity_specificity(y, p, threshold: float) -> dict:
    y = np.asarray(y).astype(bool)
    flagged = np.asarray(p, np.float64) >= threshold
    npos, nneg = int(y.sum()), int((~y).sum())
    hits = int((flagged & y).sum())
    return {"positives": npos, "hits": hits,
            "sensitivity": hits / npos if npos else float("nan"),
            "specificity": int((~flagged & ~y).sum()) / nneg if nneg else float("nan"),
            "accuracy": float((flagged == y).mean()) if len(y) else float("nan")}


RULE_ASSUMPTION = ("the ranking transfers to a new population but scores move: pneumonia at a new site "
                   "scores at least as high, relative to this threshold, as on the harder reference set "
                   "(the shift proxy swaps the class-typical acquisition, lowering pneumonia scores); "
                   "normal scores may rise, so expect specificity nearer the shift proxy's than validation's")


def choose_operating_point(y_val, p_val, y_proxy=None, p_proxy=None, target: float = OPERATING_TARGET,
                           confidence: float | None = OPERATING_CONFIDENCE) -> tuple[float, dict]:
    """The default screening threshold, with a margin for a new population; returns (threshold, record).

    Rule: on each reference set (the validation split and, when given, the shift proxy), take the
    highest threshold whose pneumonia sensitivity is at least TARGET (with CONFIDENCE: whose one-sided
    Wilson lower bound is); the operating point is the lowest of these, so the harder set binds. No cap.

    Assumption (RULE_ASSUMPTION): on a new population the model's ranking transfers but its scores move;
    pneumonia at a new site scores at least as high, relative to this threshold, as on the harder of
    validation and the shift proxy. Normal scores may move up: the expected specificity is reported for
    both sets, and the proxy's is the one to expect on a new site.

    Y_* are booleans (pneumonia), P_* the calibrated pneumonia probabilities. The record holds the
    rule text, the assumption, each set's own bounded threshold, and the sensitivity and specificity
    that each set gives at the chosen threshold (the figures the operating point expects).
    """
    sets = {"val": (y_val, p_val)}
    if y_proxy is not None and p_proxy is not None:
        sets["shift_proxy"] = (y_proxy, p_proxy)
    per_set = {}
    for name, (y, p) in sets.items():
        pos = np.sort(np.asarray(p, np.float64)[np.asarray(y).astype(bool)])
        if len(pos) == 0:
            raise ValueError(f"choose_operating_point: no pneumonia cases in {name}")
        per_set[name] = bounded_threshold(pos, target, confidence)[0]
    binding = min(per_set, key=per_set.get)
    threshold = per_set[binding]
    bound_confidence = confidence or REPORT_CONFIDENCE
    expected = {}
    for name, (y, p) in sets.items():
        m = _sensitivity_specificity(y, p, threshold)
        expected[name] = {"sensitivity": round(m["sensitivity"], 4),
                          "sensitivity_lower_bound": round(wilson_lower_bound(m["hits"], m["positives"],
                                                                              bound_confidence), 4),
                          "specificity": round(m["specificity"], 4), "accuracy": round(m["accuracy"], 4)}
    measure = (f"pneumonia sensitivity has a one-sided {confidence:.0%} Wilson lower bound" if confidence
               else "pneumonia sensitivity is")
    record = {
        "rule": (f"the highest threshold whose {measure} >= {target:.0%} on each of {' and '.join(sets)}; "
                 f"the lowest of these (the harder set binds); no cap"),
        "assumption": RULE_ASSUMPTION,
        "target_sensitivity": target,
        "confidence": confidence,
        "lower_bound_confidence": bound_confidence,
        "binding_set": binding,
        "per_set_threshold": {n: round(t, 4) for n, t in per_set.items()},
        "expected": expected,
    }
    return threshold, record
