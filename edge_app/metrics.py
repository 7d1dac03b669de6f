"""Screening metrics and calibration fitting, with numpy only (used on the device too).

The decision itself (calibrated probabilities, label and type at a threshold) is edge_xray.decision's;
choosing the threshold (the operating point) and its intervals are edge_xray.operating_point's.
"""

from __future__ import annotations

import numpy as np

from .decision import pneumonia_probability, predicted_classes, softmax

ECE_BINS = 15


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
