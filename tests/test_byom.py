"""Bring your own model: a builder's classifier through convert, compare, evaluate, bench and classify.

The models are built here, tiny, the way a builder would (Keras 3 and tf_keras; grey and RGB; 2 and 3
classes; logits, softmax and one sigmoid), on synthetic chest-like scans in a Kermany-style folder.
What is checked: each converts to a fully integer model whose card says its labels, channels, input
range and output kind, with a gate fitted from the representative folder; compare and evaluate report
agreement, |dp|, confusion, latency and size (a screening model through the screen, with refusals);
classify runs a two-label model (no type) and refuses noise at the gate; the screening commands
refuse a plain classifier and a model without a gate (unless --no-gate, which every row then notes);
and every unsupported input gets one line with exit code 4, never a traceback.

Conversions import TensorFlow and are `slow`; the error paths that need no TensorFlow are fast.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import xray_like
from edge_xray.cli import cli

N_PER_CLASS = 24  # synthetic scans per class folder (the gate needs at least 20 in all)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error_line(r, code=4) -> str:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [x for x in r.stderr.splitlines() if not x.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


def _scan(seed: int, pneumonia: bool) -> Image.Image:
    a = xray_like((170, 150), seed).astype(np.float32)
    if pneumonia:  # a hazy patch in the right lung field
        yy, xx = np.mgrid[0:150, 0:170]
        a += 45 * np.exp(-(((xx - 115) / 18.0) ** 2 + ((yy - 75) / 22.0) ** 2))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A Kermany-style folder of synthetic scans (NORMAL/, PNEUMONIA/ with bacteria and virus names),
    a second one for evaluation, a plain two-class folder (cat/, dog/) and a noise image."""
    root = tmp_path_factory.mktemp("byom-data")
    for name, offset in (("rep", 0), ("eval", 1000)):
        for c in ("NORMAL", "PNEUMONIA"):
            (root / name / c).mkdir(parents=True)
        for i in range(N_PER_CLASS):
            s = offset + i
            _scan(s, False).save(root / name / "NORMAL" / f"IM-{s:04d}-0001.png")
            kind = "bacteria" if i % 2 else "virus"
            _scan(s + 500, True).save(root / name / "PNEUMONIA" / f"person{s}_{kind}_{i}.png")
    for c in ("cat", "dog"):
        (root / "pets" / c).mkdir(parents=True)
        for i in range(6):
            _scan(2000 + i + (50 if c == "dog" else 0), c == "dog").save(root / "pets" / c / f"{c}{i}.png")
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (240, 240)).astype(np.uint8)).save(root / "noise.png")
    return root


def _keras3(size, channels, classes, activation, name):
    import keras

    inp = keras.Input((size, size, channels))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.1)(x)
    return keras.Model(inp, keras.layers.Dense(classes, activation=activation)(x), name=name)


def _tf_keras(size, channels, classes, activation):
    from edge_xray.train.tfcompat import tf_keras

    _, keras = tf_keras()
    return keras.Sequential([keras.Input((size, size, channels)),
                             keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                             keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(classes, activation=activation)])


# name: (builder, size, channels, classes, activation, file suffix, --labels)
MODELS = {
    "keras3-rgb-2-softmax": ("keras3", 64, 3, 2, "softmax", ".keras", None),
    "keras3-grey-3-logits": ("keras3", 48, 1, 3, None, ".keras", "NORMAL,BACTERIAL,VIRAL"),
    "tfkeras-rgb-3-softmax": ("tf_keras", 56, 3, 3, "softmax", ".h5", "NORMAL,BACTERIAL,VIRAL"),
    "tfkeras-grey-2-sigmoid": ("tf_keras", 40, 1, 1, "sigmoid", ".h5", None),
}


@pytest.fixture(scope="module")
def builder_models(tmp_path_factory):
    """The models of MODELS, saved as a builder saves them (TensorFlow: slow)."""
    from edge_xray.train.tfcompat import tf_keras

    tf, _ = tf_keras()
    tf.random.set_seed(0)
    d = tmp_path_factory.mktemp("byom-models")
    paths = {}
    for name, (kind, size, ch, n, act, suffix, _) in MODELS.items():
        m = _keras3(size, ch, n, act, name.replace("-", "_")) if kind == "keras3" else _tf_keras(size, ch, n, act)
        paths[name] = d / f"{name}{suffix}"
        m.save(paths[name])
    return paths


