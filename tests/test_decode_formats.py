"""Decoding beyond 8-bit single images (edge_xray.levels, preprocess), replayed from the adversarial trial
(issue 12, rows 8 and 12): 16-bit data is mapped by a robust window that one far outlier cannot squeeze into
a few grey levels, and a multi-page TIFF has its first page screened and says so."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import xray_like
from helpers import bundled_screener


@pytest.fixture(scope="module")
def screener():
    return bundled_screener()


def test_12bit_scan_with_one_hot_pixel_is_not_blank(tmp_path):
    from edge_xray.gate import image_reason
    from edge_xray.preprocess import load_image, prepare

    g8 = xray_like()
    g16 = g8.astype(np.uint16) * 16
    g16[5, 5] = 65535  # one hot pixel
    Image.fromarray(g16).save(tmp_path / "a16.png")
    im = load_image(tmp_path / "a16.png")
    assert image_reason(im) is None
    a, b = prepare(im, 128), prepare(Image.fromarray(g8), 128)
    assert np.abs(a - b).mean() < 0.01  # prepared input within 1 %


def test_robust_window_ignores_far_outliers_only():
    from edge_xray.levels import robust_window

    a = np.tile(np.arange(4096, dtype=np.uint16), (64, 1))
    assert robust_window(a) == (0.0, 4095.0)  # nothing far away: the full range
    a[0, 0] = 65535
    lo, hi = robust_window(a)
    assert lo == 0.0 and 4095 < hi < 8000


def test_multipage_tiff_with_a_black_first_page_says_so(screener, tmp_path):
    pages = [Image.new("L", (400, 360)), Image.fromarray(xray_like()), Image.fromarray(xray_like(seed=1))]
    pages[0].save(tmp_path / "m.tif", save_all=True, append_images=pages[1:])
    s = screener.classify(tmp_path / "m.tif")
    assert s.status == "rejected" and s.error == "blank or nearly uniform image"
    assert s.note == "first of 3 pages screened"
    from edge_xray.output import human_line

    assert human_line(s).endswith("(first of 3 pages screened)")
