"""train/negative_sources.py: the extra negatives rebuilt from their manifests and git clones (here a
repository made in a temporary folder), and the manifests themselves."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, xray_like
from edge_xray.train.intended_use import NEGATIVE_KINDS, negative_files
from edge_xray.train.negative_sources import MAX_SIDE, main, rebuild

MANIFESTS = sorted((ROOT / "train" / "negatives").glob("*.csv"))
FIELDS = ["file", "kind", "finding", "age", "view", "patientid", "source", "image_license", "orig_size",
          "stored_size", "collection"]


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def clones(tmp_path):
    """CLONES/owner+name/repo: a git repository holding a 16-bit PNG, a grey image stored as RGB (turned 90
    degrees counter-clockwise) and a DICOM's bytes; returns (clones, commit, the grey image upright)."""
    repo = tmp_path / "clones" / "owner+name" / "repo"
    repo.mkdir(parents=True)
    a16 = (xray_like((300, 1200), seed=1).astype(np.uint16) * 200)
    Image.fromarray(a16).save(repo / "wide16.png")
    grey = xray_like((200, 100), seed=2)  # (width, height)
    Image.fromarray(np.stack([grey] * 3, -1)).rotate(90, expand=True).save(repo / "turned.png")
    (repo / "scan.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"rest")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "images")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    return tmp_path / "clones", commit, grey


def _manifest(path, commit, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for file, src, view in rows:
            w.writerow({"file": file, "view": view, "patientid": file, "collection": "tiny",
                        "source": f"owner/name@{commit}:{src}"})
    return path


def test_rebuild_makes_each_image_as_the_manifest_says(clones, tmp_path):
    repos, commit, grey = clones
    m = _manifest(tmp_path / "m.csv", commit, [
        ("other_body/wide.jpg", "wide16.png", "AP"),
        ("adult_frontal/turned.png", "turned.png", "PA (source file stored rotated 90deg CCW; rotated back)"),
        ("adult_frontal/scan.dcm", "scan.dcm", ""),
        ("lateral/gone.jpg", "missing.png", "")])
    done, problems = rebuild(m, repos, tmp_path / "neg")
    assert done == 3 and len(problems) == 1 and problems[0].startswith("lateral/gone.jpg: ")
    wide = Image.open(tmp_path / "neg" / "other_body" / "wide.jpg")
    assert wide.mode == "L" and sorted(wide.size) == [256, MAX_SIDE]  # 16 bits rescaled, long side brought down
    assert np.asarray(wide).max() > 200 and np.asarray(wide).min() < 60  # not clamped to white or black
    turned = Image.open(tmp_path / "neg" / "adult_frontal" / "turned.png")
    assert turned.mode == "L" and np.array_equal(np.asarray(turned), grey)  # grey again, and upright again
    assert (tmp_path / "neg" / "adult_frontal" / "scan.dcm").read_bytes() == b"\0" * 128 + b"DICMrest"
    negs = negative_files(tmp_path / "neg")  # a folder the training reads, with the manifest's collection
    assert sorted(n.path.name for n in negs) == ["scan.dcm", "turned.png", "wide.jpg"]
    assert {n.collection for n in negs} == {"tiny"}


def test_rebuild_command_says_what_it_skipped(clones, tmp_path, capsys):
    repos, commit, grey = clones
    m = _manifest(tmp_path / "m.csv", commit, [("other_body/x.jpg", "wide16.png", ""),
                                               ("other_body/y.jpg", "nowhere/y.png", "")])
    assert main([str(m), "--repos", str(repos), "--out", str(tmp_path / "neg")]) == 1  # not every image made
    out, err = capsys.readouterr()
    assert "1 images written, 1 skipped" in out and "other_body/y.jpg" in err
    assert main([str(m), "--repos", str(tmp_path / "none"), "--out", str(tmp_path / "neg2")]) == 1
    assert "no clone of owner/name" in capsys.readouterr().err


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_manifests_name_a_source_licence_and_collection_for_every_image(manifest):
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(FIELDS) <= set(rows[0])
    for r in rows:
        assert r["file"].split("/")[0] in NEGATIVE_KINDS, r["file"]
        repo, _, rest = r["source"].partition("@")
        assert repo.count("/") == 1 and len(rest.split(":", 1)[0]) == 40, r["source"]  # owner/name@full-commit:path
        assert r["image_license"].strip() and r["collection"].strip() and r["patientid"].strip(), r["file"]
        banned = ("covid-chestxray-dataset", "Bone-detection-using-x-ray-images")  # the shared data's collections
        assert not any(b.lower() in repo.lower() for b in banned), r["source"]
    assert len({r["file"] for r in rows}) == len(rows)


def test_there_are_manifests():
    assert {m.name for m in MANIFESTS} == {"chest.csv", "body.csv"}
    assert Path(ROOT / "train" / "negatives").is_dir()
