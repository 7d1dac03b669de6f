"""The TFLite interpreter on the device: ai_edge_litert, then tflite_runtime, then tensorflow.lite.

`Model` loads a network with its card (checked by sha256, validated by `ModelCard`), quantizes the
prepared image with the model's own input scale and zero point, and returns dequantized logits and the
last feature map. What the logits mean (calibration, threshold, advice) is edge_xray.decision's.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import LABELS
from .card import ModelCard
from .errors import ModelError
from .preprocess import quantize

RUNTIME_ENV = "EDGE_XRAY_RUNTIME"
RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = MODELS_DIR / "edge-xray-int8.tflite"


def _import_interpreter(name: str):
    if name == "ai_edge_litert":
        from ai_edge_litert.interpreter import Interpreter
    elif name == "tflite_runtime":
        from tflite_runtime.interpreter import Interpreter
    else:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def interpreter_class():
    """(Interpreter class, runtime name) of the lightest runtime installed, in the order RUNTIMES.

    EDGE_XRAY_RUNTIME (one of RUNTIMES) picks one explicitly. In a process that has already imported
    TensorFlow (training, conversion, evaluation of Keras models), its own interpreter is used: two
    TFLite builds in one process conflict.
    """
    wanted = os.environ.get(RUNTIME_ENV)
    if wanted and wanted not in RUNTIMES:
        raise ModelError(f"{RUNTIME_ENV}={wanted}: choose from {', '.join(RUNTIMES)}")
    order = [wanted] if wanted else ["tensorflow"] if "tensorflow" in sys.modules else RUNTIMES
    for name in order:
        try:
            return _import_interpreter(name), name
        except ImportError:
            continue
    if wanted:
        raise ModelError(f"{RUNTIME_ENV}={wanted}, but {wanted} is not installed")
    raise ModelError(no_runtime_message())


def no_runtime_message(machine: str | None = None) -> str:
    """What to install, in one line, when no runtime imports (issue 14: 32-bit has no LiteRT)."""
    machine = machine or platform.machine()
    if machine.lower() in ("armv7l", "armv6l", "armhf", "arm"):
        return (f"no TFLite runtime installed, and LiteRT has no {machine} (32-bit) build: install a "
                "64-bit OS (Raspberry Pi OS 64-bit runs on Pi 3, 4, 5 and Zero 2 W), then "
                "pip install 'edge-xray[edge]'")
    return "no TFLite runtime installed: pip install 'edge-xray[edge]' (installs ai-edge-litert)"


def _load_interpreter(flatbuffer: bytes, threads: int | None = None):
    """(allocated interpreter, runtime name, XNNPACK applied: True, False or None if unknown)."""
    Interpreter, runtime = interpreter_class()
    try:
        # issue 14: only the runtime's INFO line about its CPU delegate is dropped; any other line
        # (e.g. "Error in cpuinfo: ...", which means no XNNPACK) still reaches stderr
        with _filtered_stderr() as seen:
            it = Interpreter(model_content=flatbuffer, num_threads=threads or default_threads())
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"not a valid TFLite model ({str(e).splitlines()[0]})") from None
    if seen is None:
        return it, runtime, None
    # the runtime logs the INFO line once per process: later interpreters of the same runtime have the
    # delegate too, unless this one printed an error (e.g. "Error in cpuinfo", which means no XNNPACK)
    if XNNPACK_INFO in seen:
        _XNNPACK_SEEN.add(runtime)
    applied = runtime in _XNNPACK_SEEN and not any("rror" in line for line in seen)
    return it, runtime, applied


XNNPACK_INFO = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
_XNNPACK_SEEN: set = set()  # runtimes that reported their XNNPACK delegate in this process


@contextlib.contextmanager
def _filtered_stderr(drop=(XNNPACK_INFO,)):
    """Capture C-level writes to stderr (fd 2) for the duration, then write them back without the
    lines in DROP. Yields the list of captured lines (filled on exit), or None when fd 2 cannot be
    captured (no real fd 2, e.g. under a test runner's capture; no capture file): then nothing is filtered.

    The capture is an anonymous in-memory file (memfd), never a file on disk: the device may run from a
    read-only file system with no writable temporary folder (issue 20)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield None
        return
    sink = _capture_file()
    if sink is None:
        os.close(saved)
        yield None
        return
    lines: list[str] = []
    with sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())
            kept = [line for line in lines if line.strip() not in drop]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def _capture_file():
    """A binary file for the capture that writes nothing to any file system: a memfd (Linux), else an
    unnamed temporary file; None when neither can be made (then stderr is left as it is)."""
    try:
        return os.fdopen(os.memfd_create("edge-xray-stderr", getattr(os, "MFD_CLOEXEC", 0)), "w+b")
    except (AttributeError, OSError):
        pass
    try:
        return tempfile.TemporaryFile()
    except OSError:  # FileNotFoundError "No usable temporary directory" included
        return None


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class Model:
    """A model file with its card, ready to run on prepared images.

    Subclasses say what they are: LABELS (the card's labels, one logit each), KIND (for messages) and
    DEFAULT (the bundled file)."""

    LABELS = LABELS
    KIND = "pneumonia screening model"
    DEFAULT = DEFAULT_MODEL

    def __init__(self, path=None, threads: int | None = None, flatbuffer: bytes | None = None):
        """PATH (default: the bundled model) with its card; or FLATBUFFER alone, not yet carded
        (conversion uses that to inspect and run a model it has just made)."""
        if flatbuffer is None:
            self.path = self._resolve(path).resolve()
            flatbuffer, self.card = ModelCard.read(self.path)
            if self.card.labels != tuple(self.LABELS) and (self.card.labels or self.LABELS != LABELS):
                article = "an" if self.KIND[0] in "aeiou" else "a"
                raise ModelError(f"{self.path.name}: not {article} {self.KIND} (labels {list(self.card.labels)}, expected "
                                 f"{list(self.LABELS)})")
            self.sha256 = self.card.sha256
        else:
            self.path, self.card, self.sha256 = Path("<converted>"), ModelCard({}), None
        self.threads = threads or default_threads()
        try:
            self.interpreter, self.runtime, self.xnnpack = _load_interpreter(flatbuffer, self.threads)
        except ModelError as e:
            raise ModelError(f"{self.path.name}: {e}") from None
        inp = self.interpreter.get_input_details()
        if len(inp) != 1 or len(inp[0]["shape"]) != 4:
            raise ModelError(f"{self.path.name}: expected one image input, got {len(inp)} inputs")
        self.input = inp[0]
        self.size = int(self.input["shape"][1])
        self.outputs = {}
        for d in self.interpreter.get_output_details():
            self.outputs["features" if len(d["shape"]) == 4 else "logits"] = d
        n = len(self.LABELS)
        if "logits" not in self.outputs or int(self.outputs["logits"]["shape"][-1]) != n:
            raise ModelError(f"{self.path.name}: expected {n} logits ({', '.join(map(str, self.LABELS)).lower()})")

    @classmethod
    def _resolve(cls, path) -> Path:
        if path is not None:
            return Path(path)
        if not cls.DEFAULT.exists():
            raise ModelError(f"no bundled {cls.KIND} in this installation: give one with --model FILE")
        return cls.DEFAULT

    @property
    def quantized(self) -> bool:
        return self.input["dtype"] != np.float32

    def _input_tensor(self, x: np.ndarray) -> np.ndarray:
        x = x.reshape(self.input["shape"]).astype(np.float32)
        if self.quantized:
            scale, zp = self.input["quantization"]
            return quantize(x, scale, zp, self.input["dtype"])
        return x

    def _output(self, name):
        d = self.outputs[name]
        y = self.interpreter.get_tensor(d["index"])
        if d["dtype"] != np.float32:
            scale, zp = d["quantization"]
            y = (y.astype(np.float32) - zp) * np.float32(scale)
        return y[0]

    def run(self, x: np.ndarray, features: bool = False):
        """Prepared image (size, size) in [0, 1] -> logits (3,), and the feature map if asked."""
        self.interpreter.set_tensor(self.input["index"], self._input_tensor(x))
        self.interpreter.invoke()
        logits = self._output("logits")
        if features:
            return logits, (self._output("features") if "features" in self.outputs else None)
        return logits
