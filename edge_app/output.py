"""What `edge-xray classify` writes: the human line, and result files (CSV or JSONL) row by row."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from .errors import UsageError
from .screen import FIELDS, Screening

OUTPUT_SUFFIXES = (".csv", ".jsonl")


def human_line(s: Screening) -> str:
    """One line for the person at the device."""
    if s.status == "rejected":
        return f"{s.path}: REJECTED - {s.error}"
    if s.status != "ok":
        return f"{s.path}: ERROR - {s.error}"
    p = s.pneumonia_probability
    turned = (f" [file turned {s.orientation_corrected} degrees clockwise: screened upright]"
              if s.orientation_corrected else "")
    if s.label == "PNEUMONIA":
        return f"{s.path}: PNEUMONIA p={p:.2f} ({s.pneumonia_type} {s.type_probability:.2f}) - {s.advice}{turned}"
    return f"{s.path}: NORMAL p={p:.2f} - {s.advice}{turned}"


class RowWriter:
    """Writes screenings to CSV or JSONL (by extension) one by one, flushed and fsynced."""

    def __init__(self, path):
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in OUTPUT_SUFFIXES:
            raise UsageError(f"--output must end in .csv or .jsonl (got {self.path.name})")
        self.kind = ext[1:]
        try:
            self.f = open(self.path, "w", newline="", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot write {self.path}: {e.strerror or e}") from None
        if self.kind == "csv":
            self.csv = csv.DictWriter(self.f, fieldnames=FIELDS, extrasaction="ignore")
            self.csv.writeheader()

    def write(self, s: Screening):
        row = s.to_dict()
        if self.kind == "csv":
            self.csv.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in FIELDS})
        else:
            self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()
