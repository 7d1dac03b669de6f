"""Append-only audit trail: one JSON line per input, flushed and fsynced.

Recorded: time (UTC), input sha256, model sha256 and version, status, result or refusal reason,
threshold. Never pixel data, never file contents beyond the hash, never DICOM tags.
"""

from __future__ import annotations

import datetime as dt
import json
import os

from .preprocess import file_sha256

KEYS = ("status", "label", "pneumonia_probability", "pneumonia_type", "type_probability", "threshold", "error")


class AuditLog:
    def __init__(self, path, model):
        self.f = open(path, "a", encoding="utf-8")
        self.model_sha256 = model.sha256
        self.model_version = model.card.get("version")

    def write(self, row: dict):
        try:
            digest = file_sha256(row["path"])
        except OSError:
            digest = None
        entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                 "input_sha256": digest, "model_sha256": self.model_sha256,
                 "model_version": self.model_version, **{k: row.get(k) for k in KEYS}}
        self.f.write(json.dumps(entry) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()
