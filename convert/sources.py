"""A model to convert, whatever file it came in: loaded, checked and turned into a TFLite flatbuffer.

Accepted sources (`load_source`):
- an `edge-xray train` run folder, or its qat.h5 / float.h5 (tf_keras, the project's own recipe);
- a Keras 3 `.keras` file (what TensorFlow 2.16+ saves by default) or a Keras 3 `.h5`;
- a tf_keras (Keras 2) `.h5` or `.keras`, or a SavedModel folder saved by tf_keras;
- a SavedModel folder without Keras metadata (e.g. Keras 3 `model.export()`): converted as it is, with
  no feature map (so no out-of-distribution gate and no heatmap).

Any image classifier: one square image input, grey or RGB, any size; one class output: logits, a softmax,
or one sigmoid (two classes). Anything else is refused with one line saying why (ModelError).

Keras 3 and tf_keras in one process: the project imports TensorFlow with TF_USE_LEGACY_KERAS=1 (so that
`tf.keras` is tf_keras, which tensorflow-model-optimization needs). The `keras` package is still Keras 3,
so a Keras 3 file is loaded with it and converted through `model.export()` (a SavedModel in a temporary
folder) and `TFLiteConverter.from_saved_model`; `from_keras_model` is tf_keras's and is used for tf_keras
models only.

The converted network has two outputs where it can: the class output and the last feature map (the
input of the global pooling or flatten that leads to the head), which the gate and heatmaps use.
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_xray.errors import ModelError
from edge_xray.train.rundir import RunDir

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
POOLING_LAYERS = ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten")
HEAD_PASS_THROUGH = ("Dropout", "Activation", "Softmax")  # layers between global pooling and the class layer


@dataclass
class Source:
    """A loaded model and what conversion needs to know of it."""

    path: Path
    flavour: str  # run, tf_keras, keras3 or saved_model
    model: object  # the Keras model (Keras 3 or tf_keras); the SavedModel folder for saved_model
    run: RunDir | None
    size: int
    channels: int
    width: int  # units of the class output
    output_kind: str  # logits, softmax or sigmoid (edge_xray.card.OUTPUT_KINDS)

    @property
    def described(self) -> str:
        return {"run": "edge-xray train run", "tf_keras": "tf_keras (Keras 2) model", "keras3": "Keras 3 model",
                "saved_model": "SavedModel"}[self.flavour]


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


def _is_keras3_file(path: Path) -> bool:
    """A .keras zip (Keras 3 or tf_keras: the metadata says which) or an .h5 whose keras_version is 3.x."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                import json

                meta = json.loads(z.read("metadata.json"))
            return str(meta.get("keras_version", "3")).startswith("3")
        except (KeyError, ValueError, zipfile.BadZipFile):
            return True
    try:
        import h5py

        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version", "")
        return str(version.decode() if isinstance(version, bytes) else version).startswith("3")
    except (OSError, ImportError):
        return False


def _load_keras3(path: Path):
    from edge_xray.train.tfcompat import tf_keras

    tf_keras()  # TF_USE_LEGACY_KERAS before TensorFlow; `keras` stays Keras 3
    import keras

    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as e:  # Keras raises many types for files that are not models
        raise ModelError(f"{path.name}: not a readable Keras 3 model ({_first_line(e)})") from None


def _load_tf_keras(path: Path):
    from edge_xray.train.tfcompat import load_keras_model

    try:
        return load_keras_model(path)
    except Exception as e:  # Keras raises many types for files that are not models
        raise ModelError(f"{path.name}: not a readable Keras model ({_first_line(e)})") from None


