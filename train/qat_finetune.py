"""Quantization-aware fine-tuning of a builder's Keras classifier (tensorflow-model-optimization).

tfmot works on tf_keras (Keras 2) models only. A Keras 3 model is rebuilt as tf_keras from its
configuration (`tf_keras_twin`: the layer configs and graph links rewritten to the Keras 2 form, then
its weights copied); a model whose layers tf_keras or tfmot cannot take is refused with one line
saying what to do. The fine-tuning itself (`finetune`) is a few epochs at a small learning rate on
prepared images, with the loss that matches the model's output (logits, softmax or one sigmoid).
edge_xray.convert.qat runs it and converts the result; nothing here imports the conversion stage.
"""

from __future__ import annotations

import numpy as np

from edge_xray.errors import ModelError

from .tfcompat import tf_keras, tfmot

LEARNING_RATE = 1e-4  # fine-tuning: small steps from the trained weights
BATCH_SIZE = 16
DROP_KEYS = ("optional", "quantization_config", "lora_rank", "lora_alpha")  # Keras 3 config keys tf_keras lacks


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


MODEL_CLASSES = ("Functional", "Sequential", "Model")
REBUILD_SECONDS = 120  # tf_keras loops forever on a graph it cannot link: give up after this


def _tensor_ref(t, nested: set) -> list:
    """A Keras 3 `__keras_tensor__` reference -> tf_keras's [layer, node, tensor, {}]. A nested model's
    first node in tf_keras is its own construction, so its calls count from 1 there (from 0 in Keras 3)."""
    layer, node, index = t["config"]["keras_history"]
    return [layer, node + (1 if layer in nested else 0), index, {}]


def _refs(arg, nested: set) -> list:
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        return [_tensor_ref(arg, nested)]
    if isinstance(arg, (list, tuple)):
        return [r for a in arg for r in _refs(a, nested)]
    return []


def _layer_config(cfg: dict) -> dict:
    """A Keras 3 layer config for tf_keras. Initializers become "zeros" (the trained weights are copied
    in afterwards); regularizers and constraints are dropped (their configs differ between versions)."""
    cfg = {k: v for k, v in cfg.items() if k not in DROP_KEYS}
    for k in list(cfg):
        if k.endswith("_initializer") and cfg[k] is not None:
            cfg[k] = "zeros"
        elif k.endswith(("_regularizer", "_constraint")):
            cfg[k] = None
    if isinstance(cfg.get("layer"), dict):  # a wrapper (e.g. TimeDistributed): its inner layer
        cfg["layer"] = dict(cfg["layer"], config=_layer_config(cfg["layer"].get("config", {})))
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):  # a DTypePolicy -> its name
        cfg["dtype"] = dtype.get("config", {}).get("name", "float32")
    if "batch_shape" in cfg:
        cfg["batch_input_shape"] = cfg.pop("batch_shape")
    return cfg


def _is_augmentation(layer: dict) -> bool:
    """A random augmentation layer's config (RandomFlip, ...), or a Sequential made of them."""
    if str(layer.get("class_name", "")).startswith("Random"):
        return True
    inner = layer.get("config", {}).get("layers") if layer.get("class_name") == "Sequential" else None
    return bool(inner) and all(_is_augmentation(x) for x in inner if x.get("class_name") != "InputLayer")


def keras2_config(config: dict) -> dict:
    """A Keras 3 functional or sequential model config in the tf_keras form (nested models too). Random
    augmentation layers become pass-throughs (they do nothing at inference; fine-tuning runs without them)."""
    out = dict(config)
    layers = []
    nested = {x.get("config", {}).get("name", x.get("name")) for x in config["layers"]
              if x.get("class_name") in MODEL_CLASSES and not _is_augmentation(x)}
    for layer in config["layers"]:
        layer = dict(layer)
        inner = layer.get("config", {})
        if _is_augmentation(layer):
            layer["class_name"] = "Activation"
            layer["config"] = {"name": inner.get("name", layer.get("name")), "activation": "linear", "trainable": False}
        elif layer.get("class_name") in MODEL_CLASSES:
            layer["config"] = keras2_config(inner)
        else:
            layer["config"] = _layer_config(inner)
        layer.pop("module", None)
        layer.pop("registered_name", None)
        layer.pop("build_config", None)
        if "inbound_nodes" in layer:
            layer["inbound_nodes"] = [_refs(node.get("args", []), nested) if isinstance(node, dict) else node
                                      for node in layer["inbound_nodes"]]
        layers.append(layer)
    out["layers"] = layers
    for key in ("input_layers", "output_layers"):
        v = config.get(key)
        if v and isinstance(v[0], str):  # one tensor [name, node, index] -> a list of them
            v = [v]
        if v:
            out[key] = [[name, node + (1 if name in nested else 0), index] for name, node, index in v]
    return out


def tf_keras_twin(model):
    """A tf_keras model with the architecture and weights of a Keras 3 MODEL; ModelError if it cannot be."""
    import threading

    _, keras = tf_keras()
    kind = type(model).__name__
    done: dict = {}

    def rebuild():
        try:
            config = keras2_config(model.get_config())
            twin = keras.Sequential.from_config(config) if kind == "Sequential" else keras.Model.from_config(config)
            twin.set_weights(model.get_weights())
            done["twin"] = twin
        except Exception as e:  # deserialization raises many types
            done["error"] = _first_line(e)

    worker = threading.Thread(target=rebuild, daemon=True)  # daemon: a graph tf_keras cannot link spins forever
    worker.start()
    worker.join(REBUILD_SECONDS)
    if "twin" not in done:
        why = done.get("error", f"tf_keras did not finish linking its graph in {REBUILD_SECONDS} s")
        raise ModelError(f"cannot rebuild this Keras 3 model as tf_keras for quantization-aware training ({why}): "
                         "rebuild it with `import tf_keras as keras`, load its weights, save it as .h5 and pass that")
    return done["twin"]


def quantize(model):
    """MODEL (tf_keras) wrapped for quantization-aware training; ModelError for layers tfmot cannot take."""
    mot = tfmot()
    try:
        return mot.quantization.keras.quantize_model(model)
    except Exception as e:  # tfmot raises ValueError/RuntimeError with long texts
        hint = ("build it flat (e.g. MobileNetV2(input_tensor=x, include_top=False)) or convert it with "
                "post-training quantization alone" if "inside another" in str(e)
                else "convert it with post-training quantization alone")
        raise ModelError(f"tensorflow-model-optimization cannot make this model quantization-aware "
                         f"({_first_line(e)}): {hint}") from None


def loss_for(output_kind: str):
    _, keras = tf_keras()
    if output_kind == "sigmoid":
        return keras.losses.BinaryCrossentropy()
    return keras.losses.SparseCategoricalCrossentropy(from_logits=output_kind == "logits")


def finetune(qat_model, x: np.ndarray, y: np.ndarray, epochs: int, output_kind: str, seed: int = 0,
             batch_size: int = BATCH_SIZE, learning_rate: float = LEARNING_RATE, verbose: int = 0) -> list[float]:
    """Fine-tune QAT_MODEL on model inputs X and class indices Y for EPOCHS; returns the loss per epoch."""
    tf, keras = tf_keras()
    tf.random.set_seed(seed)
    qat_model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss_for(output_kind))
    target = y.astype(np.float32)[:, None] if output_kind == "sigmoid" else y
    hist = qat_model.fit(x, target, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose)
    return [round(float(v), 5) for v in hist.history["loss"]]