@pytest.fixture(scope="module")
def converted(builder_models, folders, tmp_path_factory):
    """Each model converted to int8 with the representative folder (and the first also to float32)."""
    d = tmp_path_factory.mktemp("byom-tflite")
    out = {}
    for name, path in builder_models.items():
        labels = MODELS[name][-1]
        r = run("convert", path, "--int8", "--calibration", folders / "rep", "--out", d / f"{name}-int8.tflite",
                *(["--labels", labels] if labels else []))
        assert r.exit_code == 0, r.output
        out[name] = d / f"{name}-int8.tflite"
    r = run("convert", builder_models["keras3-rgb-2-softmax"], "--float32", "--calibration", folders / "rep",
            "--out", d / "keras3-rgb-2-softmax-float32.tflite")
    assert r.exit_code == 0, r.output
    out["float32"] = d / "keras3-rgb-2-softmax-float32.tflite"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_convert_any_builder_model_to_int8_with_its_card(converted, folders, name):
    from edge_xray.convert.representative import from_folder
    from edge_xray.runtime import Model

    kind, size, ch, n, act, _, labels = MODELS[name]
    m = Model(converted[name])
    card = m.card
    assert m.quantized and m.size == size and m.channels == ch
    assert list(card.labels) == (labels.split(",") if labels else ["NORMAL", "PNEUMONIA"])
    assert card.output_kind == {"softmax": "softmax", None: "logits", "sigmoid": "sigmoid"}[act]
    assert card["input"]["channels"] == ch and card.input_range == (0.0, 1.0)
    assert card["source"]["kind"] == {"keras3": "Keras 3 model", "tf_keras": "tf_keras (Keras 2) model"}[kind]
    assert card["calibration"]["files_sha256"] == from_folder(folders / "rep", size).record["files_sha256"]
    assert card["calibration"]["per_label"] == {"NORMAL": N_PER_CLASS, "PNEUMONIA": N_PER_CLASS}
    assert card.gate and card.gate["fit"]["train_images"] + card.gate["fit"]["val_images"] == 2 * N_PER_CLASS
    assert "features" in m.outputs and card.cam is not None
    logits = m.run(np.full((size, size), 0.5, np.float32))
    assert logits.shape == (len(card.labels),) and np.all(np.isfinite(logits))


@pytest.mark.slow
def test_compare_keras_float_with_its_int8(builder_models, converted, folders):
    r = run("compare", builder_models["keras3-rgb-2-softmax"], converted["keras3-rgb-2-softmax"], folders / "eval",
            "--json")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)
    assert c["road"] == "classifier" and c["n"] == 2 * N_PER_CLASS
    assert c["agreement"] >= 0.9 and c["max_abs_delta_p"] < 0.1 and c["max_abs_delta_p"] >= c["mean_abs_delta_p"]
    for side in ("float", "int8"):
        assert c[side]["latency_ms"] > 0 and c[side]["size_bytes"] > 0
        assert np.array(c[side]["confusion"]["matrix"]).sum() == c["n"]
    assert c["float"]["kind"] == "keras3" and c["int8"]["kind"] == "tflite-int8"
    assert len(c["disagreements"]) == round((1 - c["agreement"]) * c["n"])


@pytest.mark.slow
def test_compare_and_evaluate_screening_tflite_go_through_the_screen(converted, folders, tmp_path):
    r = run("compare", converted["float32"], converted["keras3-rgb-2-softmax"], folders / "eval", "--json")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)
    assert c["road"] == "screener"
    assert c["n"] + len(set(c["refused"]["float"]) | set(c["refused"]["int8"])) == 2 * N_PER_CLASS
    assert c["float"]["confusion"]["labels"] == ["NORMAL", "PNEUMONIA"]
    r = run("evaluate", converted["keras3-rgb-2-softmax"], folders / "eval", "--json", "--report", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    e = json.loads(r.stdout)
    assert e["road"] == "screener" and e["gate"] is True and e["model_verified"] is False
    assert e["n"] + len(e["refused"]) == 2 * N_PER_CLASS
    assert sum(map(sum, e["confusion_2class"]["matrix"])) == e["n"]
    assert e["bacterial_vs_viral_accuracy"] is None  # a two-label model tells no type
    assert (tmp_path / "rep" / "report.md").is_file() and not (tmp_path / "rep" / "confusion_3class.png").exists()
    r = run("evaluate", converted["keras3-grey-3-logits"], folders / "eval", "--json")
    assert r.exit_code == 0, r.output
    assert "confusion_3class" in json.loads(r.stdout)
    # a two-label model needs no Kermany file names (no bacterial/virus in them)
    for c in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "plain" / c).mkdir(parents=True)
        for i, p in enumerate(sorted((folders / "eval" / c).iterdir())[:5]):
            (tmp_path / "plain" / c / f"scan{i}.png").write_bytes(p.read_bytes())
    r = run("evaluate", converted["keras3-rgb-2-softmax"], tmp_path / "plain", "--json")
    assert r.exit_code == 0, r.output
    e = json.loads(r.stdout)
    assert e["road"] == "screener" and e["n"] + len(e["refused"]) == 10


