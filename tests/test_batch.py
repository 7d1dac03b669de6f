"""Issue 20 row 12 and issue 23: a batch module owns batches; the Screener screens one scan. A person can
follow a batch: a progress line on a terminal (stderr, never stdout) and one summary line at the end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from helpers import child_scan
from edge_xray import batch
from edge_xray.batch import Batch, HeatmapFiles, Progress, Tally, duration
from edge_xray.runtime import DEFAULT_MODEL
from edge_xray.screen import Screening

bundled = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no bundled model")


def run(*args):
    from edge_xray.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def scans(folder, n, bad=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(child_scan(i)).save(folder / f"s{i:02d}.png")
    for i in range(bad):
        (folder / f"z{i}.png").write_bytes(b"not an image")
    return folder


def test_duration_and_tally_wording():
    assert [duration(x) for x in (0.4, 8, 93, 7500)] == ["0 s", "8 s", "1 min 33 s", "2 h 05 min"]
    t = Tally()
    for s in (Screening("a", "ok", urgency="today"), Screening("b", "ok", urgency="refer"),
              Screening("c", "ok", urgency="none"), Screening("d", "ok", urgency="none"),
              Screening("e", "rejected"), Screening("f", "error")):
        t.add(s)
    assert t.summary() == "summary: 4 screened (1 refer today, 1 refer, 2 no pneumonia found), 1 refused, 1 error"
    assert t.bad == 2 and Tally().summary() == "summary: 0 screened (0 refer today, 0 refer, 0 no pneumonia found), 0 refused, 0 errors"


def test_progress_line_counts_rate_and_time_left():
    clock = iter([0.0, 0.0, 10.0, 10.0, 10.0]).__next__
    out = []

    class Stream:
        def write(self, text):
            out.append(text)

        def flush(self):
            pass

    bar = Progress(500, True, Stream(), clock)
    bar.update(0, force=True)
    bar.update(40, force=True)
    bar.clear()
    assert out == ["\rscreening 0 of 500\x1b[K", "\rscreening 40 of 500, 4.0 per second, about 1 min 55 s left\x1b[K",
                   "\r\x1b[K"]
    silent = []
    hidden = Progress(500, False, Stream())
    hidden.update(3, force=True)
    hidden.clear()
    assert silent == [] and out[-1] == "\r\x1b[K" and len(out) == 3


def test_heatmap_names_are_the_batch_s():
    files = HeatmapFiles("/nowhere")
    assert files.path_for("a/scan.png").name == "scan.heatmap.jpg"
    files.written.add(files.path_for("a/scan.png"))
    assert files.path_for("b/scan.dcm").name == "scan-2.heatmap.jpg"


@bundled
def test_the_screener_keeps_no_batch_state_and_gives_the_distance(tmp_path):
    import edge_xray

    screener = edge_xray.load_model()
    for gone in ("skipped", "resumed", "classify_many_with_distance"):
        assert not hasattr(screener, gone)
    d = scans(tmp_path / "in", 2, bad=1)
    r = screener.assess(d / "s00.png")
    assert r.screening.ok and r.distance is not None and r.heatmap is None
    assert [s.status for s in screener.classify_many([d])] == ["ok", "ok", "error"]  # the API's promise
    (tmp_path / "empty").mkdir()
    b = Batch(screener, [d, tmp_path / "empty"], done={str(d / "s01.png")})
    assert len(b) == 3 and b.resumed == 1  # s00, z0, and the empty folder's error row
    got = list(b)
    assert [x.screening.error for x in got][1:] == ["not an image file (unknown or corrupt format)", "folder holds no images"]
    assert b.tally.errors == 2 and b.tally.screened == 1


@bundled
def test_summary_line_ends_every_batch_with_the_row_counts(tmp_path):
    d = scans(tmp_path / "in", 3, bad=1)
    r = run("classify", d, "--json")
    assert r.exit_code == 3
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    n = {u: sum(x["urgency"] == u for x in rows) for u in ("today", "refer", "none")}
    assert r.stderr.splitlines()[-1] == (f"summary: 3 screened ({n['today']} refer today, {n['refer']} refer, "
                                         f"{n['none']} no pneumonia found), 0 refused, 1 error")
    assert "screening" not in r.stderr and "\r" not in r.stderr + r.stdout  # not a terminal: no progress line


@bundled
def test_progress_on_a_terminal_goes_to_stderr_only(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "_stderr_is_terminal", lambda: True)
    d = scans(tmp_path / "in", 7)
    out = tmp_path / "r.csv"
    r = run("classify", d, "--output", out)
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 7 and "screening" not in r.stdout and "\r" not in r.stdout
    assert r.stderr.startswith("\rscreening 0 of 7\x1b[K") and "\rscreening 7 of 7, " in r.stderr
    last = r.stderr.split("\r\x1b[K")[-1]  # the progress line is cleared before the summary
    assert last.startswith("summary: 7 screened (") and last.endswith("0 refused, 0 errors\n")
    few = scans(tmp_path / "few", 5)
    r = run("classify", few)
    assert "screening" not in r.stderr and r.stderr.startswith("summary: 5 screened")  # five are "a few"


@bundled
def test_heatmaps_are_written_by_the_batch_with_distinct_names(tmp_path):
    a, b = scans(tmp_path / "a", 1), scans(tmp_path / "b", 1)
    r = run("classify", a, b, "--json", "--heatmap", tmp_path / "maps")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    drawn = [x["heatmap"] for x in rows if x["label"] == "PNEUMONIA"]
    assert [p.rsplit("/", 1)[1] for p in drawn] == ["s00.heatmap.jpg", "s00-2.heatmap.jpg"][:len(drawn)]
    assert all(x["heatmap"] is None for x in rows if x["label"] == "NORMAL")
