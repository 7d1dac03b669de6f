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

Signatures: when the device has a key (edge_xray.keys; `edge-xray key init`), every entry also carries
`key_id` and, as its last field, `signature`: the Ed25519 signature of the line's bytes before
`, "signature"` closed with `}`. The chain is signed with it, so an edited, appended or re-chained line
is caught by whoever lacks the key. Entries written before the key existed verify as unkeyed (and
`verify` says how many); an unsigned entry after a signed one is refused.

Power cuts: a half-written last line (no newline at the end of the file, or a last line that is not a
JSON entry) is moved aside when the log is next opened: its bytes go to LOG.partial-TIME beside it, a
line on stderr says so, and the next entry records it (`recovered`: side file, bytes, sha256), so the
chain goes on from the last complete line and `verify` passes with a note.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import sys
from pathlib import Path

from .errors import InputError, UsageError

KEYS = ("status", "label", "pneumonia_probability", "pneumonia_type", "type_probability", "threshold", "error",
        "site_sha256", "model_verified", "note")
GENESIS = hashlib.sha256(b"").hexdigest()  # prev_sha256 of the first entry
TAIL_BLOCK = 4096
SIGNATURE_FIELD = b', "signature": "'  # the last field of a signed line
PARTIAL_SUFFIX = ".partial-"  # LOG.partial-20261202T001500Z: a half-written last line moved aside


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


def signed_bytes(line: bytes) -> tuple[bytes, str] | None:
    """(the bytes a signed LINE's signature covers, the signature), or None for an unsigned line."""
    cut = line.rfind(SIGNATURE_FIELD)
    if cut < 0 or not line.endswith(b'"}'):
        return None
    return line[:cut] + b"}", line[cut + len(SIGNATURE_FIELD):-2].decode("ascii", "replace")


def _entry_or_none(line: bytes):
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _side_file(path) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    side, n = Path(f"{path}{PARTIAL_SUFFIX}{stamp}"), 1
    while side.exists():
        n += 1
        side = Path(f"{path}{PARTIAL_SUFFIX}{stamp}-{n}")
    return side


class AuditLog:
    """An audit log open for appending. KEY: an edge_xray.keys.DeviceKey to sign with (default: this
    device's key, when it has one; False: none)."""

    def __init__(self, path, model, key=None):
        self.path = path
        if os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path):
            raise UsageError(f"cannot write the audit log {path}: not a regular file")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise UsageError(f"cannot write the audit log {path}: {e.strerror or e}") from None
        self.model_sha256 = model.sha256
        self.model_version = model.card.get("version")
        if key is None:
            from .keys import load_key

            key = load_key()
        self.key = key or None
        self.recovered = None  # the half-written line moved aside, recorded by the next entry
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                self._move_partial_aside()
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError as e:
            raise UsageError(f"cannot repair the audit log {self.path}: {e.strerror or e}") from None

    def _move_partial_aside(self):
        """Under the lock: move a half-written last line (a power cut mid-write) aside (module docstring)."""
        end = os.lseek(self.fd, 0, os.SEEK_END)
        if end == 0:
            return
        complete = os.pread(self.fd, 1, end - 1) == b"\n"
        last = _last_line(self.fd)
        if complete and _entry_or_none(last) is not None:
            return
        cut = end - len(last) - (1 if complete else 0)
        tail = os.pread(self.fd, end - cut, cut)
        side = _side_file(self.path)
        side.write_bytes(tail)
        os.ftruncate(self.fd, cut)
        os.fsync(self.fd)
        self.recovered = {"side_file": side.name, "bytes": len(tail), "sha256": hashlib.sha256(tail).hexdigest()}
        print(f"{self.path}: a half-written last line ({len(tail)} bytes, a power cut?) was moved aside to "
              f"{side.name}; the chain goes on from the line before it", file=sys.stderr)

    def write(self, screening) -> str:
        """Append the entry of SCREENING; returns the sha256 of the line written (the next entry's
        `prev_sha256`, and what a referral slip quotes)."""
        from .output import WriteError, append_synced, printable

        row = printable(screening)
        entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                 "input_sha256": row.get("input_sha256"), "model_sha256": self.model_sha256,
                 "model_version": self.model_version, **{k: row.get(k) for k in KEYS}}
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                self._move_partial_aside()
                if self.recovered:
                    entry["recovered"] = self.recovered
                last = _last_line(self.fd)
                entry["prev_sha256"] = GENESIS if last is None else line_sha256(last)
                line = self._line(entry)
                append_synced(self.fd, line + b"\n", self._sync)
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError as e:
            raise WriteError(f"cannot write the audit log {self.path} ({e.strerror or e}): the batch stopped; "
                             "every entry before this one is kept") from None
        self.recovered = None
        return line_sha256(line)

    def _line(self, entry: dict) -> bytes:
        if self.key is None:
            return json.dumps(entry).encode("utf-8")
        body = json.dumps({**entry, "key_id": self.key.id}).encode("utf-8")
        signature = self.key.sign(body)
        return body[:-1] + SIGNATURE_FIELD + signature.encode("ascii") + b'"}'

    def _sync(self):
        os.fsync(self.fd)

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


