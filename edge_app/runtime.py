"""The TFLite interpreter on the device: ai_edge_litert, then tflite_runtime, then tensorflow.lite.

`Model` loads a network with its card (checked by sha256, validated by `ModelCard`), maps the prepared
grey image to the model's input as the card says (value range, grey replicated to RGB), quantizes it
with the model's own input scale and zero point, and returns dequantized logits and the last feature
map. A model whose output is already a softmax or a sigmoid (a builder's classifier) gives logits that
softmax back to the same probabilities. A `.tflite` without a card can be opened with `Model.uncarded`
(labels, input range and output kind given). What the logits mean (calibration, threshold, advice) is
edge_xray.decision's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import LABELS
from .card import ModelCard, embedded_card, side_card_path
from .errors import ModelError
from .preprocess import quantize

RUNTIME_ENV = "EDGE_XRAY_RUNTIME"
RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
MODELS_DIR = Path(__file__).parent / "models"
MIN_PROBABILITY = 1e-7  # a softmax or sigmoid output of 0 (int8 can give one) becomes this before its log
PASS_THROUGH_OPS = ("QUANTIZE", "DEQUANTIZE", "RESHAPE")  # ops between a model's activation and its output
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
def captured_stderr():
    """Capture C-level writes to stderr (fd 2) for the duration. Yields the list of captured lines
    (filled on exit), or None when fd 2 cannot be captured (no real fd 2, e.g. under a test runner's
    capture; no capture file). The one capture of the project: the runtime's lines here, the TFLite
    converter's in edge_xray.convert.

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


@contextlib.contextmanager
def _filtered_stderr(drop=(XNNPACK_INFO,)):
    """captured_stderr, then the captured lines written back to stderr without the lines in DROP."""
    lines = None
    try:
        with captured_stderr() as lines:
            yield lines
    finally:  # also when the body raised: the runtime's own error lines are never hidden
        kept = [line for line in lines or () if line.strip() not in drop]
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


def input_values(x: np.ndarray, channels: int, value_range=(0.0, 1.0)) -> np.ndarray:
    """Prepared grey image(s) (..., size, size) in [0, 1] -> a model's float input (..., size, size,
    CHANNELS): levels mapped to VALUE_RANGE, grey replicated to each channel (calibration uses it too)."""
    lo, hi = (np.float32(v) for v in value_range)
    x = lo + np.asarray(x, np.float32)[..., None] * (hi - lo)
    return np.repeat(x, channels, axis=-1) if channels > 1 else x


def as_logits(y: np.ndarray, kind: str) -> np.ndarray:
    """A class output (..., k) of KIND (edge_xray.card.OUTPUT_KINDS) as logits that softmax to the same
    probabilities: a softmax's log-probabilities, a sigmoid's [0, logit p]; logits as they are."""
    y = np.asarray(y, np.float32)
    if kind == "softmax":
        return np.log(np.clip(y, MIN_PROBABILITY, 1.0))
    if kind == "sigmoid":
        p = np.clip(y[..., :1], MIN_PROBABILITY, 1.0 - MIN_PROBABILITY)
        return np.concatenate([np.zeros_like(p), np.log(p / (1.0 - p))], axis=-1)
    return y


