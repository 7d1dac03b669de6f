"""Screening metrics, calibration fitting and the operating point, with numpy only (used on the device too).

The decision itself (calibrated probabilities, label and type at a threshold) is edge_xray.decision's.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from .decision import pneumonia_probability, predicted_classes, softmax

ECE_BINS = 15
SENSITIVITY_TARGET = 0.97
MAX_THRESHOLD = 0.5  # the screening default never refers fewer children than a plain 0.5 would
# The default operating point (choose_operating_point): 95 % sensitivity on a new population.
OPERATING_TARGET = 0.95
# None: the plain empirical sensitivity on each reference set (the shift proxy is the margin); a number
# asks instead for that one-sided Wilson lower bound of sensitivity to reach the target (a sampling margin)
OPERATING_CONFIDENCE = None
REPORT_CONFIDENCE = 0.95  # the lower bound reported beside each expected sensitivity


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, np.float64)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def roc_curve(y, score):
    y = np.asarray(y).astype(bool)
    thresholds = np.unique(np.asarray(score))[::-1]
    tpr = [0.0] + [float((score[y] >= t).mean()) for t in thresholds]
    fpr = [0.0] + [float((score[~y] >= t).mean()) for t in thresholds]
    return np.array(fpr), np.array(tpr)


def expected_calibration_error(y, p, bins: int = ECE_BINS) -> float:
    """ECE of the binary pneumonia probability P against the labels Y (equal-width bins)."""
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def prior_correction(class_weights, counts) -> list[float]:
    """Logit offsets that undo the class weighting of normal against pneumonia.

    Training with weight w multiplies the odds of a class by w, so adding log(1 / w) returns
    P(pneumonia) to the data's own frequencies. Bacterial against viral is left as trained: on the
    validation split that split is already at its most accurate without a correction.
    """
    w = np.asarray(class_weights, np.float64)
    n = np.asarray(counts, np.float64)
    wp = (w[1] * n[1] + w[2] * n[2]) / max(n[1] + n[2], 1.0)
    b = -np.log(np.array([w[0], wp, wp]))
    return (b - b.mean()).tolist()


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bias=None) -> float:
    """The temperature that minimises the negative log-likelihood of softmax(logits / T + bias)."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, int)

    def nll(t):
        p = softmax(logits, t, bias)[np.arange(len(labels)), labels]
        return -np.log(np.clip(p, 1e-12, 1.0)).mean()

    grid = np.exp(np.linspace(np.log(0.2), np.log(8.0), 81))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = np.exp(np.linspace(np.log(best) - 0.05, np.log(best) + 0.05, 41))
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def choose_threshold(y, p, target: float = SENSITIVITY_TARGET, cap: float = MAX_THRESHOLD) -> float:
    """The highest threshold whose sensitivity on (Y, P) is at least TARGET, capped at CAP."""
    y = np.asarray(y).astype(bool)
    pos = np.sort(np.asarray(p)[y])
    if len(pos) == 0:
        return cap
    k = int(np.floor((1.0 - target) * len(pos) + 1e-9))  # positives allowed below (1 - 0.9 is 0.0999...)
    t = float(pos[k])
    return float(min(t, cap))


def sensitivity_lower_bound(hits: int, n: int, confidence: float = REPORT_CONFIDENCE) -> float:
    """One-sided Wilson lower bound of a proportion HITS / N at CONFIDENCE (0 when N is 0)."""
    if n <= 0:
        return 0.0
    z = NormalDist().inv_cdf(confidence)
    ph = hits / n
    centre = ph + z * z / (2 * n)
    half = z * np.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
    return float((centre - half) / (1 + z * z / n))


def _bounded_threshold(pos: np.ndarray, target: float, confidence) -> tuple[float, int]:
    """The highest threshold on sorted positive scores POS whose sensitivity (or, with CONFIDENCE, its
    one-sided lower bound) is >= TARGET. Returns the threshold and the number of positives below it."""
    n = len(pos)
    k = int(np.floor((1.0 - target) * n + 1e-9))  # positives allowed below (1 - 0.95 is 0.0500...04)
    while confidence is not None and k > 0 and sensitivity_lower_bound(n - k, n, confidence) < target:
        k -= 1
    t = float(pos[k])
    return t, int((pos < t).sum())  # ties at the threshold count as found


