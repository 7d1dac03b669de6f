"""Append-only audit trail: one JSON line per input, flushed and fsynced.

Recorded: time (UTC), input sha256 (of the bytes that were screened, read once), model sha256 and
version, site sha256, status, result or refusal reason, threshold. Never pixel data, never file
names, never DICOM tags.
"""

from __future__ import annotations

import datetime as dt
import json
import os

from .errors import UsageError

KEYS = ("status", "label", "pneumonia_probability", "pneumonia_type", "type_probability", "threshold", "error",
        "site_sha256")


class AuditLog:
    def __init__(self, path, model):
        try:
            self.f = open(path, "a", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot write the audit log {path}: {e.strerror or e}") from None
        self.model_sha256 = model.sha256
        self.model_version = model.card.get("version")

    def write(self, screening):
        row = screening.to_dict()
        entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                 "input_sha256": row.get("input_sha256"), "model_sha256": self.model_sha256,
                 "model_version": self.model_version, **{k: row.get(k) for k in KEYS}}
        self.f.write(json.dumps(entry) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()