@pytest.mark.slow
def test_classify_a_builder_model_with_its_gate(converted, folders):
    scan = sorted((folders / "eval" / "PNEUMONIA").iterdir())[0]
    r = run("classify", scan, folders / "noise.png", "--model", converted["keras3-rgb-2-softmax"],
            "--allow-unverified-model", "--json")
    assert r.exit_code == 3, r.output  # the noise image is refused
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert rows[1]["status"] == "rejected" and rows[1]["error"].startswith("does not look like")
    assert rows[0]["model_verified"] is False and rows[0]["note"] is None
    if rows[0]["status"] == "ok":
        assert rows[0]["label"] in ("NORMAL", "PNEUMONIA") and rows[0]["pneumonia_type"] is None
    r = run("classify", scan, "--model", converted["tfkeras-rgb-3-softmax"], "--allow-unverified-model", "--json")
    assert r.exit_code in (0, 3) and json.loads(r.stdout)["status"] in ("ok", "rejected")


@pytest.mark.slow
def test_screening_refuses_a_plain_classifier_and_a_model_without_gate(builder_models, folders, tmp_path):
    r = run("convert", builder_models["keras3-rgb-2-softmax"], "--calibration", folders / "pets",
            "--out", tmp_path / "pets.tflite")
    assert r.exit_code == 0, r.output
    line = one_error_line(run("classify", folders / "noise.png", "--model", tmp_path / "pets.tflite",
                              "--allow-unverified-model"))
    assert line == ("Error: pets.tflite: labels cat/dog: screening needs a model labelled NORMAL/PNEUMONIA or "
                    "NORMAL/BACTERIAL/VIRAL (convert, compare, evaluate and bench take any classifier)")
    r = run("evaluate", tmp_path / "pets.tflite", folders / "pets", "--json")
    assert r.exit_code == 0, r.output
    e = json.loads(r.stdout)
    assert e["road"] == "classifier" and e["confusion"]["labels"] == ["cat", "dog"] and e["n"] == 12
    r = run("convert", builder_models["keras3-rgb-2-softmax"], "--calibration", folders / "rep", "--no-gate",
            "--out", tmp_path / "nogate.tflite")
    assert r.exit_code == 0 and "gate: none (--no-gate)" in r.stderr
    line = one_error_line(run("classify", folders / "noise.png", "--model", tmp_path / "nogate.tflite",
                              "--allow-unverified-model"))
    assert "has no out-of-distribution gate" in line and "--no-gate" in line
    r = run("classify", folders / "noise.png", "--model", tmp_path / "nogate.tflite", "--allow-unverified-model",
            "--no-gate", "--json")
    assert "no out-of-distribution gate (--no-gate)" in json.loads(r.stdout)["note"]


