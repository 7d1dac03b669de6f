"""What `edge-xray classify` writes: the human line, and result files (CSV or JSONL) row by row.

File names that are not valid UTF-8 (bytes a file system allows but no text encoding can show) are
written with backslash escapes: the byte 0xff becomes the four characters `\\xff`, in the human line,
the `--json` rows, CSV and JSONL alike (`escape`). Every file written is therefore valid UTF-8.
What goes to a terminal is also stripped of its power to move the cursor (`terminal`): control
characters (C0, DEL, C1: a newline, a carriage return, ESC ...), line and paragraph separators and
bidirectional overrides are shown as escapes (`\\n`, `\\r`, `\\x1b`, `\\u202e`), as a JSON row shows
them, so that a file name cannot print a second, forged result line. JSON rows are escaped by
`json.dumps`; CSV quotes such a field (a CSV reader gives the name back as it is).

A result file is never clobbered: an existing one is refused unless the caller asks to resume it (its
rows are read, the inputs already there are skipped, the rest appended; a half-written last line
from a power cut is dropped and its input screened again) or to overwrite it. Rows are written one
at a time, flushed and fsynced; a row that cannot be written (disk full) is taken back whole, so the
file holds only complete rows, and the batch stops with `WriteError`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path

from .errors import EXIT_OTHER, EdgeXrayError, UsageError
from .screen import FIELDS, Screening

OUTPUT_SUFFIXES = (".csv", ".jsonl")
NEW, OVERWRITE, RESUME = "new", "overwrite", "resume"


# bidirectional embeddings, overrides and isolates, and the Unicode line and paragraph separators
_TERMINAL_FORMAT = {0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class WriteError(EdgeXrayError):
    """A result or audit file could not be written mid-batch (disk full, device gone): the batch stops."""

    exit_code = EXIT_OTHER


def append_synced(fd: int, data: bytes, sync=None) -> None:
    """Append DATA to the open file FD whole, then fsync it (SYNC(): another way to, e.g. a test's): the
    one way rows and audit lines are written. On an OSError (disk full, device gone) the part written
    is taken back, so the file keeps only complete lines, and the error is raised."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        (sync or (lambda: os.fsync(fd)))()
    except OSError:
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass
        raise


def escape(text: str) -> str:
    """TEXT as valid UTF-8: bytes of a non-UTF-8 file name (os.fsdecode's surrogates) as `\\xNN`."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _terminal_char(c: str) -> str:
    o = ord(c)
    if c in _SHORT:
        return _SHORT[c]
    if o < 0x20 or 0x7F <= o <= 0x9F:
        return f"\\x{o:02x}"
    if o in _TERMINAL_FORMAT:
        return f"\\u{o:04x}"
    return c


def terminal(text) -> str:
    """TEXT as `escape` gives it, with every character that could move a terminal's cursor or reorder
    its text escaped (see the module's docstring): always one line, shown as written."""
    text = escape(str(text))
    if not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or ord(c) in _TERMINAL_FORMAT for c in text):
        return text
    return "".join(_terminal_char(c) for c in text)


def printable(s: Screening) -> dict:
    """The row of S with every text field escaped (see `escape`): what is printed and written."""
    return {k: (escape(v) if isinstance(v, str) else v) for k, v in s.to_dict().items()}


def human_line(s: Screening, lang: str | None = None) -> str:
    """One line for the person at the device (every text field through `terminal`); LANG: its advice,
    reason and note in that language."""
    if lang:
        from .i18n import localize, translate

        s = localize(s, lang, error=True)
        s = dataclasses.replace(s, note=translate(s.note, lang))
    path = terminal(s.path)
    note = f" ({terminal(s.note)})" if s.note else ""
    if s.status == "rejected":
        return f"{path}: REJECTED - {terminal(s.error or '')}{note}"
    if s.status != "ok":
        return f"{path}: ERROR - {terminal(s.error or '')}{note}"
    p = s.pneumonia_probability
    turned = (f" [file turned {s.orientation_corrected} degrees clockwise: screened upright]"
              if s.orientation_corrected else "")
    if s.label == "PNEUMONIA":
        kind = f" ({s.pneumonia_type} {s.type_probability:.2f})" if s.pneumonia_type else ""  # a two-label model: none
        return f"{path}: PNEUMONIA p={p:.2f}{kind} - {s.advice}{turned}{note}"
    return f"{path}: NORMAL p={p:.2f} - {s.advice}{turned}{note}"


def json_line(s: Screening) -> str:
    return json.dumps(printable(s))


def _csv_line(values: list) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(values)
    return buf.getvalue().encode("utf-8")


CSV_HEADER = _csv_line(list(FIELDS))


def csv_row(s: Screening) -> bytes:
    """One CSV line of `classify --output results.csv` (printable text, empty cells for None)."""
    row = printable(s)
    return _csv_line(["" if row.get(k) is None else row.get(k) for k in FIELDS])


class RowWriter:
    """Writes screenings to CSV or JSONL (by extension) one by one, flushed and fsynced.

    MODE: "new" (the file must not exist), "overwrite", or "resume" (`done` then holds the escaped
    paths of the rows already in the file; `rows` counts every complete row in it).
    """

    def __init__(self, path, mode: str = NEW):
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in OUTPUT_SUFFIXES:
            raise UsageError(f"--output must end in .csv or .jsonl (got {terminal(self.path.name)})")
        self.kind = ext[1:]
        self.done: set = set()
        self.rows = 0
        exists = self.path.exists()
        if exists and not self.path.is_dir() and not self.path.is_file():  # a pipe would block the open
            raise UsageError(f"cannot write {terminal(self.path)}: not a regular file")
        if exists and mode == NEW:
            raise UsageError(f"{terminal(self.path)} exists: give --resume to continue it or --overwrite to replace it")
        if exists and self.path.is_dir():
            raise UsageError(f"cannot write {terminal(self.path)}: is a folder")
        header_needed = True
        if exists and mode == RESUME:
            header_needed = self._read_existing()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if mode == OVERWRITE else 0)
        try:
            self.fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise UsageError(f"cannot write {terminal(self.path)}: {e.strerror or e}") from None
        if self.kind == "csv" and header_needed:
            self._append(CSV_HEADER, what="the header")

    def _read_existing(self) -> bool:
        """Read the rows of an existing file; drop a half-written last line. True if a header is needed."""
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read {terminal(self.path)} to resume it: {e.strerror or e}") from None
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a half-written last row (power cut): drop it, screen its input again
            try:
                os.truncate(self.path, end)
            except OSError as e:
                raise UsageError(f"cannot repair {terminal(self.path)}: {e.strerror or e}") from None
            data = data[:end]
        text = data.decode("utf-8", "replace")
        if not text.strip():
            return True
        if self.kind == "csv":
            reader = csv.DictReader(io.StringIO(text))
            if tuple(reader.fieldnames or ()) != FIELDS:
                raise UsageError(f"{terminal(self.path)} has other columns than this version writes: "
                                 "give --overwrite or another file")
            for row in reader:
                self.done.add(row.get("path"))
                self.rows += 1
            return False
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                self.done.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                raise UsageError(f"{terminal(self.path)} line {n} is not a result row: give --overwrite or "
                                 "another file") from None
            self.rows += 1
        return False

    def _append(self, data: bytes, what: str = "a row"):
        try:
            append_synced(self.fd, data, self._sync)
        except OSError as e:
            raise WriteError(f"cannot write {what} to {terminal(self.path)} ({e.strerror or e}): stopped after "
                             f"{self.rows} rows, all kept; continue with --resume") from None

    def _sync(self):
        os.fsync(self.fd)

    def write(self, s: Screening):
        row = printable(s)
        self._append(csv_row(s) if self.kind == "csv" else (json.dumps(row) + "\n").encode("utf-8"))
        self.rows += 1
        self.done.add(row["path"])

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass
