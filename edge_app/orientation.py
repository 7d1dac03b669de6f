"""Turned scans: a tiny int8 model tells a file's rotation (0, 90, 180, 270 degrees clockwise).

The classify loop calls `orient` after decoding and the cheap image checks, before `prepare`:

    upright, degrees, confident = orient(im)
    if not confident: refuse with REASON ("image appears rotated or flipped")
    else: screen `upright`; report `degrees` (0 when the file was upright) as orientation_corrected

The model (edge-xray-orientation-int8.tflite, trained by `edge-xray train-orientation`) sees the image
through the same preprocessing as the screening model, at its own input size. It is loaded once,
lazily, and its sha256 is checked through its card. Left-right mirrored scans count as upright: the
side of the heart is never "corrected" (dextrocardia exists). A top-bottom flip looks like a 180
degree turn of a mirrored scan and is corrected as 180 degrees (see docs/evidence.md for the figures).

Only numpy, Pillow and the TFLite runtime are used.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from .card import ModelCard
from .decision import softmax
from .errors import ModelError
from .preprocess import prepare, quantize
from .runtime import MODELS_DIR, default_threads, load_interpreter

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


class OrientationModel:
    """The 4-way orientation model with its card, on the device's TFLite runtime."""

    def __init__(self, path=None, threads: int | None = None, flatbuffer: bytes | None = None):
        """PATH (default: the bundled model), checked against its card; or FLATBUFFER alone (training
        uses that to measure a model it has just converted)."""
        if flatbuffer is None:
            self.path = DEFAULT_ORIENTATION_MODEL if path is None else path
            flatbuffer, self.card = ModelCard.read(self.path)
            labels = list(self.card.labels)
            if labels != [str(a) for a in ANGLES]:
                raise ModelError(f"{self.path.name}: not an orientation model (labels {labels}, expected "
                                 f"{[str(a) for a in ANGLES]})")
            self.sha256 = self.card.sha256
        else:
            self.path, self.card, self.sha256 = None, ModelCard({}), None
        name = getattr(self.path, "name", "<converted>")
        try:
            self.interpreter, self.runtime = load_interpreter(flatbuffer, threads or default_threads())
        except ModelError as e:
            raise ModelError(f"{name}: {e}") from None
        inp, outs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inp) != 1 or len(inp[0]["shape"]) != 4 or len(outs) != 1 or int(outs[0]["shape"][-1]) != 4:
            raise ModelError(f"{name}: expected one image input and 4 logits (0, 90, 180, 270 degrees)")
        self.input, self.output = inp[0], outs[0]
        self.size = int(self.input["shape"][1])
        self._lock = threading.Lock()

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Prepared image (size, size) in [0, 1] -> 4 logits."""
        x = x.reshape(self.input["shape"]).astype(np.float32)
        if self.input["dtype"] != np.float32:
            scale, zp = self.input["quantization"]
            x = quantize(x, scale, zp, self.input["dtype"])
        with self._lock:  # one interpreter, possibly shared by threads
            self.interpreter.set_tensor(self.input["index"], x)
            self.interpreter.invoke()
            y = self.interpreter.get_tensor(self.output["index"])[0]
        if self.output["dtype"] != np.float32:
            scale, zp = self.output["quantization"]
            y = (y.astype(np.float32) - zp) * np.float32(scale)
        return y

    def probabilities(self, gray: Image.Image) -> np.ndarray:
        """8-bit grayscale image -> P(turned 0, 90, 180, 270 degrees clockwise)."""
        return softmax(self.logits(prepare(gray, self.size)))

    def probabilities_batch(self, xs: np.ndarray) -> np.ndarray:
        """Prepared images (n, size, size) -> probabilities (n, 4)."""
        return np.stack([softmax(self.logits(x)) for x in xs]) if len(xs) else np.zeros((0, 4))


_default: OrientationModel | None = None
_default_lock = threading.Lock()


def default_model() -> OrientationModel:
    """The bundled orientation model, loaded (and checked against its card) once."""
    global _default
    with _default_lock:
        if _default is None:
            _default = OrientationModel()
        return _default


def decide(probs: np.ndarray, confidence: float = CONFIDENCE) -> tuple[int, bool]:
    """(degrees the file is turned clockwise, confident) from the model's 4 probabilities."""
    k = int(np.argmax(probs))
    return ANGLES[k], bool(probs[k] >= confidence)


def orient(gray: Image.Image, model: OrientationModel | None = None) -> tuple[Image.Image, int, bool]:
    """(upright image, degrees corrected, confident) for a decoded 8-bit grayscale scan.

    DEGREES is how far the file was turned clockwise (0, 90, 180 or 270); the returned image is turned
    back by that much when confident, and is GRAY itself otherwise. When not confident, whatever the
    model's best guess, the caller refuses the scan with REASON.
    """
    m = model or default_model()
    degrees, confident = decide(m.probabilities(gray))
    if not confident:
        return gray, degrees, False
    return rotate_back(gray, degrees), degrees, True
