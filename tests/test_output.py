"""What a batch writes, replayed from the adversarial trial (issue 12): rows in CSV and JSONL (file names
that are not UTF-8, an output that exists, a power cut, a full disk, a pipe, a wrong suffix, an input that is
also the output) and heatmap files that cannot be written. One clear line, the documented exit code, no
traceback, every finished row kept."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from helpers import assert_clean, bundled, deadline, full_disk_after, real_scan, run, save_scan


@bundled
def test_non_utf8_file_name_survives_into_csv_jsonl_and_audit_log(tmp_path):
    d = tmp_path / "scans"
    d.mkdir()
    bad = Path(os.fsdecode(os.fsencode(str(d)) + b"/scan\xff.png"))
    save_scan(bad)
    save_scan(d / "z-second.png", seed=1)
    for out in ("r.csv", "r.jsonl"):
        r = run("classify", d, "--output", tmp_path / out, "--audit-log", tmp_path / "audit.log", "--json")
        assert_clean(r)
        assert r.exit_code in (0, 3)
        text = (tmp_path / out).read_bytes().decode("utf-8")  # valid UTF-8
        lines = text.splitlines()
        rows = list(csv.DictReader(lines)) if out.endswith(".csv") else [json.loads(x) for x in lines]
        assert [Path(x["path"]).name for x in rows] == ["scan\\xff.png", "z-second.png"]  # the batch went on
        assert all(x["status"] in ("ok", "rejected") for x in rows)
        assert [json.loads(x)["path"] for x in r.stdout.splitlines()] == [x["path"] for x in rows]
    log = (tmp_path / "audit.log").read_text("utf-8").splitlines()
    assert len(log) == 4 and all("input_sha256" in json.loads(x) for x in log)
    assert run("audit", "verify", tmp_path / "audit.log").exit_code == 0


def test_escape_is_documented_backslash_form():
    from edge_xray.output import escape

    assert escape(os.fsdecode(b"a\xffb\xc3\xa9.png")) == "a\\xffb\u00e9.png"  # bad byte escaped, UTF-8 kept
    assert escape("plain.png") == "plain.png"


@bundled
def test_output_in_missing_folder_is_a_usage_error(tmp_path):
    r = run("classify", save_scan(tmp_path / "a.png"), "--output", tmp_path / "nowhere" / "r.csv")
    assert_clean(r)
    assert r.exit_code == 2 and r.stderr.startswith("Error: cannot write ") and len(r.stderr.splitlines()) == 1


@bundled
@pytest.mark.parametrize("option", ["--output", "--audit-log"])
def test_output_or_audit_log_that_is_a_pipe_or_device_is_refused_without_hanging(tmp_path, option):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    (tmp_path / "full.csv").symlink_to("/dev/full")
    for target in (fifo, tmp_path / "full.csv"):
        with deadline(30):
            r = run("classify", save_scan(tmp_path / "a.png"), option, target,
                    *(["--overwrite"] if option == "--output" else []))
        assert_clean(r)
        assert r.exit_code == 2 and r.stderr.rstrip().endswith(f"{target}: not a regular file")


@bundled
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_full_disk_stops_with_one_line_and_keeps_every_written_row(tmp_path, monkeypatch, suffix):
    from edge_xray.output import RowWriter

    scans = [save_scan(tmp_path / f"s{i}.png", seed=i) for i in range(3)]
    out = tmp_path / f"r{suffix}"
    header = 1 if suffix == ".csv" else 0
    monkeypatch.setattr(RowWriter, "_sync", full_disk_after(header + 1))  # the header and one row fit
    r = run("classify", *scans, "--output", out)
    assert_clean(r)
    assert r.exit_code == 1
    last = r.stderr.splitlines()[-1]
    assert last == (f"Error: cannot write a row to {out} (No space left on device): stopped after 1 rows, all kept; "
                    "continue with --resume")
    lines = out.read_bytes().decode().splitlines()
    assert len(lines) == header + 1 and out.read_bytes().endswith(b"\n")  # no half row
    monkeypatch.undo()
    r = run("classify", *scans, "--output", out, "--resume")  # and the batch can be finished
    assert r.exit_code in (0, 3) and len(out.read_text().splitlines()) == header + 3


@bundled
def test_existing_output_is_refused_unless_resume_or_overwrite(tmp_path):
    scans = [save_scan(tmp_path / f"s{i}.png", seed=i) for i in range(3)]
    out = tmp_path / "r.csv"
    out.write_text("precious\n")
    r = run("classify", scans[0], "--output", out)
    assert_clean(r)
    assert r.exit_code == 2
    assert r.stderr == f"Error: {out} exists: give --resume to continue it or --overwrite to replace it\n"
    assert out.read_text() == "precious\n"
    r = run("classify", scans[0], "--output", out, "--overwrite")
    assert r.exit_code in (0, 3) and len(out.read_text().splitlines()) == 2
    r = run("classify", *scans, "--output", out, "--resume")
    assert r.exit_code in (0, 3)
    assert "resumed: 1 inputs already in" in r.stderr
    assert [row["path"] for row in csv.DictReader(out.open())] == [str(s) for s in scans]


@bundled
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_after_a_power_cut_drops_the_half_written_row(tmp_path, suffix):
    scans = [save_scan(tmp_path / f"s{i}.png", seed=i) for i in range(3)]
    out = tmp_path / f"r{suffix}"
    assert run("classify", *scans[:2], "--output", out).exit_code in (0, 3)
    data = out.read_bytes()
    cut = data[: data.rfind(b"\n", 0, len(data) - 1) + 1] + data[data.rfind(b"\n", 0, len(data) - 1) + 1:][:20]
    out.write_bytes(cut)  # the second row half written
    r = run("classify", *scans, "--output", out, "--resume", "--json")
    assert_clean(r)
    assert [json.loads(x)["path"] for x in r.stdout.splitlines()] == [str(scans[1]), str(scans[2])]
    text = out.read_text()
    rows = list(csv.DictReader(text.splitlines())) if suffix == ".csv" else [json.loads(x) for x in text.splitlines()]
    assert [row["path"] for row in rows] == [str(s) for s in scans]


@bundled
def test_an_input_that_is_also_the_output_is_refused(tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("x\n")
    r = run("classify", out, "--output", out, "--overwrite")
    assert_clean(r)
    assert r.exit_code == 2 and f"{out} is an input and also the file to write" in r.stderr
    assert out.read_text() == "x\n"


@bundled
def test_output_json_suffix_is_refused(tmp_path):
    r = run("classify", save_scan(tmp_path / "a.png"), "--output", tmp_path / "x.json")
    assert_clean(r)
    assert r.exit_code == 2 and r.stderr == "Error: --output must end in .csv or .jsonl (got x.json)\n"
    assert not (tmp_path / "x.json").exists()


@bundled
def test_heatmap_folder_not_writable_is_reported_and_the_result_stands(tmp_path):
    scan = real_scan()
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should go")
    r = run("classify", scan, "--heatmap", blocker / "maps")
    assert_clean(r)
    assert r.exit_code == 0  # documented: heatmap failures do not change the exit code
    assert r.stdout.startswith(f"{scan}: ")
    err = r.stderr.splitlines()
    assert err[0].startswith(f"{scan}: heatmap not written - cannot write heatmap (")
    assert err[-2] == "heatmaps: 1 not written (the results stand)"
