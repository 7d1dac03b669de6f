"""Decode and preprocess chest X-rays.

This is the one preprocessing module of the project: training, calibration and the edge app all call
`load_image` and `prepare`, so that the field device sees exactly what the model was trained on.
Only numpy and Pillow are used here (pydicom for DICOM files, imported when one is read).

Pipeline: decode (JPEG at reduced scale when it is large; images over LARGE_PIXELS in strips, box-averaged,
see largeimage.py) -> EXIF transpose -> 8-bit grayscale (16-bit and float data through the robust window
of levels.py) -> square resize (the aspect ratio
is not kept, as in the training data) -> histogram equalisation -> [0, 1] float -> int8 with the
model's own input scale and zero point.

Histogram equalisation removes exposure, black level, gamma and contrast: in the training data these
differ by class for reasons unrelated to the lungs, and a network would otherwise learn them.
"""

from __future__ import annotations

import hashlib
import io
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .dicom import LARGE_PIXELS, REDUCED_SIDE, has_preamble, looks_like_dataset
from .errors import ImageError
from .levels import colourfulness, gray8_from_array

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp", ".gif", ".webp")
DICOM_SUFFIXES = (".dcm", ".dicom")
MIN_SIDE = 64  # pixels: anything smaller cannot be a radiograph we can read
# A file is held in memory once (decoded from, and hashed for the audit log): 180 MiB takes a 16-bit
# image up to the pixel limit (179 MB) and keeps a 1 GB device within its memory bound (hardening).
MAX_FILE_BYTES = 180 * 1024 * 1024
# Pillow's decompression-bomb limit is kept as it is (about 89 M pixels); larger images are refused.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


@dataclass(frozen=True)
class Scan:
    """A decoded input: the upright 8-bit grayscale image and what the checks need to know of it."""

    image: Image.Image
    chroma: float = 0.0  # colourfulness of the input as decoded (0 for a grey image)
    sha256: str | None = None  # of the file's bytes, as read once for decoding
    note: str | None = None  # what the reader should know, e.g. "first of 3 pages screened"
    refusal: str | None = None  # why the file's own tags refuse it (DICOM: dicom.tag_refusal), before any inference


def is_dicom(name, head: bytes) -> bool:
    """By its suffix, its DICM preamble, or first bytes that parse as a data set (no preamble, ACR-NEMA)."""
    return Path(str(name)).suffix.lower() in DICOM_SUFFIXES or has_preamble(head) or looks_like_dataset(head)


def read_file(path) -> bytes:
    """The bytes of PATH, read once; ImageError with a one-line reason for anything else."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as e:
        raise ImageError(f"cannot read file ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError("is a folder, not an image")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError("not a regular file (a pipe, device or socket)")
    if st.st_size == 0:
        raise ImageError("empty file")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageError(f"file too large ({st.st_size // (1024 * 1024)} MB)")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as e:
        raise ImageError(f"cannot read file ({e.strerror or e})") from None
    if not data:
        raise ImageError("empty file")
    return data


def load_scan(path, size: int | None = None, digest: bool = True) -> Scan:
    """Read PATH (PNG, JPEG, TIFF, BMP or DICOM) once, as an upright 8-bit grayscale Scan.

    `size` is the side the image will be resized to: large JPEGs are decoded at a reduced scale
    (at least twice that side) which is much faster and gives the same result after the resize.
    Raises ImageError with a one-line reason for anything that is not a readable image.
    With DIGEST (the screening path) the Scan carries the sha256 of the bytes read; without, None.
    """
    data = read_file(path)
    sha256 = hashlib.sha256(data).hexdigest() if digest else None
    if is_dicom(path, data[:512]):
        from .dicom import read_dicom  # pydicom is imported only for DICOM input

        im, chroma, note, refusal = read_dicom(data, MAX_PIXELS)  # the bytes themselves: pixel data viewed in place
        return Scan(_check_size(im), chroma, sha256, note, refusal)
    scan = decode_bytes(data, size)
    return Scan(scan.image, scan.chroma, sha256, scan.note)


def load_image(path, size: int | None = None) -> Image.Image:
    """The upright 8-bit grayscale image of PATH (training, calibration and heatmaps; no hash of the file)."""
    return load_scan(path, size, digest=False).image


def decode_bytes(data: bytes, size: int | None = None) -> Scan:
    """Decode an encoded image (PNG, JPEG, TIFF, BMP) to an upright 8-bit grayscale Scan."""
    try:
        with warnings.catch_warnings():
            # Past Pillow's limit it only warns up to twice the limit; refuse from the limit on.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"image too large (over {MAX_PIXELS} pixels)")
            note = _frames_note(im)
            if im.format == "JPEG" and size:
                im.draft(im.mode, (2 * size, 2 * size))
            elif im.format == "JPEG" and w * h > LARGE_PIXELS:
                im.draft(im.mode, (REDUCED_SIDE, REDUCED_SIDE))
            from .largeimage import decode_large, too_big_to_decode_whole

            if im.size[0] * im.size[1] > LARGE_PIXELS or too_big_to_decode_whole(im, data):  # memory bounded
                gray, chroma = decode_large(im, data)
                return Scan(_check_size(gray), chroma, note=note)
            scan = scan_from_image(im)
            return Scan(scan.image, scan.chroma, note=note)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image too large (over {MAX_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError("not an image file (unknown or corrupt format)") from None
    except MemoryError:
        raise ImageError("not enough memory to decode this image on this device") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"corrupt or truncated image ({msg})") from None


def _frames_note(im: Image.Image) -> str | None:
    """'first of 3 pages screened' for a multi-page TIFF (frames for other formats), else None."""
    try:
        n = int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # a broken page index: screen the first page without a note
        return None
    if n <= 1:
        return None
    return f"first of {n} {'pages' if im.format == 'TIFF' else 'frames'} screened"


def scan_from_image(im: Image.Image) -> Scan:
    """A Pillow image (any mode, EXIF orientation applied) as a Scan."""
    im = ImageOps.exif_transpose(im)
    gray, chroma = to_gray8(im)
    return Scan(_check_size(gray), chroma)


def to_gray8(im: Image.Image) -> tuple[Image.Image, float]:
    """(8-bit grayscale image, colourfulness) of any Pillow mode; high bit depths rescaled from their range."""
    im.load()
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return gray8_from_array(np.asarray(im)), 0.0
    if im.mode == "L":
        return im, 0.0
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (0, 0, 0, 255))  # radiographs have black surroundings
        im = Image.alpha_composite(background, im)
    return im.convert("L"), colourfulness(im)


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
        im = to_gray8(im)[0]
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


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
