"""A training run folder: the one place that knows its files, reads and writes them.

  config.json    every hyperparameter, seed, data counts, file-list hash, package versions
  split.json     the patient-level split (patients, counts, validation file keys)
  history.json   one row per epoch, both phases
  metrics.json   validation, shift-proxy and training-set figures of the QAT model, calibration,
                 operating point
  float.h5       the best float model;  qat.h5  the QAT model that `convert` uses (a teacher run,
                 float only, has no qat.h5: its float.h5 is what students distil from)
  state.json, ckpt/   the last checkpoint, for --resume

Needs no TensorFlow: conversion, evaluation, the gate fit and the benchmarks read runs through it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edge_xray.errors import InputError

CONFIG, SPLIT, HISTORY, METRICS, STATE = "config.json", "split.json", "history.json", "metrics.json", "state.json"
FLOAT_MODEL, QAT_MODEL, CHECKPOINTS = "float.h5", "qat.h5", "ckpt"


# An auxiliary model's run folder (train/orientation.py, train/intended_use.py), which
# convert/auxiliary.py turns into an int8 model with its card: qat.h5, these two, and config.json.
AUX_CALIBRATION, AUX_EVALUATION = "calibration.npy", "evaluation.npz"


def write_auxiliary_run(run: Path, qat, calibration, evaluation: dict, config: dict, model, history,
                        t_start: float) -> dict:
    """Write an auxiliary run folder RUN: QAT (the quantization-aware Keras model), CALIBRATION (prepared
    views for the int8 converter), EVALUATION (named arrays), and CONFIG completed with what every
    auxiliary card records: MODEL's size, HISTORY, package versions, the wall time since T_START.
    Returns the config written."""
    import time

    import numpy as np

    from .model import multiply_adds
    from .train import package_versions

    run.mkdir(parents=True, exist_ok=True)
    qat.save(str(run / QAT_MODEL), include_optimizer=False)
    np.save(run / AUX_CALIBRATION, np.asarray(calibration, np.float32))
    np.savez_compressed(run / AUX_EVALUATION, **evaluation)
    config = {**config,
              "model": {"parameters": int(model.count_params()), "multiply_adds": multiply_adds(model),
                        "input": list(model.input_shape[1:])},
              "history": history, "versions": package_versions(), "wall_seconds": round(time.time() - t_start, 1)}
    write_json(run / CONFIG, config)
    return config


def file_key(path) -> str:
    """The key of an image in a Kermany-layout folder, `CLASS_FOLDER/FILE_NAME` (as split.json lists it)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def write_json(path: Path, obj):
    """Write OBJ as JSON atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self):
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self):  # a RunDir is accepted wherever a run folder's path is
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def float_model(self) -> Path:
        return self.path / FLOAT_MODEL

    @property
    def qat_model(self) -> Path:
        return self.path / QAT_MODEL

    @property
    def model(self) -> Path:
        """The run's final model: qat.h5, or float.h5 for a float-only run (a teacher)."""
        return self.qat_model if self.qat_model.exists() else self.float_model

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / name

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    @property
    def started(self) -> bool:
        return self.has(STATE) or self.has(METRICS)

    @property
    def finished(self) -> bool:
        return self.has(METRICS) and (self.has(QAT_MODEL) or self.has(FLOAT_MODEL))

    def read(self, name: str) -> dict:
        p = self.path / name
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            raise InputError(f"{self.path}: no {name} (is it a finished `edge-xray train` run?)") from None
        except ValueError:
            raise InputError(f"{self.path}: {name} is not valid JSON") from None

    def write(self, name: str, obj):
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / name, obj)

    config = property(lambda self: self.read(CONFIG))
    split = property(lambda self: self.read(SPLIT))
    metrics = property(lambda self: self.read(METRICS))
    state = property(lambda self: self.read(STATE))

    def val_files(self) -> set[str]:
        """File keys (see file_key) of the run's validation images."""
        return set(self.split["val_files"])

    @classmethod
    def of_model(cls, model_path) -> "RunDir | None":
        """The run a model file (float.h5, qat.h5) belongs to, or None."""
        run = cls(Path(model_path).parent)
        return run if run.has(METRICS) else None
