"""The calibrated decision: logits -> calibrated probabilities -> label, pneumonia type and advice.

This is the one place where the model card's calibration (temperature, logit bias) and the operating
threshold (the card's, or a site's) turn a network output into an answer. Screening, evaluation,
metrics and heatmaps all call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NORMAL, BACTERIAL, VIRAL = 0, 1, 2  # the model's logits, in the order of edge_xray.LABELS
PNEUMONIA_TYPES = {BACTERIAL: "bacterial", VIRAL: "viral"}
TYPE_SURE = 0.6  # below this P(type | pneumonia) the advice says the type is uncertain (and refers today)
# A likely viral pneumonia is referred, but not today: within this many days. A clinical choice for the
# clinic's clinician to confirm (docs/screen.md); the advice and the page's words say it.
REFER_WITHIN_DAYS = 2
ADVICE = {
    "bacterial": "REFER TODAY: signs of pneumonia, likely bacterial (may need antibiotics now)",
    "viral": f"REFER WITHIN {REFER_WITHIN_DAYS} DAYS: signs of pneumonia, likely viral",
    "uncertain": "REFER TODAY: signs of pneumonia, bacterial or viral uncertain (may need antibiotics now)",
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


def pneumonia_probability(probs) -> np.ndarray:
    """P(pneumonia) = P(bacterial) + P(viral)."""
    probs = np.asarray(probs)
    return probs[..., BACTERIAL] + probs[..., VIRAL]


def predicted_classes(probs, threshold: float) -> np.ndarray:
    """Three-class answers (0 normal, 1 bacterial, 2 viral) of calibrated PROBS at THRESHOLD."""
    probs = np.asarray(probs, np.float64)
    flagged = pneumonia_probability(probs) >= threshold
    kind = np.where(probs[..., BACTERIAL] >= probs[..., VIRAL], BACTERIAL, VIRAL)
    return np.where(flagged, kind, NORMAL)


@dataclass(frozen=True)
class Decision:
    """One answer. `cls` is 0 (normal), 1 (bacterial) or 2 (viral)."""

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
        if self.cls != NORMAL and self.type_probability is not None and self.type_probability < TYPE_SURE:
            return ADVICE["uncertain"]
        return ADVICE[self.pneumonia_type or "normal"]

    @property
    def urgency(self) -> str:
        """today (bacterial, or type uncertain), refer (likely viral) or none (no pneumonia found)."""
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
    """The card's calibration and an operating threshold."""

    temperature: float = 1.0
    logit_bias: tuple = (0.0, 0.0, 0.0)
    threshold: float = 0.5

    @classmethod
    def from_card(cls, card, threshold: float | None = None) -> "Calibration":
        """From a ModelCard; THRESHOLD (a site's) replaces the card's when given."""
        return cls(card.temperature, card.logit_bias, card.threshold if threshold is None else float(threshold))

    @classmethod
    def from_metrics(cls, metrics: dict) -> "Calibration":
        """From a training run's metrics.json (the same keys as a card's)."""
        return cls(float(metrics.get("temperature", 1.0)), tuple(metrics.get("logit_bias") or (0.0, 0.0, 0.0)),
                   float(metrics.get("threshold", 0.5)))

    def probabilities(self, logits) -> np.ndarray:
        return softmax(logits, self.temperature, self.logit_bias)

    def decide(self, logits) -> Decision:
        """Logits of one image -> its Decision."""
        probs = self.probabilities(logits)
        cls = int(predicted_classes(probs, self.threshold))
        p = float(pneumonia_probability(probs))
        t = float(probs[cls] / max(p, 1e-12)) if cls != NORMAL else None
        return Decision(cls, p, t)