def _check_signature(n: int, line: bytes, entry: dict, public, state: dict) -> str | None:
    """The reason line N breaks the signatures, or None; counts in STATE."""
    signed = signed_bytes(line)
    if signed is None:
        if state["signed"]:
            return (f"line {n} is not signed, but line {state['first_signed']} before it is: "
                    "added or altered without the device key")
        state["unkeyed"] += 1
        return None
    body, signature = signed
    state["signed"] += 1
    state.setdefault("first_signed", n)
    kid = entry.get("key_id")
    state["key_ids"].add(kid)
    if public is None:
        return None
    if kid != public.id:
        return f"line {n} is signed by another key ({kid}; this key is {public.id})"
    if not public.verify(body, signature):
        return f"line {n} is broken: its signature does not match (the line was altered)"
    state["verified"] += 1
    return None


def verify(path, key=None) -> dict:
    """Check the chain (and the signatures) of the audit log PATH. KEY: the public key to check with (a
    path, or an edge_xray.keys.PublicKey; default: this device's key, if any). Returns {entries,
    last_sha256, signed, unkeyed, verified, key_id, notes}; InputError (exit 3) naming the first line
    that breaks the chain or a signature."""
    from .keys import PublicKey, load_public

    public = key if isinstance(key, PublicKey) else load_public(key)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"cannot read the audit log {path}: {e.strerror or e}") from None
    prev, notes = GENESIS, []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines and _entry_or_none(lines[-1]) is None:  # a power cut mid-write: moved aside at the next open
        cut = lines.pop()
        notes.append(f"the last line is half-written ({len(cut)} bytes, a power cut?): the next append moves it aside")
    state = {"signed": 0, "unkeyed": 0, "verified": 0, "key_ids": set()}
    for n, line in enumerate(lines, 1):
        entry = _entry_or_none(line)
        if entry is None:
            raise InputError(f"{path}: line {n} is broken: not a JSON entry (cut short or altered)")
        got = entry.get("prev_sha256")
        if got is None:
            raise InputError(f"{path}: line {n} is broken: no prev_sha256 (written without the chain, or altered)")
        if got != prev:
            what = "the log's start" if n == 1 else f"line {n - 1}"
            raise InputError(f"{path}: line {n} is broken: its prev_sha256 does not match {what} "
                             "(a line was changed, inserted or removed)")
        reason = _check_signature(n, line, entry, public, state)
        if reason:
            raise InputError(f"{path}: {reason}")
        if isinstance(entry.get("recovered"), dict):
            r = entry["recovered"]
            notes.append(f"line {n} records a half-written line ({r.get('bytes')} bytes) moved aside to "
                         f"{r.get('side_file')} after a power cut")
        prev = line_sha256(line)
    kids = sorted(k for k in state["key_ids"] if k)
    return {"entries": len(lines), "last_sha256": prev if lines else None, "signed": state["signed"],
            "unkeyed": state["unkeyed"], "verified": state["verified"], "key_id": kids[0] if kids else None,
            "checked_with": public.id if public is not None else None, "notes": notes}
