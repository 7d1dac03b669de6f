"""Site calibration and drift check: the statistics on synthetic scores, the CLI on real scans."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge_xray import ModelError
from edge_xray.cli import cli
from edge_xray.runtime import DEFAULT_MODEL, Model
from edge_xray.site import (MIN_PER_CLASS, clopper_pearson, ks_against_quantiles, load_site, psi_against_quantiles,
                            quantiles, scans_needed, site_threshold, write_site)


def test_clopper_pearson_hand_computed():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9)  # 0.3085
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10), abs=1e-9)


@pytest.mark.parametrize("k, n", [(1, 20), (19, 20), (38, 40), (150, 200), (7, 9)])
def test_clopper_pearson_matches_scipy(k, n):
    beta = pytest.importorskip("scipy.stats").beta
    lo, hi = clopper_pearson(k, n)
    assert lo == pytest.approx(beta.ppf(0.025, k, n - k + 1), abs=1e-7)
    assert hi == pytest.approx(beta.ppf(0.975, k + 1, n - k), abs=1e-7)


def test_site_threshold_reaches_the_target_on_new_scans():
    """Over many samples of 40 pneumonia scores, the mean sensitivity on fresh scans is at the target."""
    rng = np.random.default_rng(0)
    fresh = rng.beta(5, 2, 200_000)
    sens = []
    for _ in range(400):
        t = site_threshold(rng.beta(5, 2, 40), 0.95)
        sens.append((fresh >= t).mean())
    assert np.mean(sens) >= 0.945
    t = site_threshold(np.linspace(0.01, 0.99, 40), 0.95)  # j = floor(0.05 * 41) = 2: the 2nd lowest
    assert t == pytest.approx(np.linspace(0.01, 0.99, 40)[1])


def test_too_small_samples_say_how_many_more():
    assert scans_needed(12, 40) == {"NORMAL": 8}
    assert scans_needed(40, 5)["PNEUMONIA"] >= MIN_PER_CLASS - 5
    assert scans_needed(40, 40) == {}


def test_drift_statistics():
    rng = np.random.default_rng(1)
    ref = quantiles(rng.normal(0, 1, 5000))
    same, moved = rng.normal(0, 1, 400), rng.normal(1.0, 1, 400)
    d0, p0 = ks_against_quantiles(same, ref, 5000)
    d1, p1 = ks_against_quantiles(moved, ref, 5000)
    assert p0 > 0.01 and p1 < 1e-6 and d1 > d0
    assert psi_against_quantiles(same, ref) < 0.1 < 0.25 < psi_against_quantiles(moved, ref)


bundled = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no bundled model")


@bundled
def test_site_file_for_another_model_or_altered_is_refused(tmp_path):
    m = Model()
    good = write_site(tmp_path / "s.json", {"format": "edge-xray-site/1", "model_sha256": m.sha256, "threshold": 0.7,
                                            "target_sensitivity": 0.95, "pneumonia_scores": [0.7] + [0.9] * 19})
    assert load_site(tmp_path / "s.json", m).threshold == 0.7
    write_site(tmp_path / "other.json", dict(good, model_sha256="0" * 64))
    with pytest.raises(ModelError, match="was made for another model"):
        load_site(tmp_path / "other.json", m)
    (tmp_path / "t.json").write_text(json.dumps(dict(good, threshold=0.9)))
    with pytest.raises(ModelError, match="was altered after it was made"):
        load_site(tmp_path / "t.json", m)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ModelError, match="is not an edge-xray site file"):
        load_site(tmp_path / "x.json", m)
    with pytest.raises(ModelError, match="site file not found"):
        load_site(tmp_path / "none.json", m)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, data_dir):
    """A clinic's labelled sample: 24 NORMAL and 30 PNEUMONIA real scans, plus one unreadable file."""
    root = tmp_path_factory.mktemp("site")
    for c, n in (("NORMAL", 24), ("PNEUMONIA", 30)):
        (root / c).mkdir()
        for f in sorted((data_dir / c).iterdir())[7::41][:n]:
            (root / c / f.name).symlink_to(f)
    (root / "NORMAL" / "broken.png").write_bytes(b"not an image")
    return root


def run(*args, **env):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env or None)


