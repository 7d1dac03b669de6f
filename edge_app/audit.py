"""Append-only, tamper-evident audit trail: one JSON line per input, flushed and fsynced.

Recorded: time (UTC), input sha256 (of the bytes that were screened, read once), model sha256 and
version, whether the model is one the package ships (`model_verified`), site sha256, status, result or
refusal reason, threshold, note. Never pixel data, never file names, never DICOM tags.

Chain: every entry carries `prev_sha256`, the sha256 of the previous line's bytes (without its newline);
the first entry carries GENESIS, the sha256 of no bytes. Changing, inserting or deleting a line breaks the
chain at the next line, which `verify` (`edge-xray audit verify FILE`) reports. Cutting lines off the end
leaves a valid chain: compare the last entry's sha256 that `verify` prints with one kept elsewhere.
Two processes may append to one log: each append holds an exclusive lock (fcntl.flock) from reading
the last line to the fsync of the new one.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os

from .errors import InputError, UsageError

KEYS = ("status", "label", "pneumonia_probability", "pneumonia_type", "type_probability", "threshold", "error",
        "site_sha256", "model_verified", "note")
GENESIS = hashlib.sha256(b"").hexdigest()  # prev_sha256 of the first entry
TAIL_BLOCK = 4096


def line_sha256(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _last_line(fd) -> bytes | None:
    """The last line of the open file FD (without its newline; a final partial line counts), or None."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return None
    pos, buf = end, b""
    while pos > 0:
        step = min(TAIL_BLOCK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        body = buf[:-1] if buf.endswith(b"\n") else buf
        cut = body.rfind(b"\n")
        if cut >= 0:
            return body[cut + 1:]
    return buf[:-1] if buf.endswith(b"\n") else buf


class AuditLog:
    def __init__(self, path, model):
        self.path = path
        if os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path):
            raise UsageError(f"cannot write the audit log {path}: not a regular file")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise UsageError(f"cannot write the audit log {path}: {e.strerror or e}") from None
        self.model_sha256 = model.sha256
        self.model_version = model.card.get("version")

    def write(self, screening) -> str:
        """Append the entry of SCREENING; returns the sha256 of the line written (the next entry's
        `prev_sha256`, and what a referral slip quotes)."""
        from .output import WriteError, printable

        row = printable(screening)
        entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                 "input_sha256": row.get("input_sha256"), "model_sha256": self.model_sha256,
                 "model_version": self.model_version, **{k: row.get(k) for k in KEYS}}
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                last = _last_line(self.fd)
                end = os.lseek(self.fd, 0, os.SEEK_END)
                partial = end > 0 and os.pread(self.fd, 1, end - 1) != b"\n"
                entry["prev_sha256"] = GENESIS if last is None else line_sha256(last)
                line = json.dumps(entry).encode("utf-8")
                data = (b"\n" if partial else b"") + line + b"\n"
                try:
                    self._write(data)
                    self._sync()
                except OSError:
                    try:
                        os.ftruncate(self.fd, end)
                    except OSError:
                        pass
                    raise
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError as e:
            raise WriteError(f"cannot write the audit log {self.path} ({e.strerror or e}): the batch stopped; "
                             "every entry before this one is kept") from None
        return line_sha256(line)

    def _write(self, data: bytes):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def _sync(self):
        os.fsync(self.fd)

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


def verify(path) -> dict:
    """Check the chain of the audit log PATH. Returns {entries, last_sha256}; InputError (exit 3) naming
    the first line that breaks it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"cannot read the audit log {path}: {e.strerror or e}") from None
    prev = GENESIS
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines and lines[-1]:
        pass  # a last line without its newline is checked like the others (and fails if cut short)
    for n, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
            got = entry.get("prev_sha256") if isinstance(entry, dict) else None
        except ValueError:
            raise InputError(f"{path}: line {n} is broken: not a JSON entry (cut short or altered)") from None
        if got is None:
            raise InputError(f"{path}: line {n} is broken: no prev_sha256 (written without the chain, or altered)")
        if got != prev:
            what = "the log's start" if n == 1 else f"line {n - 1}"
            raise InputError(f"{path}: line {n} is broken: its prev_sha256 does not match {what} "
                             "(a line was changed, inserted or removed)")
        prev = line_sha256(line)
    return {"entries": len(lines), "last_sha256": prev if lines else None}
