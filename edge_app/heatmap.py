"""Class activation maps on the device: the int8 model's last feature map and its classifier weights.

The network ends in global average pooling and one linear layer, so the map
  cam(y, x) = sum_k F[y, x, k] * (w[k, c] - w[k, NORMAL])
is exactly each place's share of the evidence for class c (the predicted pneumonia type) against
normal. Positive evidence is drawn in red over the scan; no TensorFlow is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

MAX_SIDE = 768  # pixels of the saved overlay
ALPHA = 0.45


def cam(card, features: np.ndarray, cls: int) -> np.ndarray:
    """Evidence map (h, w) for class CLS (1 bacterial, 2 viral) against normal, scaled to 0..1."""
    w = np.asarray(card["cam"]["kernel"], np.float32)  # (channels, 3)
    c = cls if cls in (1, 2) else 1
    m = features @ (w[:, c] - w[:, 0])
    m = np.maximum(m, 0)
    return m / m.max() if m.max() > 0 else m


def save_heatmap(card, im: Image.Image, features: np.ndarray, result: dict, cls: int, out_dir, stem: str,
                 written: set | None = None) -> Path:
    """Write the overlay PNG for a screening RESULT of class CLS; WRITTEN (the paths this batch wrote)
    keeps equal file names apart."""
    written = set() if written is None else written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = cam(card, features, cls)
    base = im.convert("L")
    base.thumbnail((MAX_SIDE, MAX_SIDE))
    heat = Image.fromarray(np.uint8(m * 255)).resize(base.size, Image.Resampling.BICUBIC)
    h = np.asarray(heat, np.float32) / 255.0
    g = np.asarray(base, np.float32)
    rgb = np.stack([g, g, g], -1)
    red = np.array([255.0, 40.0, 0.0])
    a = (ALPHA * h)[..., None]
    rgb = rgb * (1 - a) + red * a
    dest = out / (stem + ".heatmap.png")
    n = 1
    while dest in written:  # same file name from another folder in this batch
        n += 1
        dest = out / f"{stem}-{n}.heatmap.png"
    written.add(dest)
    Image.fromarray(np.uint8(rgb.clip(0, 255))).save(dest)
    return dest
