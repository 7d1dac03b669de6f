"""Intended use: is this a frontal chest X-ray of a young child, what the screen is made for?

A tiny int8 model (edge-xray-intended-use-int8.tflite, trained by `edge-xray train-intended-use`,
converted by convert/auxiliary.py) gives five probabilities: a frontal chest X-ray of a child (in
use), an adult frontal chest X-ray, a lateral chest view, another body part, not an X-ray. The screen
calls it after the cheap image checks and before orientation, on the scan prepared at the size its card
gives (a model of the same size as another shares its prepared input), so it costs one small
invocation and at most one preparation:

    verdict = check(probabilities)        # Verdict(p_in_use, kind, reason or None)

P(in use) is the mean over the card's `test_time_views` of the prepared input (one invocation each;
the bundled card has none: the input as it is; averaging with the mirror was measured and not kept,
docs/intended-use.md). The scan is refused when P(in use) is below the card's `refusal_threshold` (chosen at conversion so
that no validation or full-resolution scan is refused); the reason is that of the most likely
refused class. A scan turned by 90, 180 or 270 degrees is still in use (the orientation model turns
it back afterwards); the model saw every class at every quarter turn. `intended_use` in every row
where the check ran is P(in use), rounded to DECIMALS, so thresholds can be audited.

Only numpy and the TFLite runtime are used.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .decision import softmax
from .errors import ModelError
from .runtime import MODELS_DIR, Model

MODEL_NAME = "edge-xray-intended-use"
DEFAULT_INTENDED_USE_MODEL = MODELS_DIR / "edge-xray-intended-use-int8.tflite"
LABELS = ("child_frontal_chest", "adult_frontal_chest", "lateral_chest", "other_body_part", "not_xray")
IN_USE = 0
# Views of the prepared input whose probabilities are averaged. The model learnt mirrored views; the
# card names the views its threshold was chosen with (a card without `test_time_views`: "as_is" only).
VIEWS = {"as_is": lambda x: x, "mirrored": lambda x: np.ascontiguousarray(x[:, ::-1])}
TEST_TIME_VIEWS = ("as_is",)  # what convert/auxiliary.py writes in new cards (mirror: measured, not kept)
# A card without `refusal_threshold` refuses below this (the converter always writes one).
DEFAULT_THRESHOLD = 0.05
DECIMALS = 4  # of `intended_use` in the row
LATERAL_REASON = "lateral view: screen a frontal (front-to-back) chest X-ray"
ADULT_REASON = "looks like an adult chest X-ray: this screen is made for children aged 1 to 5"
OTHER_BODY_REASON = "not a chest X-ray (another body part)"
NOT_XRAY_REASON = "does not look like a chest X-ray"  # used when the gate has no reason of its own
REASONS = {1: ADULT_REASON, 2: LATERAL_REASON, 3: OTHER_BODY_REASON, 4: NOT_XRAY_REASON}
# For these classes (not a chest at all) the gate's own reason is given when the gate refuses too: the
# gate's development non-X-rays keep the reasons they had, and the check's words are given where the
# gate has none (a hand radiograph the gate would pass). Adult and lateral films always get the check's.
GATE_FIRST = frozenset({3, 4})


@dataclass(frozen=True)
class Verdict:
    """The check's answer for one scan."""

    p_in_use: float  # P(frontal chest X-ray of a young child), rounded to DECIMALS
    kind: str  # the most likely refused class (LABELS), or LABELS[IN_USE] when in use
    reason: str | None  # None: in use; else the row's error text
    gate_first: bool = False  # the caller gives the gate's reason instead, when the gate refuses too


def decide(probs: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> Verdict:
    """The verdict from the model's probabilities: in use unless P(in use) < THRESHOLD."""
    probs = np.asarray(probs, np.float64)
    p = round(float(probs[IN_USE]), DECIMALS)
    if probs[IN_USE] >= threshold:
        return Verdict(p, LABELS[IN_USE], None)
    k = 1 + int(np.argmax(probs[1:]))
    return Verdict(p, LABELS[k], REASONS[k], k in GATE_FIRST)


class IntendedUseModel(Model):
    """The intended-use model with its card, on the device's TFLite runtime."""

    LABELS = LABELS
    KIND = "intended-use model"
    DEFAULT = DEFAULT_INTENDED_USE_MODEL

    def __init__(self, path=None, threads: int | None = None, flatbuffer: bytes | None = None, views=None):
        """VIEWS (names in VIEWS): default the card's `test_time_views`, else "as_is" alone."""
        super().__init__(path, threads, flatbuffer)
        self._lock = threading.Lock()
        self.views = tuple(views or self.card.get("test_time_views") or ("as_is",))
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown:
            raise ModelError(f"{self.path.name}: unknown test-time views {unknown} (known: {', '.join(VIEWS)})")

    @property
    def threshold(self) -> float:
        return float(self.card.get("refusal_threshold", DEFAULT_THRESHOLD))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Prepared image (size, size) in [0, 1] -> the five probabilities (LABELS order), averaged over
        the model's test-time views."""
        with self._lock:  # one interpreter, possibly shared by threads
            return np.mean([softmax(self.run(VIEWS[v](x))) for v in self.views], axis=0)

    def probabilities_batch(self, xs: np.ndarray) -> np.ndarray:
        """Prepared images (n, size, size[, 1]) -> probabilities (n, 5)."""
        return np.stack([self.probabilities(x) for x in xs]) if len(xs) else np.zeros((0, len(LABELS)))

    def check(self, x: np.ndarray) -> Verdict:
        return decide(self.probabilities(x), self.threshold)
