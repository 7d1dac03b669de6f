"""Grey levels: arrays of any depth to 8-bit grayscale images (used by the decoders of every format).

High bit depths (16-bit PNG and TIFF, float TIFF, DICOM without a VOI window) are mapped to 0..255 by a
robust window: from the LOW_PERCENTILE-th to the HIGH_PERCENTILE-th percentile of the finite pixel
values (measured on a regular subsample of at most WINDOW_SAMPLES pixels), widened on each side by
WINDOW_MARGIN of its width but never beyond the data's min and max; values outside it are clipped.
A scan whose values all lie near the bulk keeps its full min..max range (nothing clipped), while one hot
pixel far away (a 12-bit scan in a 16-bit file with a single 65535, a burnt-in marker) no longer squeezes
the whole scan into a few grey levels, as min-max rescaling did. When the window is empty (more than
99 % of the pixels share one value) the full min..max range is used. Arithmetic is float32, never float64.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import ImageError
from .limits import FLOAT_STRIP_ROWS

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
WINDOW_MARGIN = 0.5
WINDOW_SAMPLES = 1 << 20


def _sample(arr: np.ndarray) -> np.ndarray:
    """A regular subsample of at most WINDOW_SAMPLES pixels (a view where possible)."""
    step = max(1, int(np.ceil(np.sqrt(arr.size / WINDOW_SAMPLES))))
    return arr[::step, ::step]


def _as_float(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


def window_from(sample: np.ndarray, vmin: float, vmax: float) -> tuple[float, float]:
    """The robust window (see the module's docstring) from a SAMPLE of the values and their exact range."""
    s = np.asarray(sample, dtype=np.float32).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0 or not vmax > vmin:
        return vmin, vmax
    lo, hi = (float(v) for v in np.percentile(s, [LOW_PERCENTILE, HIGH_PERCENTILE]))
    if hi <= lo:
        return vmin, vmax
    m = WINDOW_MARGIN * (hi - lo)
    return max(vmin, lo - m), min(vmax, hi + m)


def _range(arr: np.ndarray, fn) -> tuple[float, float]:
    """The finite min and max of FN(ARR), computed FLOAT_STRIP_ROWS rows at a time."""
    vmin, vmax = np.inf, -np.inf
    for y in range(0, arr.shape[0], FLOAT_STRIP_ROWS):
        t = fn(arr[y:y + FLOAT_STRIP_ROWS])
        t = t[np.isfinite(t)]
        if t.size:
            vmin, vmax = min(vmin, float(t.min())), max(vmax, float(t.max()))
    return (vmin, vmax) if vmax >= vmin else (0.0, 0.0)


def robust_window(arr: np.ndarray) -> tuple[float, float]:
    """(low, high): the percentile window of a 2-D array's finite values (see the module's docstring)."""
    return window_from(_sample(arr), *_range(arr, _as_float))


def gray8_from_array(arr: np.ndarray, window: tuple[float, float] | None = None, fn=None,
                     full_range: bool = False) -> Image.Image:
    """A 2-D array of any depth as an 8-bit image: WINDOW (low, high) -> 0..255, clipped; by default the
    robust percentile window (FULL_RANGE: the min..max range). FN (float32 -> float32, elementwise, e.g. a
    modality LUT and VOI window) is applied first. Everything is done FLOAT_STRIP_ROWS rows at a time, so the
    float32 working copy is one strip, never the image. NaN becomes the window's low end."""
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ImageError(f"expected a 2-D grayscale array, got shape {arr.shape}")
    f = _as_float if fn is None else (lambda a: fn(_as_float(a)))
    if window is None:
        vmin, vmax = _range(arr, f)
        window = (vmin, vmax) if full_range else window_from(f(_sample(arr)), vmin, vmax)
    lo, hi = window
    out = np.zeros(arr.shape, np.uint8)
    if not hi > lo:
        return Image.fromarray(out, mode="L")
    scale = np.float32(255.0 / (hi - lo))
    for y in range(0, arr.shape[0], FLOAT_STRIP_ROWS):
        a = f(arr[y:y + FLOAT_STRIP_ROWS])
        a -= np.float32(lo)
        a *= scale
        np.nan_to_num(a, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(a, 0.0, 255.0, out=a)
        out[y:y + FLOAT_STRIP_ROWS] = np.rint(a)
    return Image.fromarray(out, mode="L")


def reduce_mean(arr: np.ndarray, factor: int) -> np.ndarray:
    """Box-average a 2-D (or H x W x C) array by FACTOR in both directions, in strips, as float32
    (edges that do not fill a whole box are dropped). ARR may be a read-only view of file bytes."""
    if factor <= 1:
        return np.asarray(arr, dtype=np.float32)
    h, w = arr.shape[0] // factor, arr.shape[1] // factor
    tail = arr.shape[2:]
    out = np.empty((h, w) + tail, np.float32)
    rows = max(1, FLOAT_STRIP_ROWS // factor)
    inv = np.float32(1.0 / (factor * factor))
    for y in range(0, h, rows):
        n = min(rows, h - y)
        block = arr[y * factor:(y + n) * factor, :w * factor]
        cols = block.reshape(n, factor, -1).sum(axis=1, dtype=np.float32)  # rows of each box
        out[y:y + n] = cols.reshape((n, w, factor) + tail).sum(axis=2) * inv  # then its columns
    return out


def colourfulness(im: Image.Image) -> float:
    """Mean |R-G| + |G-B| + |B-R| in grey levels on a thumbnail (0 for a grey image)."""
    if im.mode in ("L", "1", "I", "F") or im.mode.startswith("I;"):
        return 0.0
    rgb_im = im if im.mode in ("RGB", "RGBA") else im.convert("RGB")
    small = rgb_im.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=2.0)
    rgb = np.asarray(small.convert("RGB"), np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return float((np.abs(r - g) + np.abs(g - b) + np.abs(b - r)).mean())
