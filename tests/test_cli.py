"""The edge commands through click's CliRunner: exit codes and exact error text."""

import io
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_xray.cli import cli
from conftest import xray_like

COMMANDS = ["classify", "info", "bench", "train", "calibrate", "convert", "evaluate", "compare", "site"]
SUBCOMMANDS = [["site", "calibrate"], ["site", "check"]]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def stderr_lines(r):
    """stderr without the one warning line of a model run with --allow-unverified-model (checked here), and
    without a batch's summary line (tests/test_batch.py checks it)."""
    lines = r.stderr.splitlines()
    if lines and lines[-1].startswith("summary: "):
        lines = lines[:-1]
    if lines and lines[0].startswith("warning: "):
        assert "is not a verified edge-xray model" in lines[0]
        return lines[1:]
    return lines


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    r = run(command, "--help")
    assert r.exit_code == 0 and "Usage: " in r.stdout and command in r.stdout


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(command):
    r = run(*command, "--help")
    assert r.exit_code == 0 and "Usage: " in r.stdout and " ".join(command) in r.stdout


def test_group_lists_every_command():
    r = run("--help")
    assert r.exit_code == 0
    for c in COMMANDS:
        assert f"  {c} " in r.stdout


def test_classify_needs_a_path():
    r = run("classify")
    assert r.exit_code == 2 and "Missing argument 'PATHS...'" in r.stderr


def test_classify_missing_model_file_exits_4(scan_png, tmp_path):
    r = run("classify", scan_png, "--model", tmp_path / "none.tflite")
    assert r.exit_code == 4
    assert r.stderr == f"Error: model not found: {tmp_path / 'none.tflite'}\n"


@pytest.fixture()
def good_scans(tmp_path, subset):
    """Two real scans, one as PNG and one as JPEG."""
    names = sorted((subset / "PNEUMONIA").iterdir())[:1] + sorted((subset / "NORMAL").iterdir())[:1]
    out = []
    for i, p in enumerate(names):
        dest = tmp_path / f"good{i}.{'png' if i == 0 else 'jpg'}"
        Image.open(p).save(dest)
        out.append(dest)
    return out


def bad_inputs(tmp_path):
    """name -> (path, expected one-line reason)."""
    d = tmp_path / "bad"
    d.mkdir()
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("this is not an image\n" * 10)
    (d / "doc.png").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 10)
    (d / "noise.jpg").write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)))
    buf = io.BytesIO()
    Image.fromarray(xray_like()).save(buf, "JPEG")
    (d / "cut.jpg").write_bytes(buf.getvalue()[:1500])
    Image.new("L", (1, 1)).save(d / "one.png")
    Image.new("1", (20000, 20000)).save(d / "bomb.png")
    unknown = "not an image file (unknown or corrupt format)"
    return {
        "empty": (d / "empty.png", "empty file"),
        "text": (d / "text.png", unknown),
        "pdf": (d / "doc.png", unknown),
        "random": (d / "noise.jpg", unknown),
        "truncated": (d / "cut.jpg", None),  # "corrupt or truncated image (...)"
        "1x1": (d / "one.png", "image too small (1x1 pixels, need at least 64 on each side)"),
        "bomb": (d / "bomb.png", "image too large (over 89478485 pixels)"),
        "missing": (d / "missing.png", "no such file"),
    }


@pytest.mark.parametrize("case", ["empty", "text", "pdf", "random", "truncated", "1x1", "bomb", "missing"])
def test_bad_input_is_refused_cleanly(tiny_models, tmp_path, case):
    path, reason = bad_inputs(tmp_path)[case]
    r = run("classify", path, "--model", tiny_models["int8"], "--allow-unverified-model", "--json")
    assert r.exit_code == 3
    assert "Traceback" not in r.output
    lines = stderr_lines(r)
    assert len(lines) == 1
    row = json.loads(r.stdout)
    assert row["status"] == "error" and row["path"] == str(path)
    if reason is None:
        assert row["error"].startswith("corrupt or truncated image")
    else:
        assert row["error"] == reason
    assert lines[0] == f"{path}: ERROR - {row['error']}"


