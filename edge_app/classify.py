"""Screen chest X-rays with a TFLite model: the library behind `edge-xray classify`."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from . import PNEUMONIA_TYPES
from .metrics import softmax
from .preprocess import ImageError, list_images, load_image, prepare
from .runtime import Model

FIELDS = ("path", "status", "label", "pneumonia_probability", "pneumonia_type", "type_probability",
          "threshold", "advice", "error", "model_sha256")
ADVICE = {
    "bacterial": "REFER TODAY: signs of pneumonia, likely bacterial (may need antibiotics now)",
    "viral": "REFER: signs of pneumonia, likely viral",
    "normal": "No pneumonia found by the screen; follow clinical signs and re-check if unwell",
    "rejected": "Not screened: {reason}",
    "error": "Not screened: {reason}",
}


def interpret(model: Model, logits: np.ndarray) -> dict:
    """Logits -> label, calibrated probabilities, type and advice (the model card's temperature and threshold)."""
    probs = softmax(logits, model.temperature, model.logit_bias)
    p = float(probs[1] + probs[2])
    if p >= model.threshold:
        t = 1 if probs[1] >= probs[2] else 2
        kind = PNEUMONIA_TYPES[t]
        return {"label": "PNEUMONIA", "pneumonia_probability": round(p, 4), "pneumonia_type": kind,
                "type_probability": round(float(probs[t] / max(p, 1e-12)), 4), "advice": ADVICE[kind]}
    return {"label": "NORMAL", "pneumonia_probability": round(p, 4), "pneumonia_type": None,
            "type_probability": None, "advice": ADVICE["normal"]}


def _row(model: Model, path, **fields) -> dict:
    row = {"path": str(path), "status": "ok", "label": None, "pneumonia_probability": None,
           "pneumonia_type": None, "type_probability": None, "threshold": model.threshold,
           "advice": None, "error": None, "model_sha256": model.sha256}
    row.update(fields)
    return row


def _refused(model: Model, path, status: str, reason: str) -> dict:
    return _row(model, path, status=status, error=reason, advice=ADVICE[status].format(reason=reason))


def classify_file(model: Model, path, gate=None, heatmap_dir=None, heatmaps_written: set | None = None) -> dict:
    """One input -> one result row (never raises for a bad image)."""
    try:
        im = load_image(path, model.size)
        x = prepare(im, model.size)
    except ImageError as e:
        return _refused(model, path, "error", str(e))
    logits, features = model.run(x, features=True)
    if gate is not None:
        reason = gate.check(im, x, features)
        if reason:
            return _refused(model, path, "rejected", reason)
    row = _row(model, path, **interpret(model, logits))
    if heatmap_dir is not None and features is not None:
        from .heatmap import save_heatmap

        try:
            written = save_heatmap(model, im, features, row, heatmap_dir, path, heatmaps_written)  # issue 11: None for NORMAL
            row["heatmap"] = str(written) if written else None
        except OSError as e:
            row["heatmap"], row["heatmap_error"] = None, f"cannot write heatmap ({e.strerror or e})"
    return row


def classify(paths, model=None, threads: int | None = None, gate=True, heatmap_dir=None):
    """Yield one result row per image found in PATHS (files and folders, recursed), in order."""
    m = model if isinstance(model, Model) else Model(model, threads=threads)
    g = None
    if gate:
        from .gate import Gate

        g = Gate.from_card(m.card)
    written: set = set()
    for p in paths:
        files = list_images([p])
        if not files:
            yield _refused(m, p, "error", "folder holds no images")
        for f in files:
            yield classify_file(m, f, g, heatmap_dir, written)


class RowWriter:
    """Writes result rows to CSV or JSONL (by extension) one by one, flushed and fsynced."""

    def __init__(self, path):
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in (".csv", ".jsonl", ".json"):
            raise ValueError(f"--output must end in .csv or .jsonl (got {self.path.name})")
        self.kind = "csv" if ext == ".csv" else "jsonl"
        self.f = open(self.path, "w", newline="", encoding="utf-8")
        if self.kind == "csv":
            self.csv = csv.DictWriter(self.f, fieldnames=FIELDS, extrasaction="ignore")
            self.csv.writeheader()

    def write(self, row: dict):
        if self.kind == "csv":
            self.csv.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in FIELDS})
        else:
            self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


def human_line(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['path']}: {row['status'].upper()} - {row['error']}"
    p = row["pneumonia_probability"]
    if row["label"] == "PNEUMONIA":
        return (f"{row['path']}: PNEUMONIA p={p:.2f} ({row['pneumonia_type']} {row['type_probability']:.2f}) "
                f"- {row['advice']}")
    return f"{row['path']}: NORMAL p={p:.2f} - {row['advice']}"


