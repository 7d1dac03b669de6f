"""The worklist kept on the device (edge_app/worklist.py): stored, found, kept for the retention."""

from __future__ import annotations

import datetime as dt
import sqlite3
import stat

import pytest

from edge_xray.errors import UsageError
from edge_xray.screen import FIELDS, Screening
from edge_xray.worklist import DB_NAME, Worklist, check_visit_id, default_data_dir

UTC = dt.timezone.utc
T0 = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(days=3)  # within the retention


def row(name="a.png", urgency="today"):
    return Screening(path=name, status="ok", label="PNEUMONIA", pneumonia_probability=0.9, urgency=urgency,
                     advice="REFER TODAY: signs of pneumonia, likely bacterial (may need antibiotics now)")


def test_entries_are_kept_found_and_survive_a_reopen(tmp_path):
    wl = Worklist(tmp_path)
    a = wl.add(row("a.png"), visit_id="K-1", thumbnail=b"png", heatmap=b"jpg", audit_sha256="ab" * 32, now=T0)
    b = wl.add(row("b.png", "none"), visit_id="K-2", now=T0 + dt.timedelta(hours=1))
    c = wl.add(row("c.png"), now=T0 + dt.timedelta(days=1))
    wl.close()
    wl = Worklist(tmp_path)  # a restart
    assert [e.id for e in wl.find()] == [c.id, b.id, a.id]  # newest first
    assert [e.id for e in wl.find(visit_id="k-1")] == [a.id]  # visit numbers match whatever the case
    assert [e.id for e in wl.find(since=T0 + dt.timedelta(minutes=30))] == [c.id, b.id]
    assert [e.id for e in wl.find(since=T0, until=T0 + dt.timedelta(hours=2))] == [b.id, a.id]
    assert [e.id for e in wl.find(ids=[a.id, c.id])] == [c.id, a.id] and len(wl.find(limit=1)) == 1
    got = wl.get(a.id)
    assert got.thumbnail == b"png" and got.heatmap == b"jpg" and got.audit_sha256 == "ab" * 32
    assert got.screening == row("a.png") and got.screened_at == T0 and got.urgency == "today"
    assert wl.find()[-1].thumbnail is None and wl.find()[-1].has_thumbnail  # lists load no images
    d = got.to_dict()
    assert list(d) == [*FIELDS, "visit_id", "screened_at"] and d["visit_id"] == "K-1"
    assert dt.datetime.fromisoformat(d["screened_at"]) == T0
    assert wl.get(999) is None and wl.count() == 3
    wl.close()


def test_the_file_is_private_and_in_wal_mode(tmp_path):
    wl = Worklist(tmp_path / "new" / "folder")
    path = tmp_path / "new" / "folder" / DB_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert wl.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    wl.add(row())
    other = sqlite3.connect(str(path))  # another process reading while the server writes
    assert other.execute("SELECT COUNT(*) FROM screenings").fetchone()[0] == 1
    other.close()
    wl.close()


def test_retention_deletes_old_entries(tmp_path):
    wl = Worklist(tmp_path, retention_days=90)
    old = wl.add(row("old.png"), now=T0)
    wl.add(row("new.png"), now=T0 + dt.timedelta(days=89))
    assert wl.count() == 2
    wl.add(row("later.png"), now=T0 + dt.timedelta(days=90, minutes=1))  # each new entry purges
    assert [e.screening.path for e in wl.find()] == ["later.png", "new.png"] and wl.get(old.id) is None
    assert wl.purge(T0 + dt.timedelta(days=400)) == 2 and wl.count() == 0
    wl.close()
    with pytest.raises(UsageError):
        Worklist(tmp_path, retention_days=0)


def test_clear_deletes_everything(tmp_path):
    wl = Worklist(tmp_path)
    for i in range(3):
        wl.add(row(f"{i}.png"))
    assert wl.clear() == 3 and wl.find() == []
    wl.close()


@pytest.mark.parametrize("value, expected", [
    ("", None), ("  ", None), (None, None), (" A-0412 ", "A-0412"), ("2026/03/0012", "2026/03/0012"),
    ("Visite 12", "Visite 12"), ("N°12", "N°12"), ("Nº 7", "Nº 7"), ("ÉCOLE-3", "ÉCOLE-3"),
])
def test_visit_numbers_allowed(value, expected):
    assert check_visit_id(value) == expected


@pytest.mark.parametrize("value", ["=1+1", "-12", "@x", "a,b", 'a"b', "a\tb", "a\nb", "x" * 33, "<b>", "#1", "_x"])
def test_visit_numbers_refused(value):
    with pytest.raises(ValueError, match="visit number"):
        check_visit_id(value)


def test_default_folder_is_per_user(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "edge-xray"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "edge-xray"