def test_unreadable_file(tiny_models, scan_png, monkeypatch):
    import builtins

    from edge_xray import preprocess

    if os.geteuid() == 0:  # root reads any file: make open() refuse this one, as the OS would
        real_open = builtins.open

        def refusing_open(path, *a, **k):
            if str(path) == str(scan_png):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **k)

        monkeypatch.setattr(preprocess, "open", refusing_open, raising=False)
    else:
        scan_png.chmod(0)
    r = run("classify", scan_png, "--model", tiny_models["int8"], "--allow-unverified-model")
    assert r.exit_code == 3 and stderr_lines(r) == [f"{scan_png}: ERROR - permission denied"]


def test_folder_with_no_images(tiny_models, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    r = run("classify", tmp_path / "empty", "--model", tiny_models["int8"], "--allow-unverified-model")
    assert r.exit_code == 3
    assert stderr_lines(r) == [f"{tmp_path / 'empty'}: ERROR - folder holds no images", "skipped 1 file: 1 not an image"]


def test_mixed_batch_goes_on_and_writes_every_row(tiny_models, tmp_path, good_scans):
    bad = bad_inputs(tmp_path)
    paths = [good_scans[0], bad["text"][0], bad["missing"][0], good_scans[1]]
    out = tmp_path / "results.csv"
    r = run("classify", *paths, "--model", tiny_models["int8"], "--allow-unverified-model", "--output", out)
    assert r.exit_code == 3
    assert len(r.stdout.splitlines()) == 2  # the two good scans
    assert len(stderr_lines(r)) == 2
    import csv

    rows = list(csv.DictReader(out.open()))
    assert [row["status"] for row in rows] == ["ok", "error", "error", "ok"]
    assert rows[0]["label"] in ("NORMAL", "PNEUMONIA") and rows[1]["label"] == ""


def test_json_fields_and_jsonl_output(tiny_models, tmp_path, good_scans):
    out = tmp_path / "r.jsonl"
    r = run("classify", *good_scans, "--model", tiny_models["int8"], "--allow-unverified-model", "--json", "--output", out)
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows == [json.loads(line) for line in out.read_text().splitlines()]
    card = json.loads(tiny_models["int8"].with_suffix(".json").read_text())
    for row in rows:
        assert {"path", "status", "label", "pneumonia_probability", "pneumonia_type", "type_probability",
                "threshold", "model_sha256", "error"} <= set(row)
        assert row["status"] == "ok" and row["error"] is None
        assert row["model_sha256"] == card["sha256"]
        assert row["threshold"] == card["threshold"]
        assert 0.0 <= row["pneumonia_probability"] <= 1.0
        if row["label"] == "PNEUMONIA":
            assert row["pneumonia_type"] in ("bacterial", "viral") and 0.5 <= row["type_probability"] <= 1
        else:
            assert row["pneumonia_type"] is None and row["type_probability"] is None


def test_folder_is_recursed(tiny_models, tmp_path, good_scans):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(good_scans[0], tmp_path / "a" / "b" / "x.png")
    shutil.copy(good_scans[1], tmp_path / "a" / "y.jpg")
    r = run("classify", tmp_path / "a", "--model", tiny_models["int8"], "--allow-unverified-model", "--json")
    assert r.exit_code == 0
    assert [json.loads(x)["path"] for x in r.stdout.splitlines()] == [
        str(tmp_path / "a" / "b" / "x.png"), str(tmp_path / "a" / "y.jpg")]


def test_bad_output_extension_is_a_usage_error(tiny_models, good_scans, tmp_path):
    r = run("classify", good_scans[0], "--model", tiny_models["int8"], "--allow-unverified-model", "--output", tmp_path / "r.txt")
    assert r.exit_code == 2 and "--output must end in .csv or .jsonl (got r.txt)" in r.stderr


def copy_model(tiny_models, tmp_path):
    for suffix in (".tflite", ".json"):
        shutil.copy(tiny_models["int8"].with_suffix(suffix), tmp_path / f"m{suffix}")
    return tmp_path / "m.tflite"


def test_changed_model_file_exits_4(tiny_models, tmp_path, scan_png):
    m = copy_model(tiny_models, tmp_path)
    data = bytearray(m.read_bytes())
    data[1000] ^= 0xFF
    m.write_bytes(bytes(data))
    r = run("classify", scan_png, "--model", m)
    assert r.exit_code == 4
    assert r.stderr == "Error: m.tflite: sha256 differs from its card m.json (file changed or corrupt)\n"


def test_tampered_card_exits_4(tiny_models, tmp_path, scan_png):
    m = copy_model(tiny_models, tmp_path)
    card = json.loads(m.with_suffix(".json").read_text())
    card["threshold"] = 0.99
    m.with_suffix(".json").write_text(json.dumps(card))
    r = run("classify", scan_png, "--model", m)
    assert r.exit_code == 4
    assert r.stderr == "Error: m.tflite: the card m.json differs from the card embedded in the model\n"


def test_embedded_card_alone_is_enough(tiny_models, tmp_path, good_scans):
    m = copy_model(tiny_models, tmp_path)
    m.with_suffix(".json").unlink()
    r = run("classify", good_scans[0], "--model", m, "--allow-unverified-model", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["status"] == "ok"
    r = run("info", "--model", m, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["format"] == "tflite-int8"


def test_truncated_model_exits_4(tiny_models, tmp_path, scan_png):
    m = copy_model(tiny_models, tmp_path)
    m.with_suffix(".json").unlink()
    m.write_bytes(m.read_bytes()[:5000])
    r = run("classify", scan_png, "--model", m)
    assert r.exit_code == 4
    assert r.stderr == "Error: m.tflite has no model card (neither embedded nor m.json beside it)\n"


def test_info_json_paths_are_absolute(tiny_models):
    r = run("info", "--model", tiny_models["int8"], "--json")
    assert r.exit_code == 0
    card = json.loads(r.stdout)
    assert card["model_path"] == str(tiny_models["int8"].resolve())
    assert card["float_model"] == str(tiny_models["float32"].resolve())
    assert card["input"]["dtype"] == "int8" and card["labels"] == ["NORMAL", "BACTERIAL", "VIRAL"]


def test_bench_prints_figures(tiny_models):
    r = run("bench", "--model", tiny_models["int8"], "--runs", 20, "--json", "--threads", 1)
    assert r.exit_code == 0, r.output
    b = json.loads(r.stdout)
    assert b["threads"] == 1 and b["model_ms_p50"] > 0 and b["model_ms_p95"] >= b["model_ms_p50"]
    assert b["decode_preprocess_ms_p50"] > 0 and b["peak_rss_mb"] > 0 and b["model_size_kb"] > 10


def test_audit_log_appends_hashes_only(tiny_models, tmp_path, good_scans):
    log = tmp_path / "audit.jsonl"
    for _ in range(2):
        r = run("classify", good_scans[0], tmp_path / "missing.png", "--model", tiny_models["int8"], "--allow-unverified-model",
                "--audit-log", log)
        assert r.exit_code == 3
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 4
    from edge_xray.preprocess import file_sha256

    assert lines[0]["input_sha256"] == file_sha256(good_scans[0]) and lines[0]["status"] == "ok"
    assert lines[1]["status"] == "error" and lines[1]["error"] == "no such file"
    assert all("path" not in x for x in lines)
    assert {"time", "model_sha256", "model_version", "threshold"} <= set(lines[0])


def test_heatmap_overlay_per_pneumonia_result(tiny_models, tmp_path, good_scans):
    """Overlays (NAME.heatmap.jpg) are written for PNEUMONIA results only; equal names are kept apart."""
    r = run("classify", *good_scans, "--model", tiny_models["int8"], "--allow-unverified-model", "--heatmap",
            tmp_path / "maps", "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    for row, scan in zip(rows, good_scans):
        if row["label"] == "PNEUMONIA":
            assert row["heatmap"] == str(tmp_path / "maps" / f"{scan.stem}.heatmap.jpg")
            im = Image.open(row["heatmap"])
            assert im.mode == "RGB" and min(im.size) > 64
        else:
            assert row["heatmap"] is None
    (tmp_path / "other").mkdir()
    shutil.copy(good_scans[0], tmp_path / "other" / good_scans[0].name)
    r = run("classify", good_scans[0], tmp_path / "other" / good_scans[0].name, "--model", tiny_models["int8"], "--allow-unverified-model",
            "--heatmap", tmp_path / "maps2", "--json")
    assert r.exit_code == 0
    if json.loads(r.stdout.splitlines()[0])["label"] == "PNEUMONIA":
        assert sorted(m.name for m in (tmp_path / "maps2").glob("*.jpg")) == ["good0-2.heatmap.jpg", "good0.heatmap.jpg"]
