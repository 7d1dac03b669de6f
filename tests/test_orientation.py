"""Turned scans: the orientation decision, the bundled orientation model, and its training."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import TINY, xray_like
from edge_xray.card import ModelError
from edge_xray.orientation import (ANGLES, CONFIDENCE, DEFAULT_ORIENTATION_MODEL, REASON, OrientationModel, decide,
                                   orient, rotate_back, rotate_clockwise)


class FixedModel:
    """Stands in for the orientation model: always the same probabilities."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, np.float64)
        self.seen = []

    def probabilities(self, gray):
        self.seen.append(gray.size)
        return self.probs


def asymmetric(w=90, h=70):
    a = xray_like((w, h))
    a[:10, :20] = 255  # a bright patch at the top left: any turn or flip moves it
    return Image.fromarray(a)


def test_rotate_clockwise_turns_the_way_it_says():
    im = asymmetric()
    turned = np.asarray(rotate_clockwise(im, 90))
    assert turned.shape == (90, 70)  # width and height swap
    assert turned[:20, -10:].min() == 255  # top left goes to top right under a clockwise quarter turn
    assert np.asarray(rotate_clockwise(im, 180))[-10:, -20:].min() == 255
    assert np.asarray(rotate_clockwise(im, 270))[-20:, :10].min() == 255


@pytest.mark.parametrize("angle", ANGLES)
def test_orient_turns_a_confident_answer_back(angle):
    im = asymmetric()
    probs = np.full(4, 0.01)
    probs[ANGLES.index(angle)] = 0.97
    model = FixedModel(probs)
    upright, degrees, confident = orient(rotate_clockwise(im, angle), model)
    assert (degrees, confident) == (angle, True)
    assert np.array_equal(np.asarray(upright), np.asarray(im))  # exactly the upright pixels
    assert model.seen == [rotate_clockwise(im, angle).size]


def test_orient_does_not_turn_an_unsure_answer():
    im = rotate_clockwise(asymmetric(), 90)
    probs = np.array([0.95 - CONFIDENCE, CONFIDENCE - 0.05, 0.1, 0.0])  # 90 degrees is the best guess, unsure
    assert probs.argmax() == 1 and abs(probs.sum() - 1) < 1e-9
    upright, degrees, confident = orient(im, FixedModel(probs))
    assert degrees == 90 and confident is False and upright is im
    # an unsure "upright" is not trusted either: the caller refuses with REASON
    assert decide(np.array([0.55, 0.40, 0.05, 0.0])) == (0, False)
    assert decide(np.array([0.995, 0.005, 0.0, 0.0])) == (0, True)
    assert REASON == "image appears rotated or flipped"


def test_rotate_back_undoes_every_turn():
    im = asymmetric()
    for angle in ANGLES:
        assert np.array_equal(np.asarray(rotate_back(rotate_clockwise(im, angle), angle)), np.asarray(im))


def test_a_screening_model_is_not_an_orientation_model(tmp_path):
    from edge_xray.runtime import DEFAULT_MODEL

    with pytest.raises(ModelError, match="not an orientation model"):
        OrientationModel(DEFAULT_MODEL)


