"""Turned scans: a tiny int8 model tells a file's rotation (0, 90, 180, 270 degrees clockwise).

The classify loop calls `orient` after decoding and the cheap image checks, before `prepare`:

    upright, degrees, confident = orient(im, model)
    if not confident: refuse with REASON ("image appears rotated or flipped")
    else: screen `upright`; report `degrees` (0 when the file was upright) as orientation_corrected

The model (edge-xray-orientation-int8.tflite, trained by `edge-xray train-orientation`) sees the image
through the same preprocessing as the screening model, at its own input size. `edge_xray.load_model`
loads it with the screening model (same threads) and checks its sha256 against its card and the
package's list (edge_xray.trust). Left-right mirrored scans count as upright: the
side of the heart is never "corrected" (dextrocardia exists). A top-bottom flip looks like a 180
degree turn of a mirrored scan and is corrected as 180 degrees (see docs/evidence.md for the figures).

Only numpy, Pillow and the TFLite runtime are used.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from .decision import softmax
from .preprocess import prepare
from .runtime import MODELS_DIR, Model

# A correction (or "upright") is trusted when the model's top probability reaches this; below it the
# caller refuses the scan with REASON. Chosen on the main model's validation scans turned 4 ways
# (benchmarks/orientation.py): no wrong decision at any threshold from 0.5 up; at 0.7, 99.6-99.7 %
# recognised per angle and 2 / 746 upright scans refused; at 0.9, 1.7 % of upright scans refused
# (training with label smoothing keeps the top probability near 0.96).
CONFIDENCE = 0.70
ANGLES = (0, 90, 180, 270)  # the model's labels: degrees the file is turned clockwise from upright
REASON = "image appears rotated or flipped"
MODEL_NAME = "edge-xray-orientation"
DEFAULT_ORIENTATION_MODEL = MODELS_DIR / "edge-xray-orientation-int8.tflite"

_TURN_BACK = {  # Pillow's ROTATE_n turns counter-clockwise by n degrees
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def rotate_clockwise(im: Image.Image, degrees: int) -> Image.Image:
    """IM turned DEGREES (0, 90, 180, 270) clockwise (lossless)."""
    degrees %= 360
    return im if degrees == 0 else im.transpose(_TURN_BACK[360 - degrees])


def rotate_back(im: Image.Image, degrees: int) -> Image.Image:
    """Undo a clockwise turn of DEGREES (lossless)."""
    degrees %= 360
    return im if degrees == 0 else im.transpose(_TURN_BACK[degrees])


class OrientationModel(Model):
    """The 4-way orientation model with its card, on the device's TFLite runtime (FLATBUFFER alone:
    training measures a model it has just converted)."""

    LABELS = tuple(str(a) for a in ANGLES)
    KIND = "orientation model"
    DEFAULT = DEFAULT_ORIENTATION_MODEL

    def __init__(self, path=None, threads: int | None = None, flatbuffer: bytes | None = None):
        super().__init__(path, threads, flatbuffer)
        self._lock = threading.Lock()

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Prepared image (size, size) in [0, 1] -> 4 logits."""
        with self._lock:  # one interpreter, possibly shared by threads
            return self.run(x)

    def probabilities(self, gray: Image.Image) -> np.ndarray:
        """8-bit grayscale image -> P(turned 0, 90, 180, 270 degrees clockwise)."""
        return softmax(self.logits(prepare(gray, self.size)))

    def probabilities_batch(self, xs: np.ndarray) -> np.ndarray:
        """Prepared images (n, size, size) -> probabilities (n, 4)."""
        return np.stack([softmax(self.logits(x)) for x in xs]) if len(xs) else np.zeros((0, 4))


def decide(probs: np.ndarray, confidence: float = CONFIDENCE) -> tuple[int, bool]:
    """(degrees the file is turned clockwise, confident) from the model's 4 probabilities."""
    k = int(np.argmax(probs))
    return ANGLES[k], bool(probs[k] >= confidence)


def orient(gray: Image.Image, model: OrientationModel, x: np.ndarray | None = None) -> tuple[Image.Image, int, bool]:
    """(upright image, degrees corrected, confident) for a decoded 8-bit grayscale scan.

    MODEL: the Screener's (edge_xray.load_model loads and trust-checks it with the screening model).
    X: GRAY already prepared at the model's size, when the caller has it (the intended-use check
    shares it). DEGREES is how far the file was turned clockwise (0, 90, 180 or 270); the returned
    image is turned back by that much when confident, and is GRAY itself otherwise. When not
    confident, whatever the model's best guess, the caller refuses the scan with REASON.
    """
    probs = model.probabilities(gray) if x is None else softmax(model.logits(x))
    degrees, confident = decide(probs)
    if not confident:
        return gray, degrees, False
    return rotate_back(gray, degrees), degrees, True
