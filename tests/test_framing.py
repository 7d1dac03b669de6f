"""Framed scans (issue 20, row 6): uniform borders are cropped to the radiograph before screening.

PACS screenshots, digitised films and letterboxed exports frame a scan in black or white; a photographed
film has a noisy dark surround. Framed normal scans read as pneumonia before the crop (5 to 31 of 40 at
5-20 % borders). These tests check the crop on synthetic framed scans (1 to 4 sides, black, white and
noisy, with JPEG artefacts), that it leaves an unframed scan whole, that it never cuts into the
radiograph, the border augmentation of training, and on the real full-resolution scans that the crop
stays out of them and that a framed normal scan keeps its answer.
"""

import io

import numpy as np
import pytest
from PIL import Image

from conftest import FULLRES, xray_like
from edge_xray.preprocess import border_box, crop_border, prepare
from edge_xray.train.augment import BORDER_FRACTION, add_border, augment, random_border

SIDES = [(1, 1, 1, 1), (1, 1, 0, 0), (0, 0, 1, 1), (1, 0, 0, 0), (0, 1, 1, 0), (1, 0, 1, 1)]


def jpeg(a: np.ndarray, quality=85) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def true_box(gray, fractions):
    h, w = gray.shape
    t, b, l, r = (int(round(f * n)) for f, n in zip(fractions, (h, h, w, w)))
    return l, t, l + w, t + h


@pytest.mark.parametrize("kind", ["black", "white", "noisy"])
@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2, 0.3])
def test_borders_on_one_to_four_sides_are_cropped_to_the_radiograph(kind, fraction):
    # the scan's edges a little brighter than a dark border
    gray = (xray_like((400, 360), seed=1).astype(np.int16) + 40).clip(0, 230).astype(np.uint8)
    h, w = gray.shape
    for i, sides in enumerate(SIDES):
        fractions = [fraction * s for s in sides]
        framed = jpeg(add_border(gray, fractions, kind, np.random.default_rng(i)))
        box = border_box(Image.fromarray(framed))
        want = true_box(gray, fractions)
        # never into the radiograph
        assert box[0] <= want[0] + 1 and box[1] <= want[1] + 1 and box[2] >= want[2] - 1 and box[3] >= want[3] - 1
        slack_x, slack_y = 0.03 * framed.shape[1], 0.03 * framed.shape[0]  # a sliver of border may stay
        assert box[0] >= want[0] - slack_x and box[1] >= want[1] - slack_y, (sides, box, want)
        assert box[2] <= want[2] + slack_x and box[3] <= want[3] + slack_y, (sides, box, want)
        x = prepare(Image.fromarray(framed), 64)
        assert np.abs(x - prepare(Image.fromarray(gray), 64)).mean() < 0.06  # the model sees the scan, not the frame
    assert (h, w) == gray.shape


def test_an_unframed_scan_is_left_whole():
    for seed in range(5):
        im = Image.fromarray(xray_like((380 + 20 * seed, 340), seed=seed))
        assert border_box(im) == (0, 0) + im.size
        assert crop_border(im) is im
    assert np.array_equal(prepare(im, 64), prepare(im, 64, crop=False))


def test_dark_air_beside_the_body_is_not_cropped():
    """A scan whose own edges are dark air that ends along the body's curved outline keeps it."""
    h, w = 360, 400
    yy, xx = np.mgrid[0:h, 0:w]
    gray = xray_like((w, h), seed=2).astype(np.float32)
    outline = 0.12 * w + 0.08 * w * np.cos(np.pi * yy / h)  # the body's edge: a curve, not a line
    gray[(xx < outline) | (xx > w - outline)] = 3  # air, as black as a frame
    gray = jpeg(np.clip(gray, 0, 255).astype(np.uint8), 90)
    l, t, r, b = border_box(Image.fromarray(gray))
    assert l <= 0.05 * w and r >= 0.95 * w  # at most the sliver the curve leaves at its widest


def test_marks_in_a_border_do_not_stop_the_crop():
    gray = xray_like((400, 360), seed=4)
    framed = add_border(gray, (0.15, 0.15, 0.15, 0.15), "black")
    framed[20:34, 8:18] = 255  # an "R" marker and a line of text in the frame
    framed[480:486, 100:130] = 200
    box = border_box(Image.fromarray(framed))
    want = true_box(gray, (0.15,) * 4)
    assert all(abs(a - b) <= 0.03 * max(framed.shape) for a, b in zip(box, want)), (box, want)


