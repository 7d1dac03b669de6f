"""The model that ships in the package: its card, golden answers, int8 against float32, resolution."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edge_xray
from edge_xray.card import ModelCard
from edge_xray.cli import cli
from edge_xray.decision import Calibration
from edge_xray.preprocess import file_sha256, load_and_prepare
from edge_xray.runtime import DEFAULT_MODEL, MODELS_DIR, Model
from conftest import FULLRES, ROOT

GOLDEN = ROOT / "tests" / "golden" / "bundled-fullres.json"
REGENERATE = "python benchmarks/golden.py --write tests/golden/bundled-fullres.json"

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no bundled model in this checkout")


def test_card_matches_files():
    card = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert card["sha256"] == file_sha256(DEFAULT_MODEL)
    assert card["format"] == "tflite-int8" and card["labels"] == ["NORMAL", "BACTERIAL", "VIRAL"]
    twin = MODELS_DIR / card["float_model"]
    twin_card = json.loads(twin.with_suffix(".json").read_text())
    assert twin_card["sha256"] == file_sha256(twin) and twin_card["format"] == "tflite-float32"
    for c in (card, twin_card):
        ModelCard(c)  # every number finite, temperature positive, threshold a probability
        assert c["training"]["recipe"]["image_size"] == c["input"]["shape"][1]
        assert "gate" in c and c["gate"]["fit"]["val_false_refusal_rate"] <= 0.01
    assert card["threshold"] == twin_card["threshold"] and card["version"] == twin_card["version"]
    assert DEFAULT_MODEL.stat().st_size <= 500 * 1024
    _, inner = ModelCard.read(DEFAULT_MODEL)
    assert inner["flatbuffer_sha256"] == card["flatbuffer_sha256"]


@pytest.mark.slow
def test_golden_answers_on_full_resolution_scans(data_dir):
    """The bundled model gives its recorded answers (label, p within 0.01) on the 80 full-resolution scans."""
    golden = json.loads(GOLDEN.read_text())
    screener = edge_xray.load_model()
    assert golden["model_sha256"] == screener.model.sha256, f"the bundled model changed: run `{REGENERATE}`"
    rows = {r["file"]: r for r in golden["rows"]}
    got = {s.path: s for s in screener.classify_many(sorted(FULLRES.rglob("*.jpeg")))}
    assert len(got) == len(rows) == 80
    for path, s in got.items():
        g = rows[f"{path.split('/')[-2]}/{path.split('/')[-1]}"]
        assert s.status == g["status"] and s.label == g["label"], path
        assert abs(s.pneumonia_probability - g["pneumonia_probability"]) <= 0.01, path
        if g.get("intended_use") is not None:  # the intended-use check's P(in use), recorded since it ships
            assert abs(s.intended_use - g["intended_use"]) <= 0.01, path


@pytest.mark.slow
def test_classify_full_resolution_scans_with_the_bundled_model(data_dir):
    r = CliRunner().invoke(cli, ["classify", str(FULLRES), "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 80 and all(x["status"] == "ok" for x in rows)
    truth = np.array(["PNEUMONIA" in x["path"].split("/")[-2] for x in rows])
    pred = np.array([x["label"] == "PNEUMONIA" for x in rows])
    assert (truth == pred).mean() >= 0.85  # training images: a smoke check, not an accuracy figure


@pytest.mark.slow
def test_api_screening_equals_the_cli_row(data_dir):
    """For every scan of a folder, Screening.to_dict() is exactly the `classify --json` row."""
    r = CliRunner().invoke(cli, ["classify", str(FULLRES / "NORMAL"), "--json"])
    assert r.exit_code == 0, r.output
    cli_rows = [json.loads(x) for x in r.stdout.splitlines()]
    api_rows = [s.to_dict() for s in edge_xray.load_model().classify_many([str(FULLRES / "NORMAL")])]
    assert len(cli_rows) == 40 and cli_rows == api_rows


@pytest.mark.slow
def test_full_resolution_agrees_with_224px_copies(data_dir):
    m = Model()
    cal = Calibration.from_card(m.card)
    files = sorted(FULLRES.rglob("*.jpeg"))
    same = 0
    for f in files:
        a = cal.decide(m.run(load_and_prepare(f, m.size))).label
        b = cal.decide(m.run(load_and_prepare(data_dir / f.parent.name / f.name, m.size))).label
        same += a == b
    assert same / len(files) >= 0.98


@pytest.mark.slow
def test_int8_agrees_with_float32_twin(data_dir):
    m8 = Model()
    m32 = Model(MODELS_DIR / m8.card["float_model"])
    c8, c32 = Calibration.from_card(m8.card), Calibration.from_card(m32.card)
    files = sorted((data_dir / "NORMAL").iterdir())[::25] + sorted((data_dir / "PNEUMONIA").iterdir())[::50]
    x = [load_and_prepare(f, m8.size) for f in files]
    y = np.array([f.parent.name == "PNEUMONIA" for f in files])
    d8 = np.array([c8.decide(m8.run(xi)).label == "PNEUMONIA" for xi in x])
    d32 = np.array([c32.decide(m32.run(xi)).label == "PNEUMONIA" for xi in x])
    assert (d8 == d32).mean() >= 0.99
    assert abs((d8 == y).mean() - (d32 == y).mean()) <= 0.005 + 1 / len(files)


@pytest.mark.slow
def test_heatmap_overlays_for_pneumonia_results_only(data_dir, tmp_path):
    """With the bundled model: an overlay (JPEG, the scan's size up to 1024 px) for each PNEUMONIA result,
    none for NORMAL results, and the answers are the same as without --heatmap."""
    from PIL import Image

    scans = [FULLRES / "PNEUMONIA" / "person1077_bacteria_3017.jpeg", FULLRES / "NORMAL" / "IM-0129-0001.jpeg"]
    plain = CliRunner().invoke(cli, ["classify", *map(str, scans), "--json"])
    r = CliRunner().invoke(cli, ["classify", *map(str, scans), "--json", "--heatmap", str(tmp_path / "maps")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    base = [json.loads(x) for x in plain.stdout.splitlines()]
    assert [(x["label"], x["pneumonia_probability"]) for x in rows] == [(x["label"], x["pneumonia_probability"]) for x in base]
    assert rows[0]["label"] == "PNEUMONIA" and rows[1]["label"] == "NORMAL"
    im = Image.open(rows[0]["heatmap"])
    assert im.format == "JPEG" and 512 <= max(im.size) <= 1024
    assert rows[1]["heatmap"] is None and sorted(p.name for p in (tmp_path / "maps").iterdir()) == [
        "person1077_bacteria_3017.heatmap.jpg"]
