"""The edge path in a fresh process: no TensorFlow, the lightweight runtime, the real CLI."""

import json
import subprocess
import sys

from conftest import xray_like

PROBE = """
import json, sys
from edge_xray.cli import main
sys.argv = ["edge-xray"] + json.loads(sys.argv[1])
try:
    main()
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras", "sklearn", "matplotlib"))
from edge_xray.runtime import interpreter_class
print(json.dumps({"code": code, "heavy": heavy, "runtime": interpreter_class()[1]}), file=sys.stderr)
"""


def probe(args):
    p = subprocess.run([sys.executable, "-c", PROBE, json.dumps([str(a) for a in args])], capture_output=True,
                       text=True, timeout=120)
    return p, json.loads(p.stderr.strip().splitlines()[-1])


def test_classify_imports_no_tensorflow(tiny_models, tmp_path):
    from PIL import Image

    scan = tmp_path / "scan.png"
    Image.fromarray(xray_like()).save(scan)
    p, r = probe(["classify", scan, "--model", tiny_models["int8"], "--allow-unverified-model", "--json"])
    assert r["heavy"] == [], r
    assert r["runtime"] in ("ai_edge_litert", "tflite_runtime")
    assert r["code"] in (0, 3, None)
    row = json.loads(p.stdout.splitlines()[0])
    assert row["path"] == str(scan)


def test_info_and_bench_import_no_tensorflow(tiny_models):
    for args in (["info", "--model", tiny_models["int8"]],
                 ["bench", "--model", tiny_models["int8"], "--runs", "10"]):
        p, r = probe(args)
        assert r["heavy"] == [] and r["code"] in (0, None), (args, p.stderr[-500:])


def test_both_lightweight_runtimes_give_the_same_answers(tiny_models, subset):
    """ai_edge_litert and tflite_runtime (the armv7 fallback), each in its own process."""
    import importlib.util
    import os

    import pytest

    rows = {}
    for rt in ("ai_edge_litert", "tflite_runtime"):
        if importlib.util.find_spec(rt) is None:
            pytest.skip(f"{rt} is not installed")
        p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(["classify", str(subset), "--model",
                            str(tiny_models["int8"]), "--allow-unverified-model", "--json"])], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, EDGE_XRAY_RUNTIME=rt))
        probe_out = json.loads(p.stderr.strip().splitlines()[-1])
        assert probe_out["runtime"] == rt and probe_out["heavy"] == []
        rows[rt] = [json.loads(x) for x in p.stdout.splitlines()]
    a, b = rows["ai_edge_litert"], rows["tflite_runtime"]
    assert len(a) == len(b) == 30
    # the two runtimes' int8 kernels may put the logits a few output steps apart (4, as the QAT parity test
    # in test_convert.py allows): p moves by at most 2 * 4 steps / (4 T) (the softmax's slope). 0.01 held
    # only while the tiny model was collapsed (one answer for every scan).
    card = json.loads(tiny_models["int8"].with_suffix(".json").read_text())
    bound = 2 * 4 * card["outputs"]["logits"]["scale"] / (4 * card["temperature"])
    for x, y in zip(a, b):
        assert x["path"] == y["path"] and x["status"] == y["status"]
        if x["status"] == "ok":
            assert abs(x["pneumonia_probability"] - y["pneumonia_probability"]) <= max(0.01, bound) + 1e-4