def load_source(source) -> Source:
    """The model at SOURCE (see the module's list), checked to be an image classifier. Raises ModelError."""
    path = Path(source)
    if not path.exists():
        raise ModelError(f"{path}: no such file or folder")
    if path.is_dir():
        run = RunDir(path)
        if run.qat_model.exists() or run.started:
            from .convert import run_model_file

            return _describe(path, "run", _load_tf_keras(run_model_file(path)), run)
        if (path / "saved_model.pb").exists():
            return _saved_model(path)
        raise ModelError(f"{path}: not a model folder (expected an `edge-xray train` run or a SavedModel "
                         "with saved_model.pb)")
    if path.suffix.lower() == ".tflite":
        raise ModelError(f"{path.name} is already a TFLite model: compare, evaluate and bench take it as it is")
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise ModelError(f"{path.name}: not a Keras model file (.keras, .h5) or a SavedModel folder")
    _check_container(path)
    run = RunDir.of_model(path)
    if run is not None:
        return _describe(path, "run", _load_tf_keras(path), run)
    if _is_keras3_file(path):
        return _describe(path, "keras3", _load_keras3(path), None)
    return _describe(path, "tf_keras", _load_tf_keras(path), None)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_container(path: Path):
    """A .keras file is a zip archive and an .h5 an HDF5 file: refuse anything else before TensorFlow loads."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelError(f"cannot read {path.name} ({e.strerror or e})") from None
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"{path.name}: not a Keras model file (a .keras file is a zip archive; this one is "
                         "corrupt or something else)")
    if path.suffix.lower() in (".h5", ".hdf5") and head != HDF5_SIGNATURE:
        raise ModelError(f"{path.name}: not a Keras model file (not an HDF5 file: corrupt or something else)")


def _saved_model(path: Path) -> Source:
    from edge_xray.train.tfcompat import tf_keras

    tf, keras = tf_keras()
    if (path / "keras_metadata.pb").exists():  # saved by tf_keras: a full Keras model
        try:
            return _describe(path, "tf_keras", keras.models.load_model(str(path), compile=False), None)
        except Exception:  # fall back to the plain SavedModel
            pass
    try:
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
    except KeyError:
        raise ModelError(f"{path.name}: the SavedModel has no serving_default signature") from None
    except Exception as e:  # TensorFlow raises many types for a broken folder
        raise ModelError(f"{path.name}: not a readable SavedModel ({_first_line(e)})") from None
    inputs = [s for s in fn.structured_input_signature[1].values()]
    outputs = list(fn.structured_outputs.values())
    if len(inputs) != 1:
        raise ModelError(f"{path.name}: {len(inputs)} inputs; an image classifier has one")
    if len(outputs) != 1:
        raise ModelError(f"{path.name}: {len(outputs)} outputs; an image classifier has one class output")
    size, channels = _check_input(path.name, tuple(inputs[0].shape))
    width = _check_output(path.name, tuple(outputs[0].shape))
    kind = "sigmoid" if width == 1 else "logits"  # refined from the converted model's last op
    return Source(path, "saved_model", path, None, size, channels, width, kind)


def _shape(t) -> tuple:
    return tuple(None if d is None else int(d) for d in t.shape)


def _check_input(name: str, shape: tuple) -> tuple[int, int]:
    if len(shape) != 4:
        raise ModelError(f"{name}: input shape {shape} is not an image (batch, height, width, channels)")
    _, h, w, c = shape
    if h is None or w is None:
        raise ModelError(f"{name}: the input size is not fixed ({shape}): build the model with a fixed square size")
    if h != w:
        raise ModelError(f"{name}: input {h}x{w} is not square: the edge pipeline feeds square images "
                         "(rebuild the model with a square input)")
    if c not in (1, 3):
        raise ModelError(f"{name}: input has {c} channels: grey (1) or RGB (3) only")
    return int(h), int(c)


def _check_output(name: str, shape: tuple) -> int:
    if len(shape) != 2 or shape[-1] is None:
        raise ModelError(f"{name}: output shape {shape} is not a class vector (batch, classes)")
    return int(shape[-1])


def _core(layer):
    return getattr(layer, "layer", layer)  # a QAT wrapper's layer


def _activation(layer) -> str:
    core = _core(layer)
    kind = type(core).__name__
    if kind == "Softmax":
        return "softmax"
    act = getattr(core, "activation", None)
    act = getattr(act, "activation", act)  # a QAT wrapper's QuantizeAwareActivation holds the original
    if callable(act) and getattr(act, "__name__", None):
        return act.__name__.lower()
    try:
        act = core.get_config().get("activation")
    except Exception:  # a layer without a config: its output is taken as logits
        act = None
    if isinstance(act, dict):  # a serialized activation object
        act = act.get("config", {}).get("name") or act.get("class_name")
    return str(act or "linear").lower()


def _describe(path: Path, flavour: str, model, run) -> Source:
    name = path.name
    inputs = getattr(model, "inputs", None) or []
    outputs = getattr(model, "outputs", None) or []
    if len(inputs) != 1:
        raise ModelError(f"{name}: {len(inputs)} inputs; an image classifier has one")
    if len(outputs) != 1:
        raise ModelError(f"{name}: {len(outputs)} outputs; an image classifier has one class output")
    size, channels = _check_input(name, _shape(inputs[0]))
    width = _check_output(name, _shape(outputs[0]))
    act = _activation(model.layers[-1])
    if width == 1:
        if act != "sigmoid":
            raise ModelError(f"{name}: one output with {act} activation is a regression, not a classifier "
                             "(a two-class model ends in 2 units, or in 1 unit with a sigmoid)")
        kind = "sigmoid"
    elif act == "softmax":
        kind = "softmax"
    elif act == "sigmoid":
        raise ModelError(f"{name}: {width} sigmoid outputs is a multi-label model; edge-xray takes single-choice "
                         "classifiers (logits or a softmax)")
    elif act in ("linear", "none"):
        kind = "logits"
    else:
        raise ModelError(f"{name}: its output has a {act} activation: a classifier ends in logits, a softmax "
                         "or one sigmoid")
    return Source(path, flavour, model, run, size, channels, width, kind)


def _latest(layer, which: str):
    """The input or output tensor of LAYER's latest call (a layer reused in a rebuilt graph has the
    original graph's call first)."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if nodes:
        t = getattr(nodes[-1], "input_tensors" if which == "input" else "output_tensors", None)
        if t is None and which == "output":
            t = getattr(nodes[-1], "outputs", None)
        if isinstance(t, (list, tuple)):
            t = t[0] if len(t) == 1 else None
        if t is not None:
            return t
    return getattr(layer, which)


