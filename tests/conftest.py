"""Shared fixtures. Tests that need the real data read it from EDGE_XRAY_DATA (default: the shared
folder beside the repository); under CI (CI=true) they fail when it is missing instead of skipping.

Tests that train or convert (they use the `tiny_run` or `tiny_models` fixtures) are marked `slow`
here; `pytest -m "not slow"` is the fast development loop."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGE_XRAY_DATA", ROOT.parent / "shared" / "data" / "chest_xray"))
TRAIN = DATA / "train"
FULLRES = DATA / "fullres"
TINY = 32  # px: the tiny end-to-end pipeline


SLOW_FIXTURES = {"tiny_run", "tiny_models"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def need_data():
    if not (TRAIN / "NORMAL").is_dir():
        msg = f"real data not found at {DATA} (set EDGE_XRAY_DATA)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def data_dir():
    need_data()
    return TRAIN


@pytest.fixture(scope="session")
def subset(tmp_path_factory, data_dir):
    """A small labelled folder of real images (symlinks): 12 normal, 9 bacterial, 9 viral."""
    root = tmp_path_factory.mktemp("subset")
    for folder, patterns in (("NORMAL", {"": 12}), ("PNEUMONIA", {"_bacteria_": 9, "_virus_": 9})):
        (root / folder).mkdir()
        names = sorted(p.name for p in (data_dir / folder).iterdir())
        for pat, n in patterns.items():
            for name in [x for x in names if pat in x][:: max(1, len(names) // 200)][:n]:
                (root / folder / name).symlink_to(data_dir / folder / name)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir):
    """A real training run on a tiny stratified subset at 32 px, one float and one QAT epoch."""
    from edge_xray.train.train import train

    out = tmp_path_factory.mktemp("run") / "run"
    result = train(data_dir, out, epochs=1, qat_epochs=1, image_size=TINY, limit=60, seed=1, quiet=True,
                   batch_size=16)
    return out, result


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_run, subset, data_dir):
    """Calibration set, int8 model and float32 twin built from the tiny run with the project's commands."""
    from edge_xray.calibration.calibrate import calibrate
    from edge_xray.convert.convert import convert

    run, _ = tiny_run
    d = tmp_path_factory.mktemp("models")
    calibrate(subset, d / "calib.npz", size=24, seed=0, image_size=TINY)
    # the gate fitted as the bundled model's is (`convert --gate-data DATA`): on training scans, its thresholds
    # on the run's validation scans; a gate fitted on the 24-image representative set alone is too narrow
    convert(run, d / "m-int8.tflite", mode="int8", calibration=d / "calib.npz", float_model="m-float32.tflite",
            gate_data=data_dir)
    convert(run, d / "m-float32.tflite", mode="float32")
    return {"dir": d, "int8": d / "m-int8.tflite", "float32": d / "m-float32.tflite", "calib": d / "calib.npz",
            "run": run}


def xray_like(size=(400, 360), seed=0) -> np.ndarray:
    """A synthetic grey image with chest-X-ray-like structure (bright body, dark lungs, noise)."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w]
    body = 200 * np.exp(-(((xx - w / 2) / (0.45 * w)) ** 4 + ((yy - h / 2) / (0.5 * h)) ** 4))
    lungs = 90 * (np.exp(-(((xx - 0.33 * w) / (0.12 * w)) ** 2 + ((yy - 0.45 * h) / (0.25 * h)) ** 2))
                  + np.exp(-(((xx - 0.67 * w) / (0.12 * w)) ** 2 + ((yy - 0.45 * h) / (0.25 * h)) ** 2)))
    img = body - lungs + rng.normal(0, 6, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture()
def scan_png(tmp_path):
    p = tmp_path / "scan.png"
    Image.fromarray(xray_like()).save(p)
    return p
