"""Millisecond unit tests of the pure functions: metrics, calibration, the decision, the gate distance,
model cards, run folders and error codes. Hand-computed cases, and scikit-learn where it has the same."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from edge_xray import EdgeXrayError, ImageError, InputError, ModelError, UsageError, metrics
from edge_xray.card import ModelCard
from edge_xray.decision import ADVICE, Calibration, predicted_classes, softmax
from edge_xray.gate import Gate
from edge_xray.train.rundir import RunDir, file_key


def test_roc_auc_hand_computed_and_ties():
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert metrics.roc_auc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts half
    assert math.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))


def test_roc_auc_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.4 * y, 2)  # rounded: many ties
    assert metrics.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)


def test_expected_calibration_error_hand_computed():
    assert metrics.expected_calibration_error([0, 1], [0.1, 0.9]) == pytest.approx(0.1)
    assert metrics.expected_calibration_error([1, 1, 0, 0], [0.75, 0.75, 0.75, 0.75]) == pytest.approx(0.25)


def test_fit_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (4000, 3))
    labels = np.array([rng.choice(3, p=q) for q in softmax(logits)])
    assert metrics.fit_temperature(logits * 3.0, labels) == pytest.approx(3.0, rel=0.1)


def test_prior_correction_undoes_class_weights():
    b = np.array(metrics.prior_correction([2.0, 0.5, 0.5], [100, 50, 50]))
    assert b[1] - b[0] == pytest.approx(math.log(4.0)) and b[1] == b[2] and abs(b.sum()) < 1e-12


def test_decision_label_type_and_advice():
    cal = Calibration(temperature=2.0, logit_bias=(0.0, 0.0, 0.0), threshold=0.5)
    d = cal.decide(np.array([0.0, 4.0, 2.0]))
    probs = softmax(np.array([0.0, 2.0, 1.0]))
    assert d.label == "PNEUMONIA" and d.pneumonia_type == "bacterial" and d.cls == 1
    assert d.pneumonia_probability == pytest.approx(probs[1] + probs[2])
    assert d.type_probability == pytest.approx(probs[1] / (probs[1] + probs[2]))
    assert d.advice == ADVICE["bacterial"]
    n = cal.decide(np.array([3.0, 0.0, 0.5]))
    assert n.fields() == {"label": "NORMAL", "pneumonia_probability": round(n.pneumonia_probability, 4),
                          "pneumonia_type": None, "type_probability": None, "advice": ADVICE["normal"],
                          "urgency": "none"}
    # a type in doubt (P(type | pneumonia) < TYPE_SURE) is said to be uncertain, and still refers today
    u = cal.decide(np.array([0.0, 3.0, 2.9]))
    assert u.pneumonia_type == "bacterial" and u.type_probability < 0.6 and u.advice == ADVICE["uncertain"]
    assert u.advice.startswith("REFER TODAY") and u.urgency == "today" and d.urgency == "today"
    # urgency is the decision's: a sure viral answer refers (not today), an unsure viral one refers today
    v = cal.decide(np.array([0.0, 0.0, 4.0]))
    assert v.pneumonia_type == "viral" and v.type_probability >= 0.6 and v.urgency == "refer"
    assert cal.decide(np.array([0.0, 2.9, 3.0])).urgency == "today"
    # a site's threshold replaces the card's
    assert Calibration(threshold=0.99).decide(np.array([0.0, 4.0, 2.0])).label == "NORMAL"


def test_vectorised_classes_equal_single_decisions():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (200, 3))
    cal = Calibration(1.3, (0.2, -0.1, -0.1), 0.4)
    vec = predicted_classes(cal.probabilities(logits), cal.threshold)
    assert vec.tolist() == [cal.decide(z).cls for z in logits]


def test_gate_distance_hand_computed():
    g = Gate({"mean": [0.0, 0.0, 0.0], "components": [[1.0, 0.0, 0.0]], "variances": [4.0],
              "residual_variance": 1.0, "threshold": 3.0})
    # z = 2 on the component (2^2/4 = 1), residual 3^2 + 0 = 9 -> (1 + 9) / 2 = 5
    assert g.distance(np.array([2.0, 3.0, 0.0])) == pytest.approx(5.0)
    feats = np.zeros((2, 2, 3), np.float32) + np.array([2.0, 3.0, 0.0], np.float32)
    assert "distance 5.0 > 3.0" in g.check_features(np.zeros((16, 16)), feats)


def test_gate_cheap_checks_need_no_model():
    g = Gate(None)
    assert g.check_image(Image.new("L", (300, 300), 128)) == "blank or nearly uniform image"
    assert g.check_image(Image.new("L", (900, 200), 0)).startswith("too long and narrow for a chest X-ray (aspect ratio 4.5")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8))
    assert g.check_image(noise, chroma=40.0) == "colour image: not a radiograph (X-rays are grey)"
    assert g.check_image(noise, chroma=0.0) is None


CARD = {"name": "x", "labels": ["NORMAL", "BACTERIAL", "VIRAL"], "temperature": 1.5, "threshold": 0.4,
        "logit_bias": [0.1, -0.05, -0.05], "gate": {"threshold": 12.5, "variances": [1.0, 0.5]}}


def test_model_card_round_trip(tmp_path):
    flat = bytes(range(256)) * 8
    side = ModelCard.write(tmp_path / "m.tflite", flat, CARD)
    got_flat, card = ModelCard.read(tmp_path / "m.tflite")
    assert got_flat == flat and card.data == side.data
    assert card.temperature == 1.5 and card.threshold == 0.4 and card.logit_bias == (0.1, -0.05, -0.05)
    assert card.labels == ("NORMAL", "BACTERIAL", "VIRAL") and len(card.sha256) == 64


@pytest.mark.parametrize("change, message", [
    ({"temperature": float("nan")}, "model card holds a number that is not finite (card.temperature)"),
    ({"gate": {"threshold": float("nan")}}, "model card holds a number that is not finite (card.gate.threshold)"),
    ({"gate": {"variances": [1.0, float("inf")]}}, "not finite (card.gate.variances[1])"),
    ({"temperature": -1.0}, "model card: temperature must be positive (got -1.0)"),
    ({"threshold": 1.5}, "model card: threshold must lie between 0 and 1 (got 1.5)"),
    ({"logit_bias": [0.0]}, "model card: logit_bias needs one value per label"),
])
def test_model_card_refuses_bad_numbers(tmp_path, change, message):
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        ModelCard(dict(CARD, **change))
    # a card written by hand with NaN in it does not load either
    ModelCard.write(tmp_path / "m.tflite", b"\0" * 64, CARD)
    side = tmp_path / "m.json"
    data = json.loads(side.read_text())
    data.update(change)
    side.write_text(json.dumps(data))
    with pytest.raises(ModelError):
        ModelCard.read(tmp_path / "m.tflite")


def test_errors_carry_their_exit_codes():
    assert [e.exit_code for e in (EdgeXrayError(), UsageError(), InputError(), ImageError(), ModelError())] == [
        1, 2, 3, 3, 4]
    assert issubclass(ImageError, InputError) and issubclass(ModelError, EdgeXrayError)


def test_run_dir_is_the_one_reader_of_run_folders(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.started and not run.finished
    run.write("split.json", {"val_files": [file_key(tmp_path / "NORMAL" / "a.jpeg")]})
    assert run.val_files() == {"NORMAL/a.jpeg"}
    with pytest.raises(InputError, match="no metrics.json"):
        run.metrics
    run.write("metrics.json", {"threshold": 0.4})
    run.qat_model.write_bytes(b"x")
    assert run.finished and RunDir.of_model(run.qat_model).path == run.path


def test_screener_gate_is_always_on_for_images():
    """The API refuses pure noise (the gate cannot be switched off), from a PIL image as from a file."""
    import edge_xray

    screener = edge_xray.load_model()
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400), dtype=np.uint8))
    s = screener.classify(noise)
    assert s.status == "rejected" and s.label is None and s.path == "<image>"
    assert s.to_dict()["advice"] == f"Not screened: {s.error}"
