"""`edge-xray convert`: a model to a fully integer TFLite file, or its float32 / float16 twin.

The model is a run's QAT model, or any image classifier a builder has (edge_xray.convert.sources: a
Keras 3 `.keras`, a tf_keras `.h5`, a SavedModel folder). INT8 preset: int8 weights and activations,
int8 input and output, builtin int8 ops only (no float fallback), ranges from quantization-aware
training (a run) and CALIBRATION_STEPS images of the representative set (a `calibrate` file or a folder
of images, edge_xray.convert.representative), mapped to the model's input as its card says (value range,
channels). The float32 twin is the same network with the QAT weights and no quantization, for parity
checks on the device. The out-of-distribution gate is fitted by default (from --gate-data, else the
representative set). Each file is written with its card (beside it and embedded).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from edge_xray import LABELS, __version__
from edge_xray.card import ModelCard
from edge_xray.decision import ScreeningLabels
from edge_xray.errors import InputError, ModelError, UsageError
from edge_xray.preprocess import file_sha256
from edge_xray.runtime import captured_stderr
from edge_xray.train.model import arch_of, build_model
from edge_xray.train.rundir import RunDir
from edge_xray.train.tfcompat import tf_keras

from . import sources

CALIBRATION_STEPS = 300  # representative images fed to the converter
MODES = ("int8", "float32", "float16")
MODEL_NAME = "edge-xray-pneumonia"
BUILDER_VERSION = "1.0"  # the card's version of a builder's model, unless given
MIN_GATE_IMAGES = 20  # representative images below which no gate is fitted
RECOMMENDED_GATE_IMAGES = 200
GATE_VAL_EVERY = 4  # every 4th representative image is held out to set the gate's thresholds
PREPROCESSING = (
    "edge_xray.preprocess: decode, EXIF transpose, 8-bit grayscale (16-bit rescaled from its range), "
    "square bilinear resize, histogram equalisation, x = level / 255"
)



def run_model_file(source: Path) -> Path:
    """The qat.h5 of a run folder (ModelError when it has none)."""
    run = RunDir(source)
    if not run.qat_model.exists():
        if run.finished:
            raise ModelError(f"{source}: a float-only run (--qat-epochs 0, e.g. a teacher): no qat.h5 "
                             f"(evaluate its float.h5; a teacher is not for the device)")
        raise ModelError(f"{source}: no qat.h5 in this folder (is it a finished `edge-xray train` run?)")
    return run.qat_model


def load_source(source):
    """(Keras model, run dir or None) of a run folder or a Keras model file (edge_xray.convert.sources)."""
    src = sources.load_source(source)
    if src.flavour == "saved_model":
        raise ModelError(f"{src.path.name}: a SavedModel without Keras metadata is converted as it is; "
                         "it cannot be run here as a Keras model")
    return src.model, src.run


def is_qat(model) -> bool:
    return any(type(l).__name__.startswith("Quantize") for l in model.layers)


def float_twin(model):
    """The float network with the weights of MODEL (QAT wrappers stripped)."""
    if not is_qat(model):
        return model
    arch = arch_of(model)
    if arch is None:
        raise ModelError(f"cannot strip quantization: {model.name} was not built by `edge-xray train`")
    plain = build_model(model.input_shape[1], arch)
    trained = {w.name.removeprefix("quant_"): w for w in model.weights}
    for w in plain.weights:
        src = trained.get(w.name)
        if src is None or tuple(src.shape) != tuple(w.shape):
            raise ModelError(f"cannot strip quantization: no weight {w.name} in the QAT model")
        w.assign(src)
    return plain


def export_model(model):
    """The model with two outputs: logits and the last feature map (for heatmaps and OOD)."""
    _, keras = tf_keras()
    feats = sources.feature_map(model)
    if feats is None:
        return model
    return keras.Model(model.input, [model.output, feats])


def _quantize_settings(conv, mode: str, calibration):
    """Set CONV up for MODE: the INT8 preset (CALIBRATION: the model's float inputs), or float16."""
    tf, _ = tf_keras()
    if mode == "int8":
        if calibration is None or len(calibration) == 0:
            raise ModelError("--int8 needs a calibration set with images (--calibration)")
        cal = calibration[:CALIBRATION_STEPS]

        def representative():
            for x in cal:
                yield [x[None].astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    elif mode == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    return conv


def convert_network(model, mode: str, calibration: np.ndarray | None) -> bytes:
    """A tf_keras network to a TFLite flatbuffer: MODE int8 (the INT8 preset above), float32 or float16."""
    tf, _ = tf_keras()
    return _quantize_settings(tf.lite.TFLiteConverter.from_keras_model(model), mode, calibration).convert()


def _why(e: Exception) -> str:
    text = str(e)
    if "Random" in text or "Stateless" in text:
        return ("it has random ops, e.g. augmentation layers inside a nested model: move RandomFlip, "
                "RandomRotation, ... out of the model, or to its top level")
    return sources._first_line(e)


def _convert_source(src, network, mode: str, calibration) -> bytes:
    """SRC's network (NETWORK() builds it: sources.network) to a flatbuffer; one line for a network that
    cannot be built for inference or that TFLite cannot take."""
    try:
        net = network()
    except Exception as e:  # Keras raises many types for a graph it cannot rebuild
        raise ModelError(f"{src.path.name}: cannot build its inference network ({sources._first_line(e)})") from None
    conv, tmp = sources.converter(src, net)
    try:
        with captured_stderr():  # the converter's C++ log lines: kept off the terminal (one line says the outcome)
            return _quantize_settings(conv, mode, calibration).convert()
    except ModelError:
        raise
    except Exception as e:  # the converter raises many types, with long texts
        raise ModelError(f"{src.path.name}: TFLite cannot convert it to {mode} ({_why(e)})") from None
    finally:
        if tmp is not None:
            tmp.cleanup()


def float_tensors(net) -> list[str]:
    """Names of float32 tensors in a converted model (an int8 model must have none)."""
    return [d["name"] for d in net.interpreter.get_tensor_details() if d["dtype"] == np.float32]


def resolve_labels(src, labels, rep) -> list[str]:
    """The class names: LABELS (a list, or 'a,b,c'), else the run's, else the representative folder's
    class sub-folders, else the calibrate file's (Kermany) names for 2 or 3 classes."""
    n = 2 if src.output_kind == "sigmoid" else src.width
    if isinstance(labels, str):
        labels = [x.strip() for x in labels.split(",") if x.strip()]
    if labels:
        if len(labels) != n:
            raise UsageError(f"--labels names {len(labels)} classes but the model has {n}")
        if len(set(labels)) != len(labels):
            raise UsageError("--labels: every class needs its own name")
        return list(labels)
    if src.flavour == "run":
        return list(LABELS)
    if rep is not None and rep.record.get("source") == "folder of images" and rep.class_names:
        if len(rep.class_names) != n:
            raise UsageError(f"the representative folder has {len(rep.class_names)} class folders "
                             f"({', '.join(rep.class_names)}) but the model has {n} classes: give --labels")
        return list(rep.class_names)
    if rep is not None and n in (2, 3) and rep.class_names:
        return list(LABELS) if n == 3 else ["NORMAL", "PNEUMONIA"]
    raise UsageError(f"the model has {n} classes: name them with --labels A,B,... (in the order of its outputs)")


def _gate_images(gate_data, size: int):
    """Prepared images of a folder for the gate fit (any layout, up to FIT_IMAGES)."""
    from edge_xray.calibration.gate import FIT_IMAGES

    from .representative import from_folder

    return from_folder(gate_data, size, count=FIT_IMAGES).x


def fit_builder_gate(converted, x) -> dict:
    """Gate parameters from prepared images X (every GATE_VAL_EVERY-th one held out to set the thresholds)."""
    from edge_xray.calibration.gate import fit_from_features

    if len(x) < MIN_GATE_IMAGES:
        raise InputError(f"the gate needs at least {MIN_GATE_IMAGES} representative images (got {len(x)}; "
                         f"{RECOMMENDED_GATE_IMAGES} or more recommended), or convert with --no-gate")
    feats = [np.asarray(converted.run(xi, features=True)[1], np.float32) for xi in x]
    val = np.arange(len(x)) % GATE_VAL_EVERY == GATE_VAL_EVERY - 1
    return fit_from_features([x[i] for i in np.flatnonzero(~val)], [feats[i] for i in np.flatnonzero(~val)],
                             [x[i] for i in np.flatnonzero(val)], [feats[i] for i in np.flatnonzero(val)])


def convert(source, out, mode: str = "int8", calibration=None, version: str | None = None,
            float_model: str | None = None, gate_data=None, labels=None, input_range=None,
            gate: bool = True) -> dict:
    """Convert SOURCE (a run folder, a Keras 3 / tf_keras model file, a SavedModel folder) to OUT
    (.tflite) with its card; returns the card.

    CALIBRATION: the representative set, a `calibrate` file or a folder of images (class sub-folders);
    needed for int8 and for the gate. LABELS: the class names (default: the run's, or the folder's class
    names). INPUT_RANGE: the model's input values for levels 0 and 1 of the prepared image (default
    (0, 1)). GATE: fit the out-of-distribution gate of a screening model (from GATE_DATA, a folder of
    scans, else from the representative set); the screening commands refuse a screening model without
    one unless --no-gate. A plain classifier (other labels) gets no gate: only screening uses it.
    """
    from edge_xray.runtime import Model

    from .representative import load as load_representative

    if mode not in MODES:
        raise ModelError(f"unknown mode {mode}")
    src = sources.load_source(source)
    rep = load_representative(calibration, src.size) if calibration is not None else None
    names = resolve_labels(src, labels, rep)
    lo, hi = (0.0, 1.0) if input_range is None else (float(input_range[0]), float(input_range[1]))
    if not lo < hi:
        raise UsageError(f"--input-range: low must be below high (got {lo}, {hi})")
    spec = {"labels": names, "output": src.output_kind, "input": {"range": [lo, hi]}}
    if mode == "int8" and rep is None:
        raise UsageError("--int8 needs --calibration (a folder of images, or a file from `edge-xray calibrate`)")
    model = src.model
    if src.flavour == "run" and mode != "int8":
        model = float_twin(model)
    cal = None
    if rep is not None:
        from edge_xray.runtime import input_values

        cal = input_values(rep.x, src.channels, (lo, hi))
    if src.flavour == "saved_model":
        flatbuffer = _convert_source(src, lambda: None, mode, cal)
    elif src.flavour == "run":
        flatbuffer = _convert_source(src, lambda: export_model(model), mode, cal)
    else:
        flatbuffer = _convert_source(src, lambda: sources.network(src, model), mode, cal)
    if src.flavour == "saved_model":  # no Keras layers to read: the converted model's last op says
        spec["output"] = Model(flatbuffer=flatbuffer).last_activation() if src.width > 1 else "sigmoid"
    converted = Model(flatbuffer=flatbuffer, card=spec)  # TensorFlow is loaded: tf.lite's interpreter
    if mode == "int8":
        left = float_tensors(converted)
        if left:
            raise ModelError(f"conversion left {len(left)} float tensors (e.g. {left[0]}): not fully integer")
    if src.flavour == "run":
        card = make_card(model, src.run, mode, converted, rep.record if rep else None, version or __version__)
    else:
        card = make_builder_card(src, spec, mode, converted, rep.record if rep else None, version or BUILDER_VERSION)
    if float_model:
        card["float_model"] = float_model
    if gate and "features" in converted.outputs and ScreeningLabels.of(names) is not None:  # only screening gates
        if gate_data is not None and src.run is not None:
            from edge_xray.calibration.gate import fit_gate
            from edge_xray.calibration.reference import fit_reference

            card["gate"] = fit_gate(converted, src.run, gate_data)
            card["reference"] = fit_reference(converted, card, src.run, gate_data)
        elif gate_data is not None:
            card["gate"] = dict(fit_builder_gate(converted, _gate_images(gate_data, src.size)),
                                data="--gate-data folder")
        elif rep is not None:
            card["gate"] = dict(fit_builder_gate(converted, rep.x), data="the representative set")
    return ModelCard.write(out, flatbuffer, card).to_dict()


def _tensor_spec(d) -> dict:
    scale, zp = d["quantization"]
    return {"shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name, "scale": float(scale),
            "zero_point": int(zp)}


def card_head(name: str, version, mode: str, labels, net, *, outputs=None, input_range=(0.0, 1.0),
              preprocessing: str = PREPROCESSING, **input_fields) -> dict:
    """What every card begins with, whichever model it describes (the screening model, a builder's
    classifier, the orientation and intended-use models): identity, format, time, labels, and the input
    and output tensors of NET (a converted edge_xray.runtime.Model; OUTPUTS: a subset of its outputs)."""
    lo, hi = input_range
    return {
        "name": name,
        "version": version,
        "format": f"tflite-{mode}",
        "created": _now(),
        "labels": list(labels),
        "input": dict(_tensor_spec(net.input), range=[float(lo), float(hi)], **input_fields,
                      preprocessing=preprocessing),
        "outputs": {k: _tensor_spec(d) for k, d in (net.outputs if outputs is None else outputs).items()},
    }


def make_card(model, run, mode, converted, record, version) -> dict:
    """The card of a model of the project's own recipe (an `edge-xray train` run)."""
    weights = {w.name.removeprefix("quant_"): w.numpy() for w in model.weights}
    head = sources.class_head(model)
    kernel, bias = (weights["logits/kernel:0"], weights["logits/bias:0"]) if head is None else head
    card = {
        **card_head(MODEL_NAME, version, mode, LABELS, converted),
        "pneumonia_probability": "softmax(logits / temperature + logit_bias)[BACTERIAL] + [VIRAL]",
        "temperature": 1.0,
        "logit_bias": [0.0, 0.0, 0.0],
        "threshold": 0.5,
        "cam": {"kernel": np.round(kernel, 6).tolist(), "bias": np.round(bias, 6).tolist()},
        "intended_use": "Screening aid for pediatric (1-5 years) anterior-posterior chest X-rays; not a diagnosis.",
    }
    if run is not None:
        m, cfg = run.metrics, run.config
        card.update(temperature=m["temperature"], logit_bias=m.get("logit_bias", [0.0, 0.0, 0.0]),
                    threshold=m["threshold"], threshold_rule=m.get("threshold_rule"),
                    calibration_rule=m.get("calibration_rule"),
                    operating_point=m.get("operating_point"))  # issue 9: rule, assumption, expected figures
        card["metrics"] = {
            "data": "patient-level validation split of the training data (see training.data); the QAT model",
            "val": _headline(m["val"]),
            "shift_proxy": _headline(m["shift_proxy"]),
            "train": _headline(m["train"]),
            "ece_before_temperature": m.get("ece_before"),
        }
        t = cfg["train"]
        card["training"] = {"data": cfg["data"], "recipe": t, "model": cfg["model"], "versions": cfg["versions"],
                            "command": (f"edge-xray train DATA_DIR --out RUN_DIR --epochs {t['epochs']} "
                                        f"--qat-epochs {t['qat_epochs']} --image-size {t['image_size']} "
                                        f"--arch {t['arch']} --seed {t['seed']}"
                                        + (f" --split-seed {t['split_seed']}" if t.get("split_seed") is not None else "")
                                        + (f" --limit {t['limit']}" if t.get("limit") else "")
                                        + (f" --shift-swap {t['shift_swap']}" if t.get("shift_swap") else "")),
                            "wall_seconds": m.get("wall_seconds")}
    if record is not None:
        card["calibration"] = dict(record, steps=min(CALIBRATION_STEPS, record["count"]))
    return card


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cam(src, labels) -> dict | None:
    """The head's weights as the heatmap reads them (columns NORMAL, BACTERIAL, VIRAL), or None when the
    head is not global average pooling and one dense layer, or the labels are not a screening set."""
    head = sources.class_head(src.model) if src.flavour != "saved_model" else None
    lab = ScreeningLabels.of(labels)
    if head is None or lab is None:
        return None
    kernel, bias = head
    if src.output_kind == "sigmoid":  # one logit z for PNEUMONIA: columns 0, z, z
        kernel = np.concatenate([np.zeros_like(kernel), kernel, kernel], axis=1)
        bias = np.concatenate([np.zeros_like(bias), bias, bias])
    else:
        cols = [lab.normal] + ([lab.bacterial, lab.viral] if lab.typed else [lab.pneumonia, lab.pneumonia])
        kernel, bias = kernel[:, cols], bias[cols]
    return {"kernel": np.round(kernel, 6).tolist(), "bias": np.round(bias, 6).tolist()}


def make_builder_card(src, spec, mode, converted, record, version) -> dict:
    """The card of a builder's classifier: what it takes and gives, where it came from, how it was made."""
    labels = spec["labels"]
    lab = ScreeningLabels.of(labels)
    lo, hi = spec["input"]["range"]
    preprocessing = (PREPROCESSING.replace("x = level / 255", f"x = {lo:g} + level / 255 * {hi - lo:g}")
                     + (", grey replicated to 3 channels" if src.channels == 3 else ""))
    card = {
        **card_head(src.path.stem if not src.path.is_dir() else src.path.name, version, mode, labels, converted,
                    input_range=(lo, hi), preprocessing=preprocessing, channels=src.channels),
        "output": spec["output"],
        "temperature": 1.0,
        "logit_bias": [0.0] * len(labels),
        "threshold": 0.5,
        "source": {"kind": src.described, "file": src.path.name,
                   **({"sha256": file_sha256(src.path)} if src.path.is_file() else {})},
        "intended_use": ("Not stated by edge-xray: a builder's model, converted as given; its figures are "
                         "its builder's (see `edge-xray evaluate`)."),
    }
    if lab is not None:
        card["pneumonia_probability"] = ("softmax(logits)[BACTERIAL] + [VIRAL]" if lab.typed
                                         else "softmax(logits)[PNEUMONIA]")
    cam = _cam(src, labels)
    if cam is not None:
        card["cam"] = cam
    if record is not None:
        card["calibration"] = dict(record, steps=min(CALIBRATION_STEPS, record["count"]))
    return card


def _headline(r):
    keys = ("n", "accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "ece", "type_I_errors",
            "type_II_errors", "bacterial_vs_viral_accuracy")
    return {k: (round(r[k], 4) if isinstance(r[k], float) else r[k]) for k in keys if k in r}
