"""The model that ships in the package: its card, int8 against float32, resolution robustness."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge_xray.card import read_model
from edge_xray.cli import cli
from edge_xray.classify import interpret
from edge_xray.preprocess import file_sha256, load_and_prepare
from edge_xray.runtime import DEFAULT_MODEL, MODELS_DIR, Model
from conftest import FULLRES

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no bundled model in this checkout")


def test_card_matches_files():
    card = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert card["sha256"] == file_sha256(DEFAULT_MODEL)
    assert card["format"] == "tflite-int8" and card["labels"] == ["NORMAL", "BACTERIAL", "VIRAL"]
    twin = MODELS_DIR / card["float_model"]
    twin_card = json.loads(twin.with_suffix(".json").read_text())
    assert twin_card["sha256"] == file_sha256(twin) and twin_card["format"] == "tflite-float32"
    for c in (card, twin_card):
        assert 0 < c["threshold"] <= 0.5 and c["temperature"] > 0
        assert c["training"]["recipe"]["image_size"] == c["input"]["shape"][1]
        assert "gate" in c and c["gate"]["fit"]["val_false_refusal_rate"] <= 0.01
    assert DEFAULT_MODEL.stat().st_size <= 500 * 1024
    _, inner = read_model(DEFAULT_MODEL)
    assert inner["flatbuffer_sha256"] == card["flatbuffer_sha256"]


def test_classify_full_resolution_scans_with_the_bundled_model(data_dir):
    r = CliRunner().invoke(cli, ["classify", str(FULLRES), "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 80 and all(x["status"] == "ok" for x in rows)
    truth = np.array(["PNEUMONIA" in x["path"].split("/")[-2] for x in rows])
    pred = np.array([x["label"] == "PNEUMONIA" for x in rows])
    assert (truth == pred).mean() >= 0.85  # training images: a smoke check, not an accuracy figure


def test_full_resolution_agrees_with_224px_copies(data_dir):
    m = Model()
    files = sorted(FULLRES.rglob("*.jpeg"))
    same = 0
    for f in files:
        a = interpret(m, m.run(load_and_prepare(f, m.size)))["label"]
        b = interpret(m, m.run(load_and_prepare(data_dir / f.parent.name / f.name, m.size)))["label"]
        same += a == b
    assert same / len(files) >= 0.98


def test_int8_agrees_with_float32_twin(data_dir):
    m8 = Model()
    m32 = Model(MODELS_DIR / m8.card["float_model"])
    files = sorted((data_dir / "NORMAL").iterdir())[::25] + sorted((data_dir / "PNEUMONIA").iterdir())[::50]
    x = [load_and_prepare(f, m8.size) for f in files]
    y = np.array([f.parent.name == "PNEUMONIA" for f in files])
    d8 = np.array([interpret(m8, m8.run(xi))["label"] == "PNEUMONIA" for xi in x])
    d32 = np.array([interpret(m32, m32.run(xi))["label"] == "PNEUMONIA" for xi in x])
    assert (d8 == d32).mean() >= 0.99
    assert abs((d8 == y).mean() - (d32 == y).mean()) <= 0.005 + 1 / len(files)
