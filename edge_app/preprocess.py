"""Decode and preprocess chest X-rays.

This is the one preprocessing module of the project: training, calibration and the edge app all call
`load_image` and `prepare`, so that the field device sees exactly what the model was trained on.
Only numpy and Pillow are used here (pydicom for DICOM files, imported when one is read).

Pipeline: decode (JPEG at reduced scale when it is large; images over LARGE_PIXELS in strips, box-averaged,
see largeimage.py) -> EXIF transpose -> 8-bit grayscale (16-bit and float data through the robust window
of levels.py) -> border crop -> square resize (the aspect ratio
is not kept, as in the training data) -> histogram equalisation -> [0, 1] float -> int8 with the
model's own input scale and zero point.

Borders: `prepare` first crops uniform borders (black or white frames of a PACS screenshot or a
digitised film, a letterbox, the noisy dark surround of a photographed film; on 1 to 4 sides, each at
most BORDER_MAX of the side) to the radiograph inside: a border is a band along a side whose pixels stay
within a tolerance of its outer lines' level (dark, bright, or exactly uniform), ending along a straight
edge in a step. Dark air beside the body (common in the training scans) ends along the body's curved outline and is
kept. A framed scan otherwise squeezes the anatomy into the middle of the model's input, which the model
reads as pneumonia (docs/framing.md, benchmarks/framing.py).

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

from .dicom import has_preamble, looks_like_dataset
from .errors import ImageError
from .levels import colourfulness, gray8_from_array
from .limits import LARGE_PIXELS, MAX_FILE_BYTES, MAX_PIXELS, REDUCED_SIDE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp", ".gif", ".webp")
DICOM_SUFFIXES = (".dcm", ".dicom")
MIN_SIDE = 64  # pixels: anything smaller cannot be a radiograph we can read
# Borders (see the module's docstring): measured on a copy reduced to at most BORDER_SIDE pixels a side.
BORDER_SIDE = 256
BORDER_MAX = 0.4  # of the side: never cropped deeper, per side
BORDER_DARK, BORDER_BRIGHT = 80, 175  # a noisy border is darker or brighter than these grey levels
BORDER_TOL = (6, 24)  # grey levels a border pixel may differ from the border's level (min, max)
BORDER_NOISE_K = 4.0  # the tolerance in units of the border's own noise, within BORDER_TOL
BORDER_MARKS = 0.05  # share of the edge where marks or text in the border may stop it early
BORDER_EDGE_SHARE, BORDER_EDGE_PX = 0.3, 1  # a straight edge: 30 % of it ends within 1 reduced pixel
BORDER_STEP_PX, BORDER_STEP_K = 2, 2.0  # and a step: 2 pixels inside it, twice the tolerance off the level
BORDER_STEP_MIN = 12  # grey levels, and at least this


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


# Devillard's 19-exchange network: its element 4 is the median of 9 (pixels 0-8 of a 3x3 window)
_MEDIAN9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
            (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def median3(a: np.ndarray) -> np.ndarray:
    """The 3x3 median of a 2-D uint8 array, edges replicated: exactly Pillow's MedianFilter(3), about 30
    times faster (a sorting network of whole-array minimum and maximum, on the per-scan path)."""
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    v = [p[i:i + h, j:j + w] for i in range(3) for j in range(3)]
    for i, j in _MEDIAN9:
        v[i], v[j] = np.minimum(v[i], v[j]), np.maximum(v[i], v[j])
    return v[4]


def border_box(im: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom): the radiograph inside the uniform borders of an 8-bit grey image
    (the whole image when it has none). See "Borders" in the module's docstring."""
    w, h = im.size
    factor = max(1, -(-max(w, h) // BORDER_SIDE))
    a = median3(np.asarray(im.reduce(factor) if factor > 1 else im, np.uint8)).astype(np.float32)
    sh, sw = a.shape
    depth = {"top": 0, "bottom": 0, "left": 0, "right": 0}
    found = {}  # side -> (level, tolerance, the edge's points along the side, in reduced pixels)
    for _ in range(4):  # a crop on one side can reveal the border of another (a letterbox in a frame)
        t, b, l, r = depth["top"], sh - depth["bottom"], depth["left"], sw - depth["right"]
        sub = a[t:b, l:r]
        moved = False
        for side, lines, offset, limit in (("top", sub, l, sh), ("bottom", sub[::-1], l, sh),
                                           ("left", sub.T, t, sw), ("right", sub.T[::-1], t, sw)):
            d = _border_depth(lines, int(BORDER_MAX * limit) - depth[side])
            if d is not None:
                depth[side] += d[0]
                found[side] = (d[1], d[2], d[3] + offset)
                moved = True
        if not moved:
            break
    if not found:
        return 0, 0, w, h
    full = np.asarray(im)
    views = {"top": full, "bottom": full[::-1], "left": full.T, "right": full.T[::-1]}
    cut = {side: _refine(views[side], depth[side] * factor, factor, *found[side]) if side in found else 0
           for side in depth}
    return cut["left"], cut["top"], w - cut["right"], h - cut["bottom"]


def _border_depth(lines: np.ndarray, limit: int):
    """(depth, level, tolerance, the edge's points) of the border along LINES (line 0 at the image's edge,
    each a row of pixels along it), at most LIMIT lines deep; None unless the outer lines are near-uniform
    dark, bright (or exactly uniform grey) and the border ends along a straight edge in a step."""
    if limit <= 0 or lines.shape[0] < 2:
        return None
    outer = lines[:2].ravel()
    level = float(np.median(outer))
    dev = np.abs(outer - level)
    if BORDER_DARK < level < BORDER_BRIGHT and np.percentile(dev, 97) > 2:
        return None  # mid-grey and not uniform: the radiograph itself
    if np.mean(dev > BORDER_TOL[1]) > BORDER_MARKS:
        return None  # the outer lines are not one level
    # the border's own noise, from line to line (a photographed film's surround: a gradient along it)
    # (lines 0 and 3 share no pixel of the 3 x 3 median filter: their noise is independent)
    noise = 1.4826 * float(np.median(np.abs(lines[0] - lines[min(3, len(lines) - 1)]))) / np.sqrt(2)
    tol = min(BORDER_TOL[1], max(BORDER_TOL[0], BORDER_NOISE_K * noise))
    # its level at each point of the edge (it may drift along the side), smoothed along it
    run = max(1, lines.shape[1] // 20)
    local = np.convolve(np.median(lines[:3], axis=0), np.ones(run) / run, mode="same")
    local[: run // 2], local[len(local) - run // 2:] = np.median(local[: run]), np.median(local[-run:])
    ok = np.abs(lines[:limit] - local) <= tol
    stop = np.where(ok.all(axis=0), limit, np.argmin(ok, axis=0))  # border depth at each point of the edge
    depth = int(np.percentile(stop, 100 * BORDER_MARKS))  # marks and text in the border stop a few points
    if depth <= 0:
        return None
    at = np.flatnonzero(stop < limit)  # points of the edge not on another side's border
    edge = at[stop[at] <= depth + BORDER_EDGE_PX]
    if at.size and edge.size < BORDER_EDGE_SHARE * at.size:
        return None  # the uniform part ends along a curve: dark air beside the body, not a border
    if at.size:
        inside = lines[np.minimum(stop[edge] + BORDER_STEP_PX, lines.shape[0] - 1), edge]
        if np.median(np.abs(inside - local[edge])) < max(BORDER_STEP_K * tol, BORDER_STEP_MIN):
            return None  # no step at the edge: the radiograph's own grey levels ramp up from its edge
    points = edge if edge.size else np.arange(lines.shape[1])
    return depth, float(np.median(local)), max(tol, float(np.ptp(local)) / 2), points


def _refine(view: np.ndarray, depth: int, factor: int, level: float, tol: float, points: np.ndarray) -> int:
    """The border's depth in full-size pixels: the first line, within a reduced pixel of DEPTH (full-size
    pixels), where the edge's POINTS (reduced) leave the border's level by more than TOL (their median)."""
    if factor == 1:
        return depth
    lo, hi = max(0, depth - factor), min(view.shape[0], depth + factor)
    cols = (points[:, None] * factor + np.arange(factor)).ravel()
    cols = cols[cols < view.shape[1]]
    band = np.abs(view[lo:hi][:, cols].astype(np.float32) - level)
    off = np.flatnonzero(np.median(band, axis=1) > tol)
    return lo + int(off[0]) if off.size else hi


def crop_border(im: Image.Image) -> Image.Image:
    """IM without its uniform borders (see `border_box`); IM itself when it has none."""
    box = border_box(im)
    return im if box == (0, 0) + im.size else im.crop(box)


def prepare(im: Image.Image, size: int, crop: bool = True) -> np.ndarray:
    """8-bit grayscale image -> the model's float input, shape (size, size), values in [0, 1].
    Uniform borders are cropped first (CROP=False only to measure what that changes)."""
    if im.mode != "L":
        im = to_gray8(im)[0]
    if crop:
        im = crop_border(im)
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
