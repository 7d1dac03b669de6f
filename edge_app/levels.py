"""Grey levels: arrays of any depth to 8-bit grayscale images (used by the decoders of every format)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import ImageError


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


def colourfulness(im: Image.Image) -> float:
    """Mean |R-G| + |G-B| + |B-R| in grey levels on a thumbnail (0 for a grey image)."""
    if im.mode in ("L", "1", "I", "F") or im.mode.startswith("I;"):
        return 0.0
    rgb_im = im if im.mode in ("RGB", "RGBA") else im.convert("RGB")
    small = rgb_im.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=2.0)
    rgb = np.asarray(small.convert("RGB"), np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return float((np.abs(r - g) + np.abs(g - b) + np.abs(b - r)).mean())
