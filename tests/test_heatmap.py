"""Readable heatmaps: size cap, answer and legend on the image, evidence only for the shown answer."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from conftest import xray_like
from edge_xray.batch import HeatmapFiles
from edge_xray.heatmap import MAX_SIDE, MIN_SIDE_DRAWN, cam, draw_overlay, render_heatmap

C = 8  # channels of the fake feature map

PNEUMONIA = {"label": "PNEUMONIA", "pneumonia_probability": 0.93, "pneumonia_type": "bacterial",
             "type_probability": 0.81, "advice": "REFER TODAY: signs of pneumonia, likely bacterial"}
NORMAL = {"label": "NORMAL", "pneumonia_probability": 0.04, "pneumonia_type": None, "type_probability": None,
          "advice": "No pneumonia found by the screen; follow clinical signs and re-check if unwell"}


def _card():
    k = np.zeros((C, 3), np.float32)
    k[0, 1] = 1.0  # channel 0: evidence for bacterial
    k[1, 0] = 1.0  # channel 1: evidence for normal
    return {"cam": {"kernel": k.tolist(), "bias": [0.0, 0.0, 0.0]}}


def _features():
    f = np.zeros((8, 8, C), np.float32)
    f[1:4, 1:4, 0] = 2.0  # bacterial evidence in the top left
    f[5:7, 5:7, 1] = 1.0  # normal evidence bottom right
    return f


@functools.lru_cache(maxsize=None)
def _scan(w=1800, h=1400):
    return Image.fromarray(xray_like((w, h)))


def _coloured(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.int16)
    return (np.abs(a[..., 0] - a[..., 1]) + np.abs(a[..., 1] - a[..., 2])) > 10


def test_cam_keeps_only_evidence_for_the_answer():
    m = cam(_card(), _features(), 1)
    assert m.max() == 1.0 and m[2, 2] == 1.0 and m[6, 6] == 0.0
    n = cam(_card(), _features(), 0)
    assert n[6, 6] == 1.0 and n[2, 2] == 0.0


def test_size_capped_at_the_long_side_and_small_scans_enlarged():
    out = render_heatmap(_card(), _scan(1300, 1000), _features(), PNEUMONIA)
    assert out.mode == "RGB" and out.size[0] == MAX_SIDE  # width capped, the band adds height below
    small = render_heatmap(_card(), _scan(200, 150), _features(), PNEUMONIA)
    assert small.size[0] == MIN_SIDE_DRAWN


def test_pneumonia_draws_colour_where_the_evidence_is_and_nowhere_else():
    out = np.asarray(render_heatmap(_card(), _scan(800, 800), _features(), PNEUMONIA))
    scan = out[:800]
    col = _coloured(scan)
    assert col[200:400, 200:400].mean() > 0.9  # the top-left evidence (cells 1-3 of 8)
    assert col[650:750, 650:750].mean() == 0  # normal evidence is not drawn for a PNEUMONIA answer


def test_normal_gets_no_overlay_by_default_but_text_is_written():
    scan = _scan(800, 800)
    out = np.asarray(render_heatmap(_card(), scan, _features(), NORMAL))
    assert not _coloured(out[:800]).any()  # the scan is drawn grey, untouched
    assert np.array_equal(out[:800, :, 0], np.asarray(scan))
    band = out[800:]
    assert band.shape[0] > 40 and band.std() > 5  # the band holds text
    asked = np.asarray(render_heatmap(_card(), scan, _features(), NORMAL, normal_evidence=True))
    assert _coloured(asked[:800])[540:660, 540:660].mean() > 0.9


def test_text_band_shows_the_answer():
    scan = _scan(800, 800)
    a = np.asarray(render_heatmap(_card(), scan, _features(), PNEUMONIA))
    b = np.asarray(render_heatmap(_card(), scan, _features(), dict(PNEUMONIA, pneumonia_probability=0.55)))
    assert a.shape == b.shape
    diff = np.abs(a.astype(int) - b.astype(int)).sum(-1) > 0
    assert not diff[:800].any() and diff[800:].any()  # only the text changed: p is written on the image


def test_save_heatmap_writes_pneumonia_only(tmp_path):
    scan = _scan(600, 500)
    assert draw_overlay(_card(), scan, _features(), dict(NORMAL, status="ok")) is None
    files = HeatmapFiles(tmp_path)
    p = files.write(draw_overlay(_card(), scan, _features(), dict(PNEUMONIA, status="ok")), "x/a.png")
    assert p.name == "a.heatmap.jpg" and Image.open(p).size[0] == 600
    p2 = files.write(draw_overlay(_card(), scan, _features(), dict(PNEUMONIA, status="ok")), "y/a.png")
    assert p2.name == "a-2.heatmap.jpg"
