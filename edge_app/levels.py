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

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
WINDOW_MARGIN = 0.5
WINDOW_SAMPLES = 1 << 20
STRIP_ROWS = 256  # rows converted at a time (bounds the float32 working copy)


def _sample(arr: np.ndarray) -> np.ndarray:
    """A regular subsample of at most WINDOW_SAMPLES pixels (a view where possible)."""
    step = max(1, int(np.ceil(np.sqrt(arr.size / WINDOW_SAMPLES))))
    return arr[::step, ::step]


def robust_window(arr: np.ndarray) -> tuple[float, float]:
    """(low, high): the percentile window of a 2-D array's finite values (see the module's docstring)."""
    s = np.asarray(_sample(arr), dtype=np.float32).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        return 0.0, 0.0
    lo, hi = (float(v) for v in np.percentile(s, [LOW_PERCENTILE, HIGH_PERCENTILE]))
    full = np.asarray(arr)
    if full.dtype.kind in "iub":  # the exact range of integer data (the subsample may miss it)
        vmin, vmax = float(full.min()), float(full.max())
    else:
        vmin, vmax = float(s.min()), float(s.max())
    if hi <= lo:
        return vmin, vmax
    m = WINDOW_MARGIN * (hi - lo)
    return max(vmin, lo - m), min(vmax, hi + m)


def gray8_from_array(arr: np.ndarray, window: tuple[float, float] | None = None) -> Image.Image:
    """A 2-D array of any depth as an 8-bit image: WINDOW (low, high) -> 0..255, clipped; by default the
    robust percentile window. Non-finite values become the window's low end."""
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ImageError(f"expected a 2-D grayscale array, got shape {arr.shape}")
    lo, hi = robust_window(arr) if window is None else window
    out = np.zeros(arr.shape, np.uint8)
    if not hi > lo:
        return Image.fromarray(out, mode="L")
    scale = np.float32(255.0 / (hi - lo))
    for y in range(0, arr.shape[0], STRIP_ROWS):
        a = arr[y:y + STRIP_ROWS].astype(np.float32)
        a -= np.float32(lo)
        a *= scale
        np.nan_to_num(a, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(a, 0.0, 255.0, out=a)
        out[y:y + STRIP_ROWS] = np.rint(a)
    return Image.fromarray(out, mode="L")


def reduce_mean(arr: np.ndarray, factor: int) -> np.ndarray:
    """Box-average a 2-D (or H x W x C) array by FACTOR in both directions, in strips, as float32
    (edges that do not fill a whole box are dropped). ARR may be a read-only view of file bytes."""
    if factor <= 1:
        return np.asarray(arr, dtype=np.float32)
    h, w = arr.shape[0] // factor, arr.shape[1] // factor
    tail = arr.shape[2:]
    out = np.empty((h, w) + tail, np.float32)
    rows = max(1, STRIP_ROWS // factor)
    for y in range(0, h, rows):
        n = min(rows, h - y)
        block = np.asarray(arr[y * factor:(y + n) * factor, :w * factor], dtype=np.float32)
        out[y:y + n] = block.reshape((n, factor, w, factor) + tail).mean(axis=(1, 3))
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