@bundled
def test_site_calibrate_classify_and_check_end_to_end(labelled, tmp_path, data_dir):
    site = tmp_path / "SITE.json"
    r = run("site", "calibrate", labelled, "--out", site)
    assert r.exit_code == 0, r.output
    assert "not used: " in r.stderr and "broken.png: ERROR" in r.stderr
    data = json.loads(site.read_text())
    assert data["counts"]["NORMAL"] == 24 and data["counts"]["PNEUMONIA"] == 30 and data["counts"]["unreadable"] == 1
    lo, hi = data["sensitivity"]["ci95"]
    assert lo <= data["sensitivity"]["estimate"] <= hi and data["model_sha256"] == Model().sha256
    assert len(data["inputs_sha256"]) == 64 and len(data["checksum"]) == 64
    # classify with the site: its threshold in every row, with the site file's sha256
    scans = labelled / "PNEUMONIA"
    r = run("classify", scans, "--site", site, "--json")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    import hashlib

    sha = hashlib.sha256(site.read_bytes()).hexdigest()
    assert len(rows) == 30 and all(x["threshold"] == data["threshold"] and x["site_sha256"] == sha for x in rows)
    assert sum(x["label"] == "PNEUMONIA" for x in rows) >= 28  # the site's rule flags >= 95 % of its sample
    r = run("classify", scans, "--json", EDGE_XRAY_SITE=str(site))  # the device's standing setting
    assert all(json.loads(x)["site_sha256"] == sha for x in r.stdout.splitlines())
    r = run("classify", scans / sorted(p.name for p in scans.iterdir())[0], "--json")
    assert json.loads(r.stdout)["site_sha256"] is None
    # drift check against the site's own sample: the same kind of scans are similar
    r = run("site", "check", labelled, "--site", site, "--json")
    assert r.exit_code == 0, r.output
    chk = json.loads(r.stdout)
    assert chk["screened"] == 54 and chk["unreadable"] == 1 and chk["verdict"].startswith("similar")
    # refused: an existing output, a too-small sample, a tampered site file
    assert run("site", "calibrate", labelled, "--out", site).exit_code == 2
    small = tmp_path / "small"
    for c in ("NORMAL", "PNEUMONIA"):
        (small / c).mkdir(parents=True)
        for f in sorted((labelled / c).glob("*.jpeg"))[:10]:
            (small / c / f.name).symlink_to(f.resolve())
    r = run("site", "calibrate", small, "--out", tmp_path / "s2.json")
    assert r.exit_code == 3 and "need 10 more NORMAL and 10 more PNEUMONIA" in r.stderr
    data["threshold"] = 0.2
    site.write_text(json.dumps(data))
    r = run("classify", scans, "--site", site)
    assert r.exit_code == 4 and r.stderr == "Error: site file SITE.json was altered after it was made (checksum differs)\n"


@bundled
def test_site_check_flags_shifted_scans(tmp_path, data_dir):
    """Scans with a different acquisition (the shift proxy: squeezed, softened, lifted black level) drift."""
    from PIL import Image

    from edge_xray.preprocess import load_image
    from edge_xray.train.augment import shift_proxy

    d = tmp_path / "shifted"
    d.mkdir()
    for f in sorted((data_dir / "NORMAL").iterdir())[3::30][:40]:
        g = np.asarray(load_image(f))
        Image.fromarray(shift_proxy(shift_proxy(g, 0), 0)).save(d / f"{f.stem}.png")
    r = run("site", "check", d, "--json")
    assert r.exit_code == 0, r.output
    chk = json.loads(r.stdout)
    assert chk["screened"] + chk["refused"] == 40
    if not chk["comparisons"]:
        pytest.skip("the bundled model's card keeps no reference yet")
    assert chk["verdict"].startswith("shifted"), chk


def test_drift_verdict_rarely_cries_wolf_at_clinic_sample_sizes():
    """Samples of 50 from the reference's own population are seldom called shifted (the verdict needs
    both a KS p-value below 0.01 and a PSI above 0.25)."""
    from edge_xray.site import KS_ALPHA, PSI_SHIFTED

    rng = np.random.default_rng(3)
    alarms = 0
    for _ in range(200):
        ref = quantiles(rng.normal(0, 1, 50))
        s = rng.normal(0, 1, 50)
        d, pv = ks_against_quantiles(s, ref, 50)
        alarms += pv < KS_ALPHA and psi_against_quantiles(s, ref) > PSI_SHIFTED
    assert alarms / 200 <= 0.03
