"""Decode and preprocess chest X-rays.

This is the one preprocessing module of the project: training, calibration and the edge app all call
`load_image` and `prepare`, so that the field device sees exactly what the model was trained on.
Only numpy and Pillow are used here (pydicom for DICOM files, imported when one is read).

Pipeline: decode (JPEG at reduced scale when it is large) -> EXIF transpose -> 8-bit grayscale
(16-bit and float data rescaled from their own range, never clamped) -> square resize (the aspect ratio
is not kept, as in the training data) -> histogram equalisation -> [0, 1] float -> int8 with the
model's own input scale and zero point.

Histogram equalisation removes exposure, black level, gamma and contrast: in the training data these
differ by class for reasons unrelated to the lungs, and a network would otherwise learn them.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp")
MIN_SIDE = 64  # pixels: anything smaller cannot be a radiograph we can read
MAX_FILE_BYTES = 256 * 1024 * 1024
# Pillow's decompression-bomb limit is kept as it is (about 89 M pixels); larger images are refused.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class ImageError(ValueError):
    """An input that cannot be read as an image (the message is one line, for the user)."""

    exit_code = 3


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def load_image(path, size: int | None = None) -> Image.Image:
    """Read PATH as an 8-bit grayscale Pillow image, upright.

    `size` is the side the image will be resized to: large JPEGs are decoded at a reduced scale
    (at least twice that side) which is much faster and gives the same result after the resize.
    Raises ImageError with a one-line reason for anything that is not a readable image.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError("no such file")
    if path.is_dir():
        raise ImageError("is a folder, not an image")
    try:
        nbytes = path.stat().st_size
        if nbytes == 0:
            raise ImageError("empty file")
        if nbytes > MAX_FILE_BYTES:
            raise ImageError(f"file too large ({nbytes // (1024 * 1024)} MB)")
        if is_dicom(path):
            from .dicom import read_dicom  # pydicom is imported only for DICOM input

            return _check_size(read_dicom(path))
        with open(path, "rb") as f:
            data = f.read()
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as e:
        raise ImageError(f"cannot read file ({e.strerror or e})") from None
    return decode_bytes(data, size)


def decode_bytes(data: bytes, size: int | None = None) -> Image.Image:
    """Decode an encoded image (PNG, JPEG, TIFF, BMP) to an upright 8-bit grayscale image."""
    try:
        with warnings.catch_warnings():
            # Past Pillow's limit it only warns up to twice the limit; refuse from the limit on.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"image too large (over {MAX_PIXELS} pixels)")
            if im.format == "JPEG" and size:
                im.draft(im.mode, (2 * size, 2 * size))
            im = ImageOps.exif_transpose(im)
            return _check_size(to_gray8(im))
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image too large (over {MAX_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError("not an image file (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, MemoryError, IndexError, KeyError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"corrupt or truncated image ({msg})") from None


def to_gray8(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit grayscale. High bit depths are rescaled from their own range."""
    im.load()
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return gray8_from_array(np.asarray(im))
    if im.mode == "L":
        return im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))  # radiographs have black surroundings
        im = Image.alpha_composite(background, im)
    chroma = colourfulness(im)
    gray = im.convert("L")
    gray.info["chroma"] = chroma
    return gray


def colourfulness(im: Image.Image) -> float:
    """Mean |R-G| + |G-B| + |B-R| in grey levels on a thumbnail (0 for a grey image)."""
    if im.mode in ("L", "1", "I", "F") or im.mode.startswith("I;"):
        return 0.0
    rgb_im = im if im.mode in ("RGB", "RGBA") else im.convert("RGB")
    small = rgb_im.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=2.0)
    rgb = np.asarray(small.convert("RGB"), np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return float((np.abs(r - g) + np.abs(g - b) + np.abs(b - r)).mean())


def gray8_from_array(arr: np.ndarray) -> Image.Image:
    """Rescale a 2-D array of any depth linearly from its min..max to 0..255 (no clamping)."""
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ImageError(f"expected a 2-D grayscale array, got shape {arr.shape}")
    a = arr.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, np.nanmin(np.where(finite, a, np.inf)) if finite.any() else 0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi > lo:
        a = (a - lo) * (255.0 / (hi - lo))
    else:
        a = np.zeros_like(a)
    return Image.fromarray(np.rint(a).astype(np.uint8), mode="L")


def _check_size(im: Image.Image) -> Image.Image:
    w, h = im.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"image too small ({w}x{h} pixels, need at least {MIN_SIDE} on each side)")
    return im


def equalize(gray: np.ndarray) -> np.ndarray:
    """Histogram equalisation of a uint8 image, returned as uint8 (0..255)."""
    hist = np.bincount(gray.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    cdf_min = cdf[np.flatnonzero(hist)[0]]
    n = cdf[-1]
    if n == cdf_min:  # a constant image
        return np.zeros_like(gray)
    lut = np.rint((cdf - cdf_min) * (255.0 / (n - cdf_min))).clip(0, 255).astype(np.uint8)
    return lut[gray]


def prepare(im: Image.Image, size: int) -> np.ndarray:
    """8-bit grayscale image -> the model's float input, shape (size, size), values in [0, 1]."""
    if im.mode != "L":
        im = to_gray8(im)
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    x = equalize(np.asarray(im, dtype=np.uint8))
    return x.astype(np.float32) * np.float32(1.0 / 255.0)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    """Float input -> the integer tensor of a quantized model, from its own scale and zero point."""
    info = np.iinfo(dtype)
    q = np.rint(x / np.float32(scale)) + zero_point
    return q.clip(info.min, info.max).astype(dtype)


def load_and_prepare(path, size: int) -> np.ndarray:
    return prepare(load_image(path, size), size)


def list_images(paths) -> list[Path]:
    """Files and folders (recursed, sorted) -> image files. Missing paths are kept, to be reported."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(
                    q
                    for q in p.rglob("*")
                    if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES and not q.name.startswith(".")
                )
            )
        else:
            out.append(p)
    return out


def file_sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageError",
    "decode_bytes",
    "equalize",
    "file_sha256",
    "list_images",
    "load_and_prepare",
    "load_image",
    "prepare",
    "quantize",
    "to_gray8",
]