@pytest.mark.slow
def test_a_tflite_without_card(converted, folders, tmp_path):
    card = json.loads(converted["keras3-rgb-2-softmax"].with_suffix(".json").read_text())
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(converted["keras3-rgb-2-softmax"].read_bytes()[: card["flatbuffer_bytes"]])
    r = run("evaluate", bare, folders / "eval", "--labels", "NORMAL,PNEUMONIA", "--json")
    assert r.exit_code == 0, r.output
    e = json.loads(r.stdout)
    assert e["road"] == "classifier" and e["device"]["kind"] == "tflite (no card)" and e["n"] == 2 * N_PER_CLASS
    r = run("compare", bare, converted["keras3-rgb-2-softmax"], folders / "eval", "--labels", "NORMAL,PNEUMONIA",
            "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["agreement"] == 1.0  # the same network, softmax found
    r = run("bench", "--model", bare, "--runs", "10", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["input"] == "64x64x3"


@pytest.mark.slow
def test_nested_model_with_augmentation_and_rescaling(folders, tmp_path):
    """The way tutorials build one: augmentation layers, a Rescaling layer (input 0..255) and a nested
    base network under global pooling and a dense head."""
    import keras

    keras.utils.set_random_seed(0)
    aug = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.05)])
    base = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                             keras.layers.Conv2D(16, 3, strides=2, activation="relu")], name="base")
    inp = keras.Input((64, 64, 3))
    x = base(keras.layers.Rescaling(1 / 255)(aug(inp)))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(tmp_path / "tutorial.keras")
    r = run("convert", tmp_path / "tutorial.keras", "--calibration", folders / "rep", "--input-range", "0,255",
            "--out", tmp_path / "t.tflite")
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "t.json").read_text())
    assert card["input"]["range"] == [0.0, 255.0] and card["gate"] and card["cam"]
    r = run("compare", tmp_path / "tutorial.keras", tmp_path / "t.tflite", folders / "eval", "--json")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)  # the Keras model is fed as the card says (0..255)
    assert c["agreement"] >= 0.9 and c["max_abs_delta_p"] < 0.1
    # QAT: rebuilt as tf_keras (nested base, augmentation left out), then tfmot refuses a nested base
    line = one_error_line(run("qat", tmp_path / "tutorial.keras", folders / "rep", "--out", tmp_path / "q",
                              "--input-range", "0,255"))
    assert "Quantizing a keras Model inside another keras Model is not supported" in line and "build it flat" in line


@pytest.mark.slow
def test_unsupported_models_get_one_line(tmp_path):
    import keras

    a, b = keras.Input((32, 32, 1)), keras.Input((32, 32, 1))
    two = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([a, b])))
    keras.Model([a, b], two).save(tmp_path / "two_inputs.keras")
    inp = keras.Input((32, 32, 1))
    regression = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(inp))
    keras.Model(inp, regression).save(tmp_path / "regression.keras")
    inp = keras.Input((32, 48, 3))
    keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inp))).save(tmp_path / "wide.keras")
    expected = {
        "two_inputs.keras": "Error: two_inputs.keras: 2 inputs; an image classifier has one",
        "regression.keras": "Error: regression.keras: one output with linear activation is a regression, not a "
                            "classifier (a two-class model ends in 2 units, or in 1 unit with a sigmoid)",
        "wide.keras": "Error: wide.keras: input 32x48 is not square: the edge pipeline feeds square images "
                      "(rebuild the model with a square input)",
    }
    for name, line in expected.items():
        assert one_error_line(run("convert", tmp_path / name, "--float32", "--out", tmp_path / "o.tflite")) == line
    assert not (tmp_path / "o.tflite").exists()


@pytest.mark.slow
def test_qat_finetunes_a_keras3_model_beside_ptq(builder_models, folders, tmp_path):
    r = run("qat", builder_models["keras3-rgb-2-softmax"], folders / "rep", "--out", tmp_path / "q", "--epochs", "1",
            "--json")
    assert r.exit_code == 0, r.output
    q = json.loads(r.stdout)
    figs = q["figures"]
    assert set(figs) == {"float (as given)", "int8, post-training quantization", "int8, quantization-aware fine-tuning"}
    assert q["held_out_images"] + q["train_images"] == 2 * N_PER_CLASS and len(q["loss_per_epoch"]) == 1
    for name in ("int8, post-training quantization", "int8, quantization-aware fine-tuning"):
        assert 0 <= figs[name]["max_abs_delta_p"] <= 1 and 0 <= figs[name]["agreement_with_float"] <= 1
        assert (tmp_path / "q" / figs[name]["file"]).is_file()
    assert json.loads((tmp_path / "q" / "qat_report.json").read_text()) == q


# fast: refused before TensorFlow is imported ----------------------------------------------------------