def test_a_changed_orientation_model_is_refused(tmp_path):
    path = tmp_path / "o.tflite"
    data = bytearray(DEFAULT_ORIENTATION_MODEL.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    (tmp_path / "o.json").write_text(DEFAULT_ORIENTATION_MODEL.with_suffix(".json").read_text())
    with pytest.raises(ModelError, match="sha256"):
        OrientationModel(path)


def test_bundled_orientation_model_card():
    from edge_xray.card import read_model
    from edge_xray.preprocess import file_sha256

    _, card = read_model(DEFAULT_ORIENTATION_MODEL)
    assert card["labels"] == ["0", "90", "180", "270"] and card["format"] == "tflite-int8"
    assert card["sha256"] == file_sha256(DEFAULT_ORIENTATION_MODEL)
    assert card["input"]["dtype"] == "int8" and "preprocessing" in card["input"]
    assert card["training"]["recipe"]["seed"] == 0 and card["training"]["data"]["val"] > 0
    assert DEFAULT_ORIENTATION_MODEL.stat().st_size <= 60 * 1024
    models = DEFAULT_ORIENTATION_MODEL.parent
    assert sum(p.stat().st_size for p in models.glob("*int8*.tflite")) <= 500 * 1024
    m = OrientationModel()
    assert m.outputs["logits"]["dtype"] == np.int8 and m.sha256 == card["sha256"]


@pytest.mark.slow
def test_bundled_model_recognises_turned_real_scans(data_dir):
    m = OrientationModel()
    names = {"NORMAL": sorted((data_dir / "NORMAL").iterdir())[::300][:4],
             "PNEUMONIA": sorted((data_dir / "PNEUMONIA").iterdir())[::900][:4]}
    from edge_xray.preprocess import load_image

    results = []
    for files in names.values():
        for f in files:
            im = load_image(f)
            for angle in ANGLES:
                upright, degrees, confident = orient(rotate_clockwise(im, angle), m)
                results.append((f.name, angle, degrees, confident))
                if confident and degrees == angle:
                    assert np.array_equal(np.asarray(upright), np.asarray(im))
    right = [r for r in results if r[3] and r[1] == r[2]]
    assert len(results) == 32 and len(right) >= 31, [r for r in results if r not in right]


def test_train_orientation_command_refuses_bad_input(tmp_path):
    from edge_xray.cli import cli

    r = CliRunner().invoke(cli, ["train-orientation", str(tmp_path / "missing"), "--out", str(tmp_path / "o.tflite"),
                                 "--run", str(tmp_path / "run")])
    assert r.exit_code == 3 and "not a folder" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["train-orientation", str(tmp_path), "--out", str(tmp_path / "o.h5")])
    assert r.exit_code == 2 and ".tflite" in r.output


@pytest.mark.slow
def test_tiny_orientation_training_end_to_end(data_dir, tmp_path):
    """A real (tiny) run: 32 px, a stratified subset, one float and one QAT epoch, to a run folder; then
    int8 with its card (convert/auxiliary.py)."""
    from edge_xray.convert.auxiliary import convert_orientation
    from edge_xray.train.orientation import train_orientation

    out = tmp_path / "o.tflite"
    run = train_orientation(data_dir, tmp_path / "run", epochs=1, qat_epochs=1, image_size=TINY, limit=40, seed=1,
                            batch_size=32, quiet=True)
    card = convert_orientation(run, out)
    assert out.is_file() and out.with_suffix(".json").is_file()
    side = json.loads(out.with_suffix(".json").read_text())
    assert side == json.loads(json.dumps(card)) and side["labels"] == ["0", "90", "180", "270"]
    assert side["input"]["shape"] == [1, TINY, TINY, 1] and side["input"]["dtype"] == "int8"
    val = side["metrics"]["val"]
    assert sum(val[str(a)]["n"] for a in ANGLES) == 4 * side["training"]["data"]["val"] > 0
    assert [h["phase"] for h in side["training"]["history"]] == ["float", "qat"]
    # the device side loads it, in a process without TensorFlow
    probe = ("import sys, json; from edge_xray.orientation import OrientationModel, orient; from PIL import Image; "
             "import numpy as np; m = OrientationModel(sys.argv[1]); "
             "r = orient(Image.fromarray(np.full((80, 90), 128, np.uint8)), m); "
             "print(json.dumps([r[1], r[2], sorted(k for k in sys.modules if k.startswith('tensorflow'))]))")
    p = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True, timeout=120)
    degrees, confident, heavy = json.loads(p.stdout.strip().splitlines()[-1])
    assert degrees in ANGLES and isinstance(confident, bool) and heavy == []