def feature_map(model):
    """The last feature map of a Keras model (a 4-d tensor of its graph), or None.

    The bundled recipe names it `features`; otherwise it is the input of the last global pooling or
    flatten layer, else the output of the last layer with a 4-d output."""
    layers = list(model.layers)
    named = next((layer for layer in layers if _core(layer).name == "features"), None)
    if named is not None:
        return named.output
    for layer in reversed(layers):
        if type(_core(layer)).__name__ in POOLING_LAYERS:
            t = _latest(layer, "input")
            if len(t.shape) == 4:
                return t
    for layer in reversed(layers[1:]):
        if not hasattr(_core(layer), "layers"):  # a nested model's own output is not in this graph
            t = _latest(layer, "output")
            if not isinstance(t, (list, tuple)) and len(t.shape) == 4:
                return t
    return None


def class_head(model):
    """(kernel (channels, classes), bias) of a head made of global average pooling, optional dropout and
    one dense layer (so that class evidence maps, CAM, can be drawn), else None."""
    layers = list(model.layers)
    dense = _core(layers[-1])
    k = len(layers) - 2
    while k > 0 and type(_core(layers[k])).__name__ in HEAD_PASS_THROUGH:
        k -= 1
    if type(dense).__name__ != "Dense" or type(_core(layers[k])).__name__ != "GlobalAveragePooling2D":
        return None
    weights = dense.get_weights()
    if len(weights) != 2:
        return None
    return np.asarray(weights[0], np.float32), np.asarray(weights[1], np.float32)


def _keras_of(src: Source):
    if src.flavour == "keras3":
        import keras

        return keras
    from edge_xray.train.tfcompat import tf_keras

    return tf_keras()[1]


def _is_augmentation(layer) -> bool:
    """A random augmentation layer (RandomFlip, RandomRotation, ...), or a Sequential made of them."""
    if type(layer).__name__.startswith("Random"):
        return True
    inner = getattr(layer, "layers", None)
    return bool(inner) and type(layer).__name__ == "Sequential" and all(_is_augmentation(x) for x in inner)


def without_augmentation(model, keras):
    """MODEL with its top-level random augmentation layers replaced by pass-throughs (they do nothing at
    inference, but their random ops stay in the traced graph and TFLite cannot convert them); the
    other layers, and so their weights, are MODEL's own."""
    if not any(_is_augmentation(layer) for layer in model.layers):
        return model

    class PassThrough(keras.layers.Layer):
        def call(self, inputs, mask=None, training=None):
            return inputs

        def compute_output_shape(self, input_shape):
            return input_shape

    def clone(layer):
        return PassThrough(name=f"{layer.name}_at_inference") if _is_augmentation(layer) else layer

    image = keras.Input(model.inputs[0].shape[1:], name=f"{model.name}_image")  # a fresh, unique input name
    return keras.models.clone_model(model, input_tensors=image, clone_function=clone)


def network(src: Source, model=None):
    """The Keras model to convert (MODEL, default SRC's) for inference (augmentation layers dropped),
    with the feature map as a second output when it has one."""
    keras = _keras_of(src)
    model = without_augmentation(src.model if model is None else model, keras)
    feats = feature_map(model)
    if feats is None:
        return model
    return keras.Model(model.inputs, [model.outputs[0], feats])


def converter(src: Source, net):
    """A tf.lite.TFLiteConverter for NET (from `network`), by the road its Keras version needs."""
    from edge_xray.train.tfcompat import tf_keras

    tf, _ = tf_keras()
    if src.flavour == "saved_model":
        return tf.lite.TFLiteConverter.from_saved_model(str(src.path)), None
    if src.flavour != "keras3":
        return tf.lite.TFLiteConverter.from_keras_model(net), None
    tmp = tempfile.TemporaryDirectory(prefix="edge-xray-export-")
    spec = [tf.TensorSpec([1, src.size, src.size, src.channels], tf.float32)]
    try:
        net.export(tmp.name, format="tf_saved_model", input_signature=spec, verbose=False)
    except TypeError:  # older Keras 3: no verbose argument
        net.export(tmp.name, format="tf_saved_model", input_signature=spec)
    except Exception as e:  # a layer that cannot be traced
        tmp.cleanup()
        raise ModelError(f"{src.path.name}: Keras 3 cannot export it as a SavedModel ({_first_line(e)})") from None
    return tf.lite.TFLiteConverter.from_saved_model(tmp.name), tmp  # keep TMP until the conversion is done
