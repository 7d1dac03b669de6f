"""Trusted models (edge_xray.trust), replayed from the adversarial trial (issue 12, row 7): the package lists
the sha256 of the models it ships; a foreign model given a copy of our card stops with exit code 4, runs
only when allowed and is then marked model_verified: false in every row and audit entry."""

from __future__ import annotations

import csv
import json

import pytest

import edge_xray
from edge_xray.runtime import DEFAULT_MODEL, MODELS_DIR
from helpers import assert_clean, bundled, run, save_scan

WARNING = "is not a verified edge-xray model"


def test_trust_list_matches_the_bundled_model_files():
    from edge_xray.trust import BUNDLED_SHA256, file_sha256

    shipped = {p.name: file_sha256(p) for p in sorted(MODELS_DIR.glob("*.tflite"))}
    assert shipped == BUNDLED_SHA256, ("edge_app/trust.py does not list the bundled models: put "
                                        f"{shipped} into BUNDLED_SHA256")


@pytest.fixture()
def foreign_model(tmp_path):
    """The bundled network with a card that is valid but not ours: checksums recomputed, as in the trial."""
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled model")
    from edge_xray.card import ModelCard

    flatbuffer, card = ModelCard.read(DEFAULT_MODEL)
    ModelCard.write(tmp_path / "foreign.tflite", flatbuffer, dict(card.to_dict(), version="9.9-foreign"))
    return tmp_path / "foreign.tflite"


def test_foreign_model_with_a_copied_card_exits_4(foreign_model, tmp_path):
    scan = save_scan(tmp_path / "a.png")
    r = run("classify", scan, "--model", foreign_model)
    assert_clean(r)
    assert r.exit_code == 4
    assert r.stderr == ("Error: foreign.tflite is not a model shipped with edge-xray (sha256 not in the package's "
                        "list): give --allow-unverified-model to run it anyway\n")
    with pytest.raises(edge_xray.ModelError, match="is not a model shipped with edge-xray"):
        edge_xray.load_model(foreign_model)


def test_unverified_model_runs_only_when_allowed_and_is_marked(foreign_model, tmp_path):
    scan = save_scan(tmp_path / "a.png")
    log = tmp_path / "audit.log"
    r = run("classify", scan, "--model", foreign_model, "--allow-unverified-model", "--json", "--audit-log", log,
            "--output", tmp_path / "r.csv")
    assert_clean(r)
    assert r.exit_code in (0, 3)
    assert r.stderr.splitlines()[0] == ("warning: foreign.tflite is not a verified edge-xray model; its results are "
                                        "marked model_verified: false")
    assert json.loads(r.stdout.splitlines()[0])["model_verified"] is False
    assert json.loads(log.read_text().splitlines()[0])["model_verified"] is False
    assert list(csv.DictReader((tmp_path / "r.csv").open()))[0]["model_verified"] == "False"
    env = run("classify", scan, "--model", foreign_model, env={"EDGE_XRAY_ALLOW_UNVERIFIED_MODEL": "1"})
    assert env.exit_code in (0, 3) and WARNING in env.stderr  # the site setting
    api = edge_xray.load_model(foreign_model, allow_unverified=True)
    assert api.classify(scan).model_verified is False


def test_site_commands_and_info_know_an_unverified_model(foreign_model, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    save_scan(d / "a.png")
    r = run("site", "check", d, "--model", foreign_model)
    assert r.exit_code == 4 and "is not a model shipped with edge-xray" in r.stderr
    assert json.loads(run("info", "--model", foreign_model, "--json").stdout)["model_verified"] is False
    assert json.loads(run("info", "--json").stdout)["model_verified"] is True


@bundled
def test_bundled_model_and_a_byte_identical_copy_are_verified(tmp_path):
    import shutil

    assert edge_xray.load_model().classify(save_scan(tmp_path / "a.png")).model_verified is True
    shutil.copy(DEFAULT_MODEL, tmp_path / "copy.tflite")
    assert edge_xray.load_model(tmp_path / "copy.tflite").model_verified is True