def test_a_uniform_grey_letterbox_is_cropped_but_a_grey_scan_is_not():
    gray = xray_like((400, 360), seed=5)
    framed = add_border(gray, (0.2, 0.2, 0, 0), "black")
    framed[: int(0.2 * 360)] = 128  # an exactly uniform mid-grey letterbox
    framed[-int(0.2 * 360):] = 128
    l, t, r, b = border_box(Image.fromarray(framed))
    assert abs(t - 72) <= 2 and abs(b - (72 + 360)) <= 2
    noise = np.random.default_rng(0).normal(128, 20, (300, 300)).clip(0, 255).astype(np.uint8)
    assert border_box(Image.fromarray(noise)) == (0, 0, 300, 300)


def test_border_augmentation():
    gray = xray_like((200, 180), seed=6)
    out = add_border(gray, (0.1, 0.0, 0.3, 0.05), "white")
    assert out.shape == (180 + 18, 200 + 60 + 10)
    assert np.array_equal(out[18:, 60:260], gray) and (out[:18] == 255).all() and (out[:, :60] == 255).all()
    noisy = add_border(gray, (0.2,) * 4, "noisy", np.random.default_rng(0))
    ring = np.concatenate([noisy[:30].ravel(), noisy[-30:].ravel()])
    assert 5 < ring.mean() < 60 and ring.std() > 1  # a dark, not uniform surround
    rng = np.random.default_rng(1)
    sides, depths = [], []
    for _ in range(200):
        o = random_border(gray, rng)
        extra = (o.shape[0] - gray.shape[0]) / gray.shape[0], (o.shape[1] - gray.shape[1]) / gray.shape[1]
        depths.append(max(extra))
        sides.append(o.shape != gray.shape)
    assert 0.3 < np.mean(sides) < 1.0 and max(depths) <= 2 * BORDER_FRACTION[1] + 0.01
    a = augment(gray, 32, np.random.default_rng(3))
    assert a.shape == (32, 32) and np.array_equal(a, augment(gray, 32, np.random.default_rng(3)))
    with pytest.raises(ValueError):
        add_border(gray, (0.1,) * 4, "purple")


def fullres_normals():
    files = sorted((FULLRES / "NORMAL").glob("*.jpeg"))
    if not files:
        pytest.skip(f"full-resolution scans not found at {FULLRES} (set EDGE_XRAY_DATA)")
    return files


def test_real_scans_are_not_cropped_into():
    """The 80 full-resolution scans: most are not cropped at all, none by more than a real mask strip."""
    from edge_xray.preprocess import load_image

    files = fullres_normals() + sorted((FULLRES / "PNEUMONIA").glob("*.jpeg"))
    deepest = []
    for f in files:
        im = load_image(f, 128)
        l, t, r, b = border_box(im)
        w, h = im.size
        deepest.append(max(l / w, t / h, 1 - r / w, 1 - b / h))
    deepest = np.array(deepest)
    assert (deepest > 0).sum() <= 0.1 * len(files) and deepest.max() <= 0.08


@pytest.mark.slow
def test_framed_normal_scans_keep_their_answer():
    """The issue's case: normal full-resolution scans in black 15 % borders (12 of 40 flipped before)."""
    import edge_xray
    from edge_xray.preprocess import load_image

    screener = edge_xray.load_model()
    flips = 0
    files = fullres_normals()
    for f in files:
        gray = np.asarray(load_image(f, screener.model.size))
        base = screener.classify(Image.fromarray(gray))
        framed = screener.classify(Image.fromarray(add_border(gray, (0.15,) * 4, "black")))
        flips += framed.label != base.label
    assert flips <= 1, f"{flips} of {len(files)} framed normal scans changed their answer"


@pytest.mark.parametrize("shape", [(256, 216), (57, 33), (3, 5), (1, 1)])
def test_median3_is_pillows_median_filter(shape):
    """The border crop's denoise on the per-scan path: the same pixels as Pillow's MedianFilter(3)."""
    from PIL import ImageFilter

    from edge_xray.preprocess import median3

    a = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    expected = np.asarray(Image.fromarray(a).filter(ImageFilter.MedianFilter(3)))
    assert np.array_equal(median3(a), expected)
