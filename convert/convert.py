"""`edge-xray convert`: a run's QAT model to a fully integer TFLite file, or its float32 twin.

INT8 preset: int8 weights and activations, int8 input and output, builtin int8 ops only (no float
fallback), ranges from quantization-aware training and CALIBRATION_STEPS images of the
representative set. The float32 twin is the same network with the QAT weights and no quantization,
for parity checks on the device. Each file is written with its card (beside it and embedded).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from edge_xray import LABELS, __version__
from edge_xray.card import ModelCard
from edge_xray.errors import ModelError
from edge_xray.train.model import arch_of, build_model
from edge_xray.train.rundir import RunDir
from edge_xray.train.tfcompat import load_keras_model, tf_keras

CALIBRATION_STEPS = 300  # representative images fed to the converter
MODES = ("int8", "float32", "float16")
MODEL_NAME = "edge-xray-pneumonia"
PREPROCESSING = (
    "edge_xray.preprocess: decode, EXIF transpose, 8-bit grayscale (16-bit rescaled from its range), "
    "square bilinear resize, histogram equalisation, x = level / 255"
)



def _run_files(source: Path):
    """(qat model path, RunDir or None) for a run folder or a model file."""
    if source.is_dir():
        run = RunDir(source)
        if not run.qat_model.exists():
            if run.finished:
                raise ModelError(f"{source}: a float-only run (--qat-epochs 0, e.g. a teacher): no qat.h5 "
                                 f"(evaluate its float.h5; a teacher is not for the device)")
            raise ModelError(f"{source}: no qat.h5 in this folder (is it a finished `edge-xray train` run?)")
        return run.qat_model, run
    if not source.exists():
        raise ModelError(f"{source}: no such file or folder")
    return source, RunDir.of_model(source)


def load_source(source):
    """(keras model, run dir) of a run folder or .h5 file; checks it is one of ours."""
    path, run = _run_files(Path(source))
    try:
        model = load_keras_model(path)
    except Exception as e:  # Keras raises many types for files that are not models
        raise ModelError(f"{path.name}: not a readable Keras model ({str(e).splitlines()[0][:120]})") from None
    check_ours(model, path.name)
    return model, run


def check_ours(model, name):
    shape = tuple(model.input_shape)
    out = tuple(model.output_shape) if not isinstance(model.output_shape, list) else None
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1 or out is None or out[-1] != 3:
        raise ModelError(f"{name}: not an edge-xray model (expected input (S, S, 1) and 3 logits, got "
                           f"{shape} -> {out})")


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
    feats = next((l for l in model.layers if getattr(l, "layer", l).name == "features"), None)
    if feats is None:
        return model
    return keras.Model(model.input, [model.output, feats.output])


def convert_network(model, mode: str, calibration: np.ndarray | None) -> bytes:
    """A Keras network to a TFLite flatbuffer: MODE int8 (the INT8 preset above), float32 or float16."""
    tf, _ = tf_keras()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
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
    return conv.convert()


def float_tensors(net) -> list[str]:
    """Names of float32 tensors in a converted model (an int8 model must have none)."""
    return [d["name"] for d in net.interpreter.get_tensor_details() if d["dtype"] == np.float32]


def convert(source, out, mode: str = "int8", calibration=None, version: str = __version__,
            float_model: str | None = None, gate_data=None) -> dict:
    """Convert SOURCE (run folder or .h5) to OUT (.tflite) with its card; returns the card."""
    from edge_xray.calibration.calibrate import load_calibration

    if mode not in MODES:
        raise ModelError(f"unknown mode {mode}")
    model, run = load_source(source)
    cal_x, manifest = (None, None)
    if calibration is not None:
        cal_x, manifest = load_calibration(calibration)
        if cal_x.shape[1] != model.input_shape[1]:
            raise ModelError(f"calibration set is {cal_x.shape[1]} px but the model takes {model.input_shape[1]} px")
    if mode == "int8":
        if cal_x is None:
            raise ModelError("--int8 needs --calibration CALIB (make one with `edge-xray calibrate`)")
        net = export_model(model)
    else:
        net = export_model(float_twin(model))
    flatbuffer = convert_network(net, mode, cal_x)
    from edge_xray.runtime import Model

    converted = Model(flatbuffer=flatbuffer)  # TensorFlow is loaded here, so this is tf.lite's interpreter
    if mode == "int8":
        left = float_tensors(converted)
        if left:
            raise ModelError(f"conversion left {len(left)} float tensors (e.g. {left[0]}): not fully integer")
    card = make_card(model, run, mode, converted, manifest, version)
    if float_model:
        card["float_model"] = float_model
    if gate_data is not None:
        if run is None:
            raise ModelError("--gate-data needs a run folder as the source (its split gives the validation scans)")
        from edge_xray.calibration.gate import fit_gate

        card["gate"] = fit_gate(converted, run, gate_data)
        from edge_xray.calibration.reference import fit_reference

        card["reference"] = fit_reference(converted, card, run, gate_data)
    return ModelCard.write(out, flatbuffer, card).to_dict()


def _tensor_spec(d) -> dict:
    scale, zp = d["quantization"]
    return {"shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name, "scale": float(scale),
            "zero_point": int(zp)}


def make_card(model, run, mode, converted, manifest, version) -> dict:
    inp = dict(_tensor_spec(converted.input), range=[0.0, 1.0], preprocessing=PREPROCESSING)
    outs = {name: _tensor_spec(d) for name, d in converted.outputs.items()}
    weights = {w.name.removeprefix("quant_"): w.numpy() for w in model.weights}
    kernel, bias = weights["logits/kernel:0"], weights["logits/bias:0"]
    card = {
        "name": MODEL_NAME,
        "version": version,
        "format": f"tflite-{mode}",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "labels": list(LABELS),
        "pneumonia_probability": "softmax(logits / temperature + logit_bias)[BACTERIAL] + [VIRAL]",
        "input": inp,
        "outputs": outs,
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
                                        + "".join(f" --teacher {name}" for name in t.get("teachers") or ())
                                        + (f" --distill-alpha {t['distill_alpha']} --distill-temperature "
                                           f"{t.get('distill_temperature', 1.0)}" if t.get("teachers") else "")
                                        + (f" --limit {t['limit']}" if t.get("limit") else "")
                                        + (f" --shift-swap {t['shift_swap']}" if t.get("shift_swap") else "")),
                            "wall_seconds": m.get("wall_seconds")}
    if manifest is not None:
        card["calibration"] = {"npz_sha256": manifest["npz_sha256"], "count": manifest["count"],
                               "per_label": manifest["per_label"], "seed": manifest["seed"],
                               "steps": min(CALIBRATION_STEPS, manifest["count"])}
    return card


def _headline(r):
    keys = ("n", "accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "ece", "type_I_errors",
            "type_II_errors", "bacterial_vs_viral_accuracy")
    return {k: (round(r[k], 4) if isinstance(r[k], float) else r[k]) for k in keys if k in r}
