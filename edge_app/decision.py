"""The calibrated decision: logits -> calibrated probabilities -> label, pneumonia type and advice.

This is the one place where the model card's calibration (temperature, logit bias) and the operating
threshold (the card's, or a site's) turn a network output into an answer. Screening, evaluation,
metrics and heatmaps all call it.

A screening model's labels are one of SCREENING_LABEL_SETS, in any order: NORMAL/BACTERIAL/VIRAL (the
bundled model: P(pneumonia) = P(bacterial) + P(viral), and the likelier type) or NORMAL/PNEUMONIA (a
builder's two-class model: P(pneumonia) = P(PNEUMONIA), no type, referred today). `ScreeningLabels`
maps a card's labels to their logits; any other label set is a plain classifier, not a screen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NORMAL, BACTERIAL, VIRAL = 0, 1, 2  # the model's logits, in the order of edge_xray.LABELS
PNEUMONIA = 3  # the answer of a two-label model that flags pneumonia: no type
PNEUMONIA_TYPES = {BACTERIAL: "bacterial", VIRAL: "viral"}
SCREENING_LABEL_SETS = (("NORMAL", "BACTERIAL", "VIRAL"), ("NORMAL", "PNEUMONIA"))
TYPE_SURE = 0.6  # below this P(type | pneumonia) the advice says the type is uncertain (and refers today)
# A likely viral pneumonia is referred, but not today: within this many days. A clinical choice for the
# clinic's clinician to confirm (docs/screen.md); the advice and the page's words say it.
REFER_WITHIN_DAYS = 2
ADVICE = {
    "bacterial": "REFER TODAY: signs of pneumonia, likely bacterial (may need antibiotics now)",
    "viral": f"REFER WITHIN {REFER_WITHIN_DAYS} DAYS: signs of pneumonia, likely viral",
    "uncertain": "REFER TODAY: signs of pneumonia, bacterial or viral uncertain (may need antibiotics now)",
    "pneumonia": ("REFER TODAY: signs of pneumonia (this model does not tell bacterial from viral; "
                  "may need antibiotics now)"),
    "normal": "No pneumonia found by the screen; follow clinical signs and re-check if unwell",
    "rejected": "Not screened: {reason}",
    "error": "Not screened: {reason}",
}
# How soon a screened child should be seen: the one owner of urgency (rows, page, summaries read it here,
# never from the advice text). None: not screened.
URGENCY_TODAY, URGENCY_REFER, URGENCY_NONE = "today", "refer", "none"
URGENCIES = (URGENCY_TODAY, URGENCY_REFER, URGENCY_NONE)
# The large words of each urgency on the page and the slip (a row that was not screened: NOT_SCREENED)
ANSWER_WORDS = {URGENCY_TODAY: "REFER TODAY", URGENCY_REFER: f"REFER WITHIN {REFER_WITHIN_DAYS} DAYS",
                URGENCY_NONE: "No pneumonia found"}
NOT_SCREENED = "Not screened"
# P(pneumonia) in words, by the screen's answer: (lower bound, words), the first that applies
LIKELIHOOD = {"PNEUMONIA": ((0.9, "very likely pneumonia"), (0.5, "likely pneumonia"), (0.0, "possible pneumonia")),
              "NORMAL": ((0.1, "pneumonia unlikely"), (0.0, "pneumonia very unlikely"))}


def likelihood(label: str, p: float) -> str:
    """P(pneumonia) of a screened row in words, e.g. "very likely pneumonia"."""
    return next(words for low, words in LIKELIHOOD[label] if p >= low)


def softmax(logits, temperature: float = 1.0, bias=None) -> np.ndarray:
    """softmax(logits / temperature + bias), over the last axis."""
    z = np.asarray(logits, np.float64) / float(temperature)
    if bias is not None:
        z = z + np.asarray(bias, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class ScreeningLabels:
    """Where a screening model's answers are among its logits: NORMAL's index, and BACTERIAL's and
    VIRAL's (a three-label model) or PNEUMONIA's (a two-label model)."""

    names: tuple
    normal: int
    bacterial: int | None = None
    viral: int | None = None
    pneumonia: int | None = None

    @property
    def typed(self) -> bool:
        return self.bacterial is not None

    @property
    def flagging(self) -> list:
        """The indices whose probabilities add up to P(pneumonia)."""
        return [self.bacterial, self.viral] if self.typed else [self.pneumonia]

    @classmethod
    def of(cls, labels) -> "ScreeningLabels | None":
        """The map of LABELS (names, any order, any case), or None when they are not a screening set."""
        names = tuple(str(x).upper() for x in labels)
        if not any(sorted(names) == sorted(s) for s in SCREENING_LABEL_SETS):
            return None
        i = {n: k for k, n in enumerate(names)}
        return cls(tuple(labels), i["NORMAL"], i.get("BACTERIAL"), i.get("VIRAL"), i.get("PNEUMONIA"))

    @classmethod
    def of_width(cls, n: int) -> "ScreeningLabels":
        """The map for N logits in the standard order (3: NORMAL, BACTERIAL, VIRAL; 2: NORMAL, PNEUMONIA)."""
        return cls.of(SCREENING_LABEL_SETS[0] if n != 2 else SCREENING_LABEL_SETS[1])


def _labels_for(probs, labels: "ScreeningLabels | None") -> "ScreeningLabels":
    return labels if labels is not None else ScreeningLabels.of_width(np.shape(probs)[-1])


def pneumonia_probability(probs, labels: ScreeningLabels | None = None) -> np.ndarray:
    """P(pneumonia) = P(bacterial) + P(viral), or P(pneumonia) of a two-label model. LABELS: where they
    are (default: the standard order for the width of PROBS)."""
    probs = np.asarray(probs)
    lab = _labels_for(probs, labels)
    if lab.typed:
        return probs[..., lab.bacterial] + probs[..., lab.viral]
    return probs[..., lab.pneumonia]


def predicted_classes(probs, threshold: float, labels: ScreeningLabels | None = None) -> np.ndarray:
    """Answers (0 normal, 1 bacterial, 2 viral; 3 pneumonia from a two-label model) of calibrated
    PROBS at THRESHOLD."""
    probs = np.asarray(probs, np.float64)
    lab = _labels_for(probs, labels)
    flagged = pneumonia_probability(probs, lab) >= threshold
    if not lab.typed:
        return np.where(flagged, PNEUMONIA, NORMAL)
    kind = np.where(probs[..., lab.bacterial] >= probs[..., lab.viral], BACTERIAL, VIRAL)
    return np.where(flagged, kind, NORMAL)


@dataclass(frozen=True)
class Decision:
    """One answer. `cls` is 0 (normal), 1 (bacterial), 2 (viral) or 3 (pneumonia, type not told)."""

    cls: int
    pneumonia_probability: float
    type_probability: float | None

    @property
    def label(self) -> str:
        return "NORMAL" if self.cls == NORMAL else "PNEUMONIA"

    @property
    def pneumonia_type(self) -> str | None:
        return PNEUMONIA_TYPES.get(self.cls)

    @property
    def advice(self) -> str:
        if self.cls == PNEUMONIA:
            return ADVICE["pneumonia"]
        if self.cls != NORMAL and self.type_probability is not None and self.type_probability < TYPE_SURE:
            return ADVICE["uncertain"]
        return ADVICE[self.pneumonia_type or "normal"]

    @property
    def urgency(self) -> str:
        """today (bacterial, type uncertain or not told), refer (likely viral) or none (no pneumonia found)."""
        if self.cls == NORMAL:
            return URGENCY_NONE
        if self.cls == VIRAL and (self.type_probability is None or self.type_probability >= TYPE_SURE):
            return URGENCY_REFER
        return URGENCY_TODAY

    def fields(self) -> dict:
        """The result fields of a screening row."""
        return {"label": self.label, "pneumonia_probability": round(self.pneumonia_probability, 4),
                "pneumonia_type": self.pneumonia_type,
                "type_probability": None if self.type_probability is None else round(self.type_probability, 4),
                "advice": self.advice, "urgency": self.urgency}


@dataclass(frozen=True)
class Calibration:
    """The card's calibration, an operating threshold, and where the answers are among the logits."""

    temperature: float = 1.0
    logit_bias: tuple = (0.0, 0.0, 0.0)
    threshold: float = 0.5
    labels: ScreeningLabels | None = None  # None: the standard order for the number of logits

    @classmethod
    def from_card(cls, card, threshold: float | None = None) -> "Calibration":
        """From a ModelCard; THRESHOLD (a site's) replaces the card's when given."""
        return cls(card.temperature, card.logit_bias, card.threshold if threshold is None else float(threshold),
                   ScreeningLabels.of(card.labels) if card.labels else None)

    @classmethod
    def from_metrics(cls, metrics: dict) -> "Calibration":
        """From a training run's metrics.json (the same keys as a card's)."""
        return cls(float(metrics.get("temperature", 1.0)), tuple(metrics.get("logit_bias") or (0.0, 0.0, 0.0)),
                   float(metrics.get("threshold", 0.5)))

    def probabilities(self, logits) -> np.ndarray:
        return softmax(logits, self.temperature, self.logit_bias)

    def pneumonia_probability(self, probs) -> np.ndarray:
        return pneumonia_probability(probs, self.labels)

    def predicted_classes(self, probs) -> np.ndarray:
        return predicted_classes(probs, self.threshold, self.labels)

    def decide(self, logits) -> Decision:
        """Logits of one image -> its Decision."""
        probs = self.probabilities(logits)
        lab = _labels_for(probs, self.labels)
        cls = int(predicted_classes(probs, self.threshold, lab))
        p = float(pneumonia_probability(probs, lab))
        index = {BACTERIAL: lab.bacterial, VIRAL: lab.viral}.get(cls)
        t = float(probs[index] / max(p, 1e-12)) if index is not None else None
        return Decision(cls, p, t)
