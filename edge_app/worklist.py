"""The worklist kept on the device: the screenings made through `edge-xray serve`, in one SQLite file.

    wl = Worklist("~/.local/share/edge-xray")          # DATA_DIR/worklist.sqlite3, WAL
    e = wl.add(screening, visit_id="A-0412", thumbnail=png, heatmap=jpeg, audit_sha256=digest)
    wl.find(visit_id="A-0412"), wl.find(since=..., until=...), wl.get(e.id)

Each entry is a `classify --json` row (the Screening, in English) with the visit number the health
worker typed (optional; no names), the time it was screened (UTC, shown in local time) and the
thumbnail and heatmap the page showed, so that the list and the slips survive a restart. Entries older
than the retention (RETENTION_DAYS, `--retention-days`) are deleted at start and at every new entry.
The audit log stays the tamper-evident record of every screening; this store is the list a clinic
works from, and may be cleared.

The standard library's sqlite3 only; WAL (readers never wait for the writer), `synchronous=NORMAL`
(a power cut may lose the last entries, never corrupt the file); one connection behind a lock, so the
server's threads share it. The folder is made private to this user (0700) and the file 0600.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .screen import FIELDS, Screening

APP_FOLDER = "edge-xray"
DB_NAME = "worklist.sqlite3"
RETENTION_DAYS = 90
MAX_RETENTION_DAYS = 3650
VISIT_ID_MAX = 32
# a visit or case number: letters and digits first, then letters, digits, space and . / # -
VISIT_ID = re.compile(rf"[^\W_][\w ./#°-]{{0,{VISIT_ID_MAX - 1}}}")
LIST_LIMIT = 200  # entries a page or an API call returns at most
SCHEMA = """
CREATE TABLE IF NOT EXISTS screenings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    screened_at TEXT NOT NULL,           -- UTC, ISO 8601 with microseconds and +00:00: sorts as text
    visit_id TEXT,
    row TEXT NOT NULL,                   -- the classify --json row (JSON)
    thumbnail BLOB,
    heatmap BLOB,
    audit_sha256 TEXT
);
CREATE INDEX IF NOT EXISTS screenings_time ON screenings (screened_at);
CREATE INDEX IF NOT EXISTS screenings_visit ON screenings (visit_id, screened_at);
"""
COLUMNS = "id, screened_at, visit_id, row, thumbnail IS NOT NULL, heatmap IS NOT NULL, audit_sha256"


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/edge-xray, else ~/.local/share/edge-xray (the per-user data folder)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / APP_FOLDER


def check_visit_id(value) -> str | None:
    """A visit number as typed (spaces trimmed), or None when empty; ValueError with a one-line reason
    when it is not a short code (a name would usually pass, so the page asks for numbers only)."""
    v = (value or "").strip()
    if not v:
        return None
    if len(v) > VISIT_ID_MAX or not VISIT_ID.fullmatch(v):
        raise ValueError(f"visit number: at most {VISIT_ID_MAX} letters, digits, spaces or . / # -, "
                         "starting with a letter or digit")
    return v


def utc(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Entry:
    """One stored screening."""

    id: int
    screened_at: dt.datetime  # aware, UTC
    visit_id: str | None
    screening: Screening  # `path` is the uploaded file's name
    has_thumbnail: bool = False
    has_heatmap: bool = False
    audit_sha256: str | None = None
    thumbnail: bytes | None = None  # loaded by Worklist.get only
    heatmap: bytes | None = None

    @property
    def urgency(self) -> str | None:
        return self.screening.urgency

    def to_dict(self) -> dict:
        """The classify --json row plus `visit_id` and `screened_at` (ISO 8601, the device's local time
        with its offset)."""
        return {**self.screening.to_dict(), "visit_id": self.visit_id,
                "screened_at": self.screened_at.astimezone().isoformat(timespec="seconds")}


def _screening(row: str) -> Screening:
    data = json.loads(row)
    return Screening(**{k: v for k, v in data.items() if k in FIELDS})


class Worklist:
    """The SQLite store of one data folder."""

    def __init__(self, data_dir, retention_days: int = RETENTION_DAYS):
        if not 1 <= int(retention_days) <= MAX_RETENTION_DAYS:
            raise UsageError(f"--retention-days must be 1 to {MAX_RETENTION_DAYS}")
        self.retention = dt.timedelta(days=int(retention_days))
        self.dir = Path(data_dir).expanduser()
        self.path = self.dir / DB_NAME
        self.lock = threading.Lock()
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # made private before SQLite opens it
            os.close(fd)
            self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise UsageError(f"cannot open the worklist in {self.dir}: {getattr(e, 'strerror', None) or e}") from None
        self.purge()

    def close(self):
        with self.lock:
            self.db.close()

    def _entry(self, r, blobs=None) -> Entry:
        extra = {"thumbnail": blobs[0], "heatmap": blobs[1]} if blobs else {}
        return Entry(r[0], dt.datetime.fromisoformat(r[1]), r[2], _screening(r[3]), bool(r[4]), bool(r[5]), r[6],
                     **extra)

    def add(self, s: Screening, *, visit_id=None, thumbnail=None, heatmap=None, audit_sha256=None,
            now: dt.datetime | None = None) -> Entry:
        """Store S (screened now) and return its Entry; entries past the retention go at the same time."""
        when = now or dt.datetime.now(dt.timezone.utc)
        with self.lock:
            cur = self.db.execute(
                "INSERT INTO screenings (screened_at, visit_id, row, thumbnail, heatmap, audit_sha256) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (utc(when), visit_id, json.dumps(s.to_dict()), thumbnail, heatmap, audit_sha256))
            rid = cur.lastrowid
        self.purge(when)
        return Entry(rid, when.astimezone(dt.timezone.utc), visit_id, s, thumbnail is not None, heatmap is not None,
                     audit_sha256, thumbnail, heatmap)

    def get(self, rid: int) -> Entry | None:
        """The entry RID with its thumbnail and heatmap, or None."""
        with self.lock:
            r = self.db.execute(f"SELECT {COLUMNS}, thumbnail, heatmap FROM screenings WHERE id = ?",
                                (int(rid),)).fetchone()
        return None if r is None else self._entry(r[:7], r[7:])

    def find(self, *, visit_id=None, since=None, until=None, ids=None, limit: int | None = LIST_LIMIT) -> list:
        """Entries newest first (no images loaded): VISIT_ID exactly (case-insensitive), screened at or
        after SINCE and before UNTIL (aware datetimes), among IDS; at most LIMIT (None: all)."""
        where, args = [], []
        if visit_id:
            where.append("visit_id = ? COLLATE NOCASE")
            args.append(visit_id)
        if since is not None:
            where.append("screened_at >= ?")
            args.append(utc(since))
        if until is not None:
            where.append("screened_at < ?")
            args.append(utc(until))
        if ids is not None:
            ids = [int(i) for i in ids][:LIST_LIMIT]
            where.append(f"id IN ({','.join('?' * len(ids)) or 'NULL'})")
            args.extend(ids)
        sql = f"SELECT {COLUMNS} FROM screenings"
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        sql += " ORDER BY screened_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self.lock:
            rows = self.db.execute(sql, args).fetchall()
        return [self._entry(r) for r in rows]

    def count(self) -> int:
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM screenings").fetchone()[0]

    def clear(self) -> int:
        """Delete every entry (the audit log keeps its record); the number deleted."""
        with self.lock:
            n = self.db.execute("DELETE FROM screenings").rowcount
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    def purge(self, now: dt.datetime | None = None) -> int:
        """Delete the entries older than the retention; the number deleted."""
        cutoff = (now or dt.datetime.now(dt.timezone.utc)) - self.retention
        with self.lock:
            return self.db.execute("DELETE FROM screenings WHERE screened_at < ?", (utc(cutoff),)).rowcount
