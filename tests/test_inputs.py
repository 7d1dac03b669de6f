"""Finding inputs (edge_xray.inputs), replayed from the adversarial trial (issue 12, rows 6 and 10): a pipe or a
device is refused before anything is read (no hang); folders are scanned by content (GIF, WebP, DICOM
without a suffix), symlinked folders followed once, loops skipped, and what was not screened summed up."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import xray_like
from helpers import assert_clean, bundled, deadline, run, save_scan


@bundled
@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_pipe_or_device_is_refused_before_reading(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "pipe.png"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    good = save_scan(tmp_path / "good.png")
    with deadline(30):
        r = run("classify", path, good, "--audit-log", tmp_path / "audit.log", "--json")
    assert_clean(r)
    assert r.exit_code == 3
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert rows[0]["error"] == "not a regular file (a pipe, device or socket)" and rows[0]["input_sha256"] is None
    assert rows[1]["input_sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    audit = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    assert [a["input_sha256"] for a in audit] == [None, rows[1]["input_sha256"]]


@bundled
def test_fifo_inside_a_folder_is_skipped_and_counted(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "pipe.png")
    save_scan(d / "a.png")
    with deadline(30):
        r = run("classify", d, "--json")
    assert_clean(r)
    assert len(r.stdout.splitlines()) == 1
    assert r.stderr.splitlines()[-2] == "skipped 1 file: 1 not a regular file"


def write_gif_webp_and_dicom(d: Path):
    from test_field import write_dicom

    g = xray_like()
    Image.fromarray(g).save(d / "a.gif")
    Image.fromarray(g).save(d / "b.webp", lossless=True)
    write_dicom(d / "IM000001", g.astype(np.uint16) * 16)  # no suffix: found by its DICM preamble


@bundled
def test_folder_is_scanned_by_content_with_a_skip_summary(tmp_path):
    pytest.importorskip("pydicom")
    d = tmp_path / "export"
    (d / "sub").mkdir(parents=True)
    write_gif_webp_and_dicom(d)
    (d / "README.txt").write_text("not an image")
    (d / "sub" / "loop").symlink_to(d, target_is_directory=True)  # a symlink loop
    other = tmp_path / "elsewhere"
    other.mkdir()
    save_scan(other / "linked.png")
    (d / "linked").symlink_to(other, target_is_directory=True)  # a symlinked folder: followed once
    r = run("classify", d, "--json")
    assert_clean(r)
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [Path(x["path"]).name for x in rows] == ["IM000001", "a.gif", "b.webp", "linked.png"]
    assert all(x["status"] in ("ok", "rejected") for x in rows), rows
    assert r.stderr.splitlines()[-2] == "skipped 2 files: 1 symlink loop, 1 not an image"