@pytest.mark.parametrize("name,data,line", [
    ("m.keras", b"not a zip", "m.keras: not a Keras model file (a .keras file is a zip archive; this one is corrupt "
                              "or something else)"),
    ("m.h5", b"PK\x03\x04 not hdf5", "m.h5: not a Keras model file (not an HDF5 file: corrupt or something else)"),
    ("m.tflite", b"TFL3", "m.tflite is already a TFLite model: compare, evaluate and bench take it as it is"),
    ("m.onnx", b"onnx", "m.onnx: not a Keras model file (.keras, .h5) or a SavedModel folder"),
])
def test_unsupported_files_get_one_line_fast(tmp_path, name, data, line):
    (tmp_path / name).write_bytes(data)
    r = run("convert", tmp_path / name, "--float32", "--out", tmp_path / "o.tflite")
    assert one_error_line(r) == f"Error: {line}"


def test_a_folder_that_is_no_model(tmp_path):
    (tmp_path / "stuff").mkdir()
    line = one_error_line(run("convert", tmp_path / "stuff", "--float32", "--out", tmp_path / "o.tflite"))
    assert line == (f"Error: {tmp_path / 'stuff'}: not a model folder (expected an `edge-xray train` run or a "
                    "SavedModel with saved_model.pb)")


def test_two_label_and_reordered_decisions():
    from edge_xray.decision import ADVICE, URGENCY_TODAY, Calibration, ScreeningLabels

    two = Calibration(labels=ScreeningLabels.of(["NORMAL", "PNEUMONIA"]), logit_bias=(0.0, 0.0))
    d = two.decide(np.array([0.0, 2.0]))
    assert d.label == "PNEUMONIA" and d.pneumonia_type is None and d.type_probability is None
    assert d.advice == ADVICE["pneumonia"] and d.urgency == URGENCY_TODAY
    assert d.pneumonia_probability == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert two.decide(np.array([2.0, 0.0])).label == "NORMAL"
    # folders sorted by name give BACTERIAL, NORMAL, VIRAL: the same answer as the standard order
    odd = Calibration(labels=ScreeningLabels.of(["bacterial", "normal", "viral"]))
    std = Calibration()
    a, b = odd.decide(np.array([1.5, 0.2, 0.9])), std.decide(np.array([0.2, 1.5, 0.9]))
    assert (a.cls, a.pneumonia_probability, a.type_probability) == (b.cls, b.pneumonia_probability, b.type_probability)
    assert ScreeningLabels.of(["cat", "dog"]) is None and ScreeningLabels.of(["NORMAL", "PNEUMONIA", "X"]) is None


def test_model_outputs_and_inputs_as_the_card_says():
    from edge_xray.card import ModelCard
    from edge_xray.errors import ModelError
    from edge_xray.runtime import as_logits, input_values

    p = np.array([[0.2, 0.8]])
    assert np.allclose(np.exp(as_logits(p, "softmax")), p)
    z = as_logits(np.array([[0.8]]), "sigmoid")
    assert z.shape == (1, 2) and np.allclose(1 / (1 + np.exp(-(z[0, 1] - z[0, 0]))), 0.8)
    x = input_values(np.array([[0.0, 1.0]]), 3, (-1.0, 1.0))
    assert x.shape == (1, 2, 3) and np.allclose(x[0, 0], -1) and np.allclose(x[0, 1], 1)
    with pytest.raises(ModelError, match="output must be one of"):
        ModelCard({"output": "relu"})
    with pytest.raises(ModelError, match="input.range"):
        ModelCard({"input": {"range": [1, 0]}})
    with pytest.raises(ModelError, match="sigmoid output needs two labels"):
        ModelCard({"output": "sigmoid", "labels": ["a", "b", "c"]})


def test_a_two_label_answer_on_the_referral_slip():
    import datetime

    from types import SimpleNamespace

    from edge_xray.decision import Calibration, ScreeningLabels
    from edge_xray.screen import Screening
    from edge_xray.slip import slip_lines

    two = Calibration(labels=ScreeningLabels.of(["NORMAL", "PNEUMONIA"]), logit_bias=(0.0, 0.0))
    d = two.decide(np.array([0.0, 3.0]))
    s = Screening(path="scan.png", status="ok", threshold=0.5, input_sha256="ab", **d.fields())
    e = SimpleNamespace(screening=s, audit_sha256=None, visit_id=None,
                        screened_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
    info = {"site_sha256": None, "name": "m", "version": "1.0", "sha256": "cd", "threshold": 0.5, "edge_xray": "x"}
    lines = slip_lines(e, info, None)
    assert "bacterial" not in lines["detail"] and "viral" not in lines["detail"]
    assert lines["advice"].startswith("REFER TODAY: signs of pneumonia (this model does not tell")
