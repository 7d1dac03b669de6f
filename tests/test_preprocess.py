import io

import numpy as np
import pytest
from PIL import Image

from edge_xray import preprocess as pp
from edge_xray.preprocess import ImageError, equalize, load_image, prepare, quantize

from conftest import xray_like


def save(tmp_path, name, im, **kw):
    p = tmp_path / name
    im.save(p, **kw)
    return p


def test_equalize_is_invariant_to_monotonic_exposure_changes():
    g = xray_like()
    darker = np.rint(255 * (g / 255.0) ** 1.6).astype(np.uint8)  # gamma
    lifted = (g.astype(np.int16) // 2 + 60).astype(np.uint8)  # black level and contrast
    base = equalize(g).astype(int)
    for other in (darker, lifted):
        # rank order is kept, so equalised images differ only by merged grey levels
        assert np.abs(equalize(other).astype(int) - base).mean() < 6


def test_equalize_constant_image_is_zero():
    assert not equalize(np.full((10, 10), 77, np.uint8)).any()


def test_prepare_shape_range_and_levels():
    x = prepare(Image.fromarray(xray_like()), 64)
    assert x.shape == (64, 64) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.allclose(x * 255, np.rint(x * 255), atol=1e-4)  # exactly k/255


def test_quantize_uses_scale_and_zero_point():
    x = np.array([0.0, 128 / 255, 1.0], np.float32)
    q = quantize(x, 1 / 255, -128)
    assert q.dtype == np.int8 and q.tolist() == [-128, 0, 127]
    assert quantize(np.array([2.0], np.float32), 1 / 255, -128).tolist() == [127]  # clipped


def test_16bit_png_is_rescaled_not_clamped(tmp_path):
    g8 = xray_like()
    g16 = (g8.astype(np.uint16) * 16 + 100)  # 12-bit data in a 16-bit PNG
    p16 = save(tmp_path, "a16.png", Image.fromarray(g16))
    p8 = save(tmp_path, "a8.png", Image.fromarray(g8))
    a = prepare(load_image(p16), 64)
    b = prepare(load_image(p8), 64)
    assert np.abs(a - b).max() <= 5 / 255 and np.abs(a - b).mean() < 0.004


def test_exif_orientation_is_applied(tmp_path):
    g = xray_like((300, 200))
    g[10:60, 10:120] = 255  # a marker in the top-left corner
    im = Image.fromarray(g).rotate(90, expand=True)  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = save(tmp_path, "photo.jpg", im.convert("RGB"), exif=exif, quality=95)
    out = np.asarray(load_image(p), float)
    assert out.shape == g.shape

    def corr(a, b):
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    assert corr(out, g) > 0.9 > corr(out, g[::-1, ::-1]) + 0.1


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA"])
def test_colour_modes_match_grey(tmp_path, mode):
    g = xray_like()
    im = Image.fromarray(g).convert(mode)
    p = save(tmp_path, f"x-{mode}.png", im)
    a = prepare(load_image(p), 64)
    b = prepare(Image.fromarray(g), 64)
    assert np.abs(a - b).mean() < 0.02


def test_large_jpeg_decodes_reduced_and_matches(tmp_path):
    g = np.asarray(Image.fromarray(xray_like()).resize((2400, 2000), Image.Resampling.BICUBIC))
    p = save(tmp_path, "big.jpg", Image.fromarray(g), quality=95)
    small = load_image(p, 128)
    assert max(small.size) < 2400  # decoded at reduced scale
    a = prepare(small, 128)
    b = prepare(Image.fromarray(g), 128)
    assert np.abs(a - b).mean() < 0.03


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"hello, this is text\n" * 20, "not an image file (unknown or corrupt format)"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n" * 5, "not an image file (unknown or corrupt format)"),
        (bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not an image file (unknown or corrupt format)"),
    ],
)
def test_bad_bytes(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert str(e.value) == reason


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(xray_like()).save(buf, "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"^corrupt or truncated image"):
        load_image(p)


def test_tiny_image(tmp_path):
    p = save(tmp_path, "one.png", Image.new("L", (1, 1)))
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert str(e.value) == "image too small (1x1 pixels, need at least 64 on each side)"


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    p = save(tmp_path, "bomb.png", Image.new("1", (20000, 20000)))  # tiny file, 400 M pixels
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert str(e.value) == f"image too large (over {pp.MAX_PIXELS} pixels)"


def test_missing_and_folder(tmp_path):
    with pytest.raises(ImageError, match="^no such file$"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="^is a folder, not an image$"):
        load_image(tmp_path)


def test_gray8_from_array_handles_float_and_constant():
    a = pp.gray8_from_array(np.array([[0.0, 0.5], [1.0, np.nan]]))
    assert np.asarray(a).tolist() == [[0, 128], [255, 0]]
    assert not np.asarray(pp.gray8_from_array(np.full((3, 3), 7))).any()


def test_list_images_recurses_and_keeps_missing(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for n in ("d/a.png", "d/e/b.JPG", "d/notes.txt", "d/.hidden.png"):
        (tmp_path / n).write_bytes(b"x")
    from edge_xray.inputs import list_images

    out = list_images([tmp_path / "d", tmp_path / "missing.png"])
    assert [p.name for p in out] == ["a.png", "b.JPG", "missing.png"]
