"""`edge-xray qat`: quantization-aware fine-tuning of a builder's Keras model, then int8, beside
post-training quantization alone.

The labelled folder (one sub-folder per class) is prepared with the one preprocessing module; every
HOLDOUT_EVERY-th image of each class is held out. The model (a Keras 3 model rebuilt as tf_keras,
edge_xray.train.qat_finetune) is made quantization-aware and fine-tuned for a few epochs on the rest;
then both the original model (post-training quantization, PTQ) and the fine-tuned one (QAT) are
converted to int8 with the same representative set (the folder) and gate. The report gives, on the
held-out images, the accuracy of the float model and of each int8 model, and each int8 model's
agreement with the float model and its largest change of a class probability (max |dp|).

Written to OUT: qat.h5 (the QAT Keras model), ptq-int8.tflite and qat-int8.tflite with their cards,
qat_report.json.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from edge_xray.decision import softmax
from edge_xray.errors import InputError, ModelError

from . import sources
from .representative import from_folder

EPOCHS = 2
HOLDOUT_EVERY = 5  # one image in five of each class is held out for the side-by-side figures
MAX_IMAGES = 5000  # images read from the folder for fine-tuning


def _split(y: np.ndarray) -> np.ndarray:
    """True for held-out images: every HOLDOUT_EVERY-th of each class."""
    held = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        held[idx[HOLDOUT_EVERY - 1::HOLDOUT_EVERY]] = True
    return held


def _truth(data, names, folder) -> np.ndarray:
    """Indices into NAMES of DATA's images, from their class folders."""
    if data.y is None:
        raise InputError(f"{folder}: quantization-aware training needs labelled images (one sub-folder per class)")
    index = {n.upper(): k for k, n in enumerate(names)}
    unknown = [n for n in data.class_names if n.upper() not in index]
    if unknown:
        raise InputError(f"{folder}: class folder(s) {', '.join(unknown)} are not among the labels {', '.join(names)}")
    return np.array([index[data.class_names[c].upper()] for c in data.y])


def _probs(y: np.ndarray, kind: str) -> np.ndarray:
    from edge_xray.runtime import as_logits

    return softmax(as_logits(y, kind))


def _figures(p: np.ndarray, truth: np.ndarray, p_float: np.ndarray | None) -> dict:
    out = {"accuracy": round(float((p.argmax(-1) == truth).mean()), 4)}
    if p_float is not None:
        out["agreement_with_float"] = round(float((p.argmax(-1) == p_float.argmax(-1)).mean()), 4)
        dp = np.abs(p - p_float).max(-1)
        out["max_abs_delta_p"] = round(float(dp.max()), 4)
        out["mean_abs_delta_p"] = round(float(dp.mean()), 5)
    return out


def qat(model, data_dir, out, epochs: int = EPOCHS, labels=None, input_range=None, seed: int = 0,
        eval_data=None) -> dict:
    """Fine-tune MODEL quantization-aware on DATA_DIR, convert it and its PTQ version; the report.
    EVAL_DATA (a labelled folder the model never saw): the figures are taken there, and every image of
    DATA_DIR is used for fine-tuning; without it, on images of DATA_DIR held out from fine-tuning."""
    from edge_xray.runtime import Model, input_values
    from edge_xray.train.qat_finetune import finetune, quantize, tf_keras_twin

    from .convert import convert, resolve_labels

    src = sources.load_source(model)
    if src.flavour == "run":
        raise ModelError(f"{src.path.name}: an `edge-xray train` run is already quantization-aware: convert it")
    if src.flavour == "saved_model":
        raise ModelError(f"{src.path.name}: a SavedModel without Keras metadata cannot be fine-tuned: give the "
                         ".keras or .h5 file")
    base = tf_keras_twin(src.model) if src.flavour == "keras3" else src.model
    data = from_folder(data_dir, src.size, count=MAX_IMAGES, seed=seed)
    names = resolve_labels(src, labels, data)
    truth = _truth(data, names, data_dir)
    lo, hi = input_range or (0.0, 1.0)
    x = input_values(data.x, src.channels, (lo, hi))
    if eval_data is None:
        held = _split(truth)
        if held.sum() == 0 or (~held).sum() == 0:
            raise InputError(f"{data_dir}: too few images to hold some out (need at least {HOLDOUT_EVERY} per class)")
        fit_x, fit_y, ev_grey, ev_y = x[~held], truth[~held], data.x[held], truth[held]
    else:
        ev = from_folder(eval_data, src.size, count=MAX_IMAGES, seed=seed)
        fit_x, fit_y, ev_grey, ev_y = x, truth, ev.x, _truth(ev, names, eval_data)
    ev_x = input_values(ev_grey, src.channels, (lo, hi))
    q = quantize(base)
    losses = finetune(q, fit_x, fit_y, epochs, src.output_kind, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # tf_keras calls .h5 "legacy": it is the format tfmot's loader reads
        warnings.simplefilter("ignore")
        q.save(out / "qat.h5")
    common = dict(mode="int8", calibration=data_dir, labels=names, input_range=(lo, hi))
    convert(src.path, out / "ptq-int8.tflite", **common)
    convert(out / "qat.h5", out / "qat-int8.tflite", **common)
    p_float = _probs(base.predict(ev_x, batch_size=64, verbose=0), src.output_kind)
    figures = {"float (as given)": _figures(p_float, ev_y, None)}
    for name, path in (("int8, post-training quantization", out / "ptq-int8.tflite"),
                       ("int8, quantization-aware fine-tuning", out / "qat-int8.tflite")):
        m = Model(path)
        logits = np.stack([m.run(xi) for xi in ev_grey])
        figures[name] = dict(_figures(softmax(logits), ev_y, p_float), file=path.name,
                             size_bytes=path.stat().st_size)
    report = {"model": str(src.path), "kind": src.described, "data": str(data_dir), "labels": names,
              "train_images": len(fit_y), "held_out_images": len(ev_y), "epochs": epochs,
              "loss_per_epoch": losses, "seed": seed, "figures": figures,
              "figures_on": (f"{eval_data} (all images)" if eval_data is not None else
                             f"the images of {data_dir} held out from fine-tuning (every {HOLDOUT_EVERY}th of each "
                             "class)") + ", prepared as on the device"}
    (out / "qat_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
