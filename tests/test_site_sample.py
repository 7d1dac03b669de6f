"""Issue 20 rows 1-5: a site sample that cannot lie by accident, a drift check that says when it cannot
tell, and site files that cannot be changed unnoticed."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_xray.cli import cli
from edge_xray.runtime import DEFAULT_MODEL
from edge_xray.site import NEAR_DUPLICATE_BITS, hamming, perceptual_hash, write_site

bundled = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no bundled model")


@pytest.fixture(autouse=True)
def no_device_key(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("EDGE_XRAY_KEY", raising=False)


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def real(data_dir, c, n, start=7, step=41):
    return sorted((data_dir / c).iterdir())[start::step][:n]


def copies(src, dest_dir, n):
    """N copies of the scan SRC as a clinic might make them: the same bytes, re-encoded, resized."""
    im = Image.open(src).convert("L")
    out = []
    for i in range(n):
        p = dest_dir / f"{src.stem}-copy{i}{'.png' if i % 4 == 2 else '.jpeg'}"
        if i % 4 == 0:
            shutil.copyfile(src, p)
        elif i % 4 == 1:
            im.save(p, "JPEG", quality=80)
        elif i % 4 == 2:
            im.save(p, "PNG")
        else:
            im.resize((im.width // 2, im.height // 2)).save(p, "JPEG", quality=90)
        out.append(p)
    return out


def test_perceptual_hash_keeps_copies_together_and_scans_apart(data_dir, tmp_path):
    a, b = real(data_dir, "NORMAL", 2)
    ha, hb = (perceptual_hash(Image.open(x)) for x in (a, b))
    assert hamming(ha, hb) > NEAR_DUPLICATE_BITS
    for c in copies(a, tmp_path, 4):
        assert hamming(ha, perceptual_hash(Image.open(c))) <= NEAR_DUPLICATE_BITS


@bundled
def test_row1_copies_count_once_and_too_few_distinct_scans_are_refused(data_dir, tmp_path):
    root = tmp_path / "sample"
    for c in ("NORMAL", "PNEUMONIA"):
        (root / c).mkdir(parents=True)
        for f in real(data_dir, c, 5):
            copies(f, root / c, 8)
    r = run("site", "calibrate", root, "--out", tmp_path / "s.json")
    assert r.exit_code == 3 and not (tmp_path / "s.json").exists()
    groups = [x for x in r.stdout.splitlines() if x.startswith("counted once (the same scan): ")]
    assert len(groups) == 10 and all(x.count(", ") == 7 for x in groups)
    assert r.stderr.startswith(f"Error: {root}: too few distinct screened scans to set a threshold (5 NORMAL, "
                               "5 PNEUMONIA in 40 and 40 files; need 15 more NORMAL and ")


@bundled
def test_row2_one_scan_under_both_labels_is_refused_naming_the_files(data_dir, tmp_path):
    root = tmp_path / "sample"
    for c in ("NORMAL", "PNEUMONIA"):
        (root / c).mkdir(parents=True)
        for f in real(data_dir, c, 3):
            (root / c / f.name).symlink_to(f)
    twin = real(data_dir, "NORMAL", 1)[0]
    Image.open(twin).convert("L").save(root / "PNEUMONIA" / "relabelled.png")
    r = run("site", "calibrate", root, "--out", tmp_path / "s.json")
    assert r.exit_code == 3
    assert r.stderr == (f"Error: {root}: the same scan is under both labels: NORMAL/{twin.name} = "
                        "PNEUMONIA/relabelled.png; a scan has one label: remove the wrong copy\n")


@pytest.fixture(scope="module")
def sample(tmp_path_factory, data_dir):
    """24 NORMAL and 30 PNEUMONIA real scans, one NORMAL scan twice (re-encoded), two other folders."""
    root = tmp_path_factory.mktemp("site")
    for c, n in (("NORMAL", 24), ("PNEUMONIA", 30)):
        (root / c).mkdir()
        for f in real(data_dir, c, n):
            (root / c / f.name).symlink_to(f)
    first = real(data_dir, "NORMAL", 1)[0]
    Image.open(first).convert("L").save(root / "NORMAL" / "zz-again.png")
    for other in ("TB", "COVID"):
        (root / other).mkdir()
    (root / "notes.txt").write_text("who read them")
    return root, first


@bundled
def test_rows3_and_5_other_folders_named_duplicates_once_and_signed_thresholds(sample, tmp_path):
    root, first = sample
    key = tmp_path / "device.key"
    assert run("key", "init", "--key", key).exit_code == 0
    env = {"EDGE_XRAY_KEY": str(key)}
    site = tmp_path / "SITE.json"
    r = run("site", "calibrate", root, "--out", site, env=env)
    assert r.exit_code == 0, r.output
    out = r.stdout.splitlines()
    assert f"counted once (the same scan): NORMAL/{first.name}, NORMAL/zz-again.png" in out
    assert "not read (only NORMAL/ and PNEUMONIA/ are): COVID/, TB/, notes.txt" in out
    data = json.loads(site.read_text())
    assert data["counts"]["NORMAL"] == 24 and data["counts"]["PNEUMONIA"] == 30
    assert data["counts"]["files"] == {"NORMAL": 25, "PNEUMONIA": 30} and data["counts"]["duplicate_files"] == 1
    assert len(data["pneumonia_scores"]) == 30 and f"signed by key {data['signature']['key_id']}" in out
    scan = sorted((root / "PNEUMONIA").iterdir())[0]
    r = run("classify", scan, "--site", site, "--json", env=env)
    assert r.exit_code == 0 and "note:" not in r.stderr  # signed and verified: nothing to say
    # row 5: the threshold raised and the checksum recomputed (anyone can)
    forged = dict(data, threshold=0.999)
    forged["checksum"] = hashlib.sha256(json.dumps({k: v for k, v in forged.items() if k != "checksum"},
                                                   sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    site.write_text(json.dumps(forged))
    r = run("classify", scan, "--site", site, env=env)
    assert r.exit_code == 4
    assert r.stderr == "Error: site file SITE.json was altered after it was signed (the signature does not match)\n"
    # ... and with the signature removed: refused by its own recorded sample
    write_site(site, dict(data, threshold=0.999), key=False)
    r = run("classify", scan, "--site", site, env=env)
    assert r.exit_code == 4 and r.stderr.startswith(
        f"Error: site file SITE.json: threshold 0.9990 is not what its own recorded sample supports ({data['threshold']:.4f})")
    # an unsigned file that holds together loads, and says it is unkeyed
    write_site(site, data, key=False)
    r = run("classify", scan, "--site", site, env=env)
    assert r.exit_code == 0 and r.stderr.startswith("note: site file SITE.json is not signed")
    # a file signed by another device's key
    other = tmp_path / "other.key"
    run("key", "init", "--key", other)
    assert run("site", "calibrate", root, "--out", site, "--overwrite", "--key", other).exit_code == 0
    r = run("classify", scan, "--site", site, env=env)
    assert r.exit_code == 4 and "is signed by another key" in r.stderr


@bundled
def test_row4_site_check_says_when_it_cannot_tell(sample, tmp_path):
    root, _ = sample
    few = tmp_path / "few"
    few.mkdir()
    for f in sorted((root / "NORMAL").glob("*.jpeg"))[:3]:
        (few / f.name).symlink_to(f.resolve())
    r = run("site", "check", few)
    assert r.exit_code == 3 and r.stdout.splitlines()[-1] == "verdict: too few to tell (3 screened; at least 50 needed)"
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "missing"):
        r = run("site", "check", folder)
        assert r.exit_code == 3 and r.stdout.splitlines()[-1] == "verdict: no scan could be screened"
    refused = tmp_path / "refused"
    refused.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(refused / f"{i}.png")
    r = run("site", "check", refused, "--json")
    assert r.exit_code == 3 and json.loads(r.stdout)["screened"] == 0
    some = tmp_path / "some"
    some.mkdir()
    for f in sorted((root / "NORMAL").glob("*.jpeg"))[:12] + sorted((root / "PNEUMONIA").glob("*.jpeg"))[:13]:
        (some / f.name).symlink_to(f.resolve())
    r = run("site", "check", some)
    assert r.exit_code == 0, r.output
    last = r.stdout.splitlines()[-1]
    assert last.startswith("verdict: shifted (a large shift") or last == (
        "verdict: no large shift (25 screened: fewer than 50 show a large shift only; screen at least 50 to tell a "
        "smaller one)")