def choose_operating_point(y_val, p_val, y_proxy=None, p_proxy=None, target: float = OPERATING_TARGET,
                           confidence: float | None = OPERATING_CONFIDENCE) -> tuple[float, dict]:
    """The default screening threshold, with a margin for a new population; returns (threshold, record).

    Rule: on each reference set (the validation split and, when given, the shift proxy), take the
    highest threshold whose pneumonia sensitivity is at least TARGET (with CONFIDENCE: whose one-sided
    Wilson lower bound is); the operating point is the lowest of these, so the harder set binds. No cap.

    Assumption: on a new population the model's ranking transfers but its scores move; pneumonia at a
    new site scores at least as high, relative to this threshold, as on the harder of validation and
    the shift proxy (the proxy gives normal scans the pneumonia acquisition look and pneumonia scans
    the normal look, so pneumonia scores fall there). Normal scores may move up: the expected
    specificity is reported for both sets, and the proxy's is the one to expect on a new site.

    Y_* are booleans (pneumonia), P_* the calibrated pneumonia probabilities. The record holds the
    rule text, the assumption, each set's own bounded threshold, and the sensitivity and specificity
    that each set gives at the chosen threshold (the figures the operating point expects).
    """
    sets = {"val": (y_val, p_val)}
    if y_proxy is not None and p_proxy is not None:
        sets["shift_proxy"] = (y_proxy, p_proxy)
    per_set = {}
    for name, (y, p) in sets.items():
        y = np.asarray(y).astype(bool)
        p = np.asarray(p, np.float64)
        pos = np.sort(p[y])
        if len(pos) == 0:
            raise ValueError(f"choose_operating_point: no pneumonia cases in {name}")
        t, k = _bounded_threshold(pos, target, confidence)
        per_set[name] = {"threshold": t, "positives": len(pos), "positives_below": k}
    binding = min(per_set, key=lambda n: per_set[n]["threshold"])
    threshold = per_set[binding]["threshold"]
    expected = {}
    for name, (y, p) in sets.items():
        m = binary_metrics(y, p, threshold)
        hits = m["confusion_2class"]["matrix"][1][1]
        expected[name] = {"sensitivity": round(m["sensitivity"], 4),
                          "sensitivity_lower_bound": round(sensitivity_lower_bound(
                              hits, per_set[name]["positives"], confidence or REPORT_CONFIDENCE), 4),
                          "specificity": round(m["specificity"], 4), "accuracy": round(m["accuracy"], 4)}
    measure = (f"pneumonia sensitivity has a one-sided {confidence:.0%} Wilson lower bound" if confidence
               else "pneumonia sensitivity is")
    record = {
        "rule": (f"the highest threshold whose {measure} >= {target:.0%} on each of {' and '.join(sets)}; "
                 f"the lowest of these (the harder set binds); no cap"),
        "assumption": ("the ranking transfers to a new population but scores move: pneumonia at a new site "
                       "scores at least as high, relative to this threshold, as on the harder reference set "
                       "(the shift proxy swaps the class-typical acquisition, lowering pneumonia scores); "
                       "normal scores may rise, so expect specificity nearer the shift proxy's than validation's"),
        "target_sensitivity": target,
        "confidence": confidence,
        "lower_bound_confidence": confidence or REPORT_CONFIDENCE,
        "binding_set": binding,
        "per_set_threshold": {n: round(v["threshold"], 4) for n, v in per_set.items()},
        "expected": expected,
    }
    return threshold, record


def binary_metrics(y, p, threshold: float) -> dict:
    """Y: 1 pneumonia, 0 normal; P: pneumonia probability."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, np.float64)
    pred = p >= threshold
    tp = int((pred & y).sum())
    tn = int((~pred & ~y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    n = len(y)

    def div(a, b):
        return float(a / b) if b else float("nan")

    precision = div(tp, tp + fp)
    recall = div(tp, tp + fn)
    return {
        "n": n,
        "threshold": float(threshold),
        "accuracy": div(tp + tn, n),
        "sensitivity": recall,
        "specificity": div(tn, tn + fp),
        "precision": precision,
        "f1": div(2 * precision * recall, precision + recall) if tp else 0.0,
        "auc": roc_auc(y, p),
        "ece": expected_calibration_error(y, p),
        "type_I_errors": fp,
        "type_I_rate": div(fp, fp + tn),
        "type_II_errors": fn,
        "type_II_rate": div(fn, fn + tp),
        "confusion_2class": {"labels": ["NORMAL", "PNEUMONIA"], "matrix": [[tn, fp], [fn, tp]]},
    }


def screening_report(labels, probs, threshold: float) -> dict:
    """All figures for 3-class labels (0 normal, 1 bacterial, 2 viral) and calibrated softmax PROBS."""
    labels = np.asarray(labels, int)
    probs = np.asarray(probs, np.float64)
    y = labels > 0
    p = pneumonia_probability(probs)
    out = binary_metrics(y, p, threshold)
    pred3 = predicted_classes(probs, threshold)
    pred = pred3 != 0  # flagged: the decision's own rule
    cm3 = np.zeros((3, 3), int)
    np.add.at(cm3, (labels, pred3), 1)
    out["confusion_3class"] = {"labels": ["NORMAL", "BACTERIAL", "VIRAL"], "matrix": cm3.tolist()}
    flagged = y & pred  # pneumonia cases that the model flags
    out["bacterial_vs_viral_accuracy"] = (
        float((pred3[flagged] == labels[flagged]).mean()) if flagged.any() else float("nan")
    )
    out["three_class_accuracy"] = float((pred3 == labels).mean()) if len(labels) else float("nan")
    return out