class Model:
    """A model file with its card, ready to run on prepared images.

    Subclasses say what they are: LABELS (the card's labels, one logit each; None: any classifier, its
    labels from the card), KIND (for messages) and DEFAULT (the bundled file). A card without labels
    means the bundled model's (edge_xray.LABELS)."""

    LABELS = None
    KIND = "image classifier"
    DEFAULT = DEFAULT_MODEL

    def __init__(self, path=None, threads: int | None = None, flatbuffer: bytes | None = None,
                 card: dict | None = None):
        """PATH (default: the bundled model) with its card; or FLATBUFFER alone with CARD (default: none
        yet; conversion uses that to inspect and run a model it has just made)."""
        flatbuffer_only = flatbuffer is not None
        if flatbuffer is None:
            self.path = self._resolve(path).resolve()
            flatbuffer, self.card = ModelCard.read(self.path)
            if self.LABELS is not None and self.card.labels != tuple(self.LABELS):
                article = "an" if self.KIND[0] in "aeiou" else "a"
                raise ModelError(f"{self.path.name}: not {article} {self.KIND} (labels {list(self.card.labels)}, "
                                 f"expected {list(self.LABELS)})")
            self.sha256 = self.card.sha256
        else:
            self.path, self.card, self.sha256 = Path(path or "<converted>"), ModelCard(card or {}), None
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
        if self.input["shape"][1] != self.input["shape"][2] or self.input["shape"][3] not in (1, 3):
            raise ModelError(f"{self.path.name}: expected a square grey or RGB image input, got shape "
                             f"{[int(v) for v in self.input['shape']]}")
        self.channels = int(self.input["shape"][3])
        self.outputs = {}
        for d in self.interpreter.get_output_details():
            self.outputs["features" if len(d["shape"]) == 4 else "logits"] = d
        if "logits" not in self.outputs:
            raise ModelError(f"{self.path.name}: no class output (only a feature map)")
        self.output_kind = self.card.output_kind
        width = int(self.outputs["logits"]["shape"][-1])
        if flatbuffer_only and not self.card.labels:  # not yet carded: one class per output
            self.labels = tuple(f"class{i}" for i in range(width))
        else:
            self.labels = self.card.labels or tuple(self.LABELS or LABELS)
        n = 1 if self.output_kind == "sigmoid" else len(self.labels)
        if width != n:
            raise ModelError(f"{self.path.name}: expected {n} outputs ({', '.join(map(str, self.labels)).lower()}), "
                             f"got {width}")
        lo, hi = self.card.input_range
        self._lo, self._span = np.float32(lo), np.float32(hi - lo)

    @classmethod
    def uncarded(cls, path, labels=None, input_range=(0.0, 1.0), output: str = "auto", threads: int | None = None):
        """A .tflite file: with its card when it has one (the card wins), else with the LABELS (default:
        class0, class1, ...), INPUT_RANGE and OUTPUT kind (auto: from the model's last op) given here."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelError(f"cannot read model {path}: {e.strerror or e}") from None
        if embedded_card(data) is not None or side_card_path(path).exists():
            return cls(path, threads=threads)
        probe = cls(path, threads=threads, flatbuffer=data)  # to count the outputs and find the last op
        if output == "auto":
            output = probe.last_activation()
        width = int(probe.outputs["logits"]["shape"][-1])
        if labels is None:
            labels = [f"class{i}" for i in range(2 if output == "sigmoid" else width)]
        card = {"labels": list(labels), "output": output, "input": {"range": [float(v) for v in input_range]}}
        m = cls(path, threads=threads, flatbuffer=data, card=card)
        m.path, m.sha256 = path.resolve(), hashlib.sha256(data).hexdigest()
        return m

    def last_activation(self) -> str:
        """softmax, sigmoid or logits: the op that makes the class output (passing over (de)quantize)."""
        try:
            ops = self.interpreter._get_ops_details()
        except AttributeError:  # a runtime without op details: the card or --outputs must say
            return "logits"
        index = self.outputs["logits"]["index"]
        for _ in range(len(ops)):
            op = next((o for o in ops if index in list(o["outputs"])), None)
            if op is None:
                break
            if op["op_name"] not in PASS_THROUGH_OPS:
                return {"SOFTMAX": "softmax", "LOGISTIC": "sigmoid"}.get(op["op_name"], "logits")
            index = list(op["inputs"])[0]
        return "logits"

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

    def model_input(self, x: np.ndarray) -> np.ndarray:
        """Prepared grey image(s) (..., size, size) in [0, 1] -> the model's float input values."""
        return input_values(x, self.channels, (self._lo, self._lo + self._span))

    def _input_tensor(self, x: np.ndarray) -> np.ndarray:
        x = self.model_input(x).reshape(self.input["shape"]).astype(np.float32)
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
        """Prepared image (size, size) in [0, 1] -> logits (one per label), and the feature map if asked."""
        self.interpreter.set_tensor(self.input["index"], self._input_tensor(x))
        self.interpreter.invoke()
        logits = as_logits(self._output("logits"), self.output_kind)
        if features:
            return logits, (self._output("features") if "features" in self.outputs else None)
        return logits
