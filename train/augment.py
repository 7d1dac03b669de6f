"""Training augmentation for chest X-rays, and the shift-proxy perturbations used for validation.

Everything acts on the 8-bit grayscale image before `edge_xray.preprocess.prepare`, so training sees
the same preprocessing as the device. The augmentations target the shortcuts in the training data
(class-typical original resolution, aspect ratio and exposure): anisotropic scaling, blur and
down-then-up resampling, noise, and black-level, gamma and contrast jitter, plus small rotations,
shifts and zoom; and borders (`add_border`: black, white or a noisy dark surround on 0 to 4 sides, up to
BORDER_FRACTION of the side), so that a model learns what the border crop in `prepare` leaves behind.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from edge_xray.preprocess import prepare

ROTATION_DEG = 7.0
SHIFT = 0.06  # fraction of the side
ZOOM = (0.88, 1.15)
ASPECT = (0.78, 1.28)  # horizontal / vertical scale ratio
P_BLUR, BLUR_RADIUS = 0.35, (0.3, 1.4)
P_RESAMPLE, RESAMPLE_FACTOR = 0.35, (0.35, 0.8)
P_NOISE, NOISE_SIGMA = 0.35, (2.0, 10.0)  # in grey levels
GAMMA = (0.7, 1.45)
CONTRAST = (0.75, 1.25)
BLACK_LEVEL = (0, 30)
P_BORDER, BORDER_FRACTION = 0.3, (0.0, 0.3)  # share of views framed; each side's border, of the side
BORDER_KINDS = ("black", "white", "noisy")


def affine(im: Image.Image, angle_deg: float, sx: float, sy: float, tx: float, ty: float) -> Image.Image:
    """Rotate, scale (sx, sy) and shift (tx, ty in pixels) about the centre; outside is black."""
    w, h = im.size
    cx, cy = w / 2.0, h / 2.0
    a = math.radians(angle_deg)
    cos, sin = math.cos(a), math.sin(a)
    # Inverse map, output -> input: p_in = S^-1 R^-1 (p_out - c - t) + c
    m = np.array([[cos / sx, sin / sx], [-sin / sy, cos / sy]])
    off = np.array([cx, cy]) - m @ np.array([cx + tx, cy + ty])
    return im.transform(
        im.size, Image.Transform.AFFINE, (m[0, 0], m[0, 1], off[0], m[1, 0], m[1, 1], off[1]),
        resample=Image.Resampling.BILINEAR, fillcolor=0,
    )


def down_up(im: Image.Image, factor: float) -> Image.Image:
    w, h = im.size
    small = im.resize((max(8, int(w * factor)), max(8, int(h * factor))), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR)


def tone(gray: np.ndarray, gamma: float, contrast: float, black: float) -> np.ndarray:
    x = gray.astype(np.float32) / 255.0
    x = np.power(x, gamma)
    x = (x - 0.5) * contrast + 0.5
    x = x * (255.0 - black) + black
    return x


def add_border(gray: np.ndarray, fractions, kind: str = "black", rng: np.random.Generator | None = None) -> np.ndarray:
    """GRAY (uint8) framed by borders of FRACTIONS (top, bottom, left, right) of its height or width.
    KIND: "black", "white", or "noisy" (the dark surround of a photographed film: a level of 10-45 with
    a gradient across the image and pixel noise, drawn from RNG)."""
    h, w = gray.shape
    t, b, l, r = (int(round(f * n)) for f, n in zip(fractions, (h, h, w, w)))
    H, W = h + t + b, w + l + r
    if kind == "black":
        out = np.zeros((H, W), np.uint8)
    elif kind == "white":
        out = np.full((H, W), 255, np.uint8)
    elif kind == "noisy":
        rng = rng if rng is not None else np.random.default_rng(0)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        gx, gy = rng.uniform(-12, 12, 2)
        level = rng.uniform(10, 45) + gx * (xx / W - 0.5) + gy * (yy / H - 0.5)
        out = np.rint(level + rng.normal(0.0, rng.uniform(2, 8), (H, W))).clip(0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown border kind {kind}")
    out[t:t + h, l:l + w] = gray
    return out


def random_border(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """GRAY framed on 0 to 4 random sides (each up to BORDER_FRACTION) in a random BORDER_KINDS kind."""
    sides = rng.random(4) < rng.uniform(0, 1)
    fractions = np.where(sides, rng.uniform(*BORDER_FRACTION, 4), 0.0)
    return add_border(gray, fractions, BORDER_KINDS[rng.integers(len(BORDER_KINDS))], rng)


def field_view(im: Image.Image, rng: np.random.Generator, *, rotation_deg: float = ROTATION_DEG, zoom=ZOOM,
               aspect=ASPECT, shift: float = SHIFT, p_mirror: float | None = None, gamma=GAMMA, contrast=CONTRAST,
               black_level=BLACK_LEVEL) -> Image.Image:
    """One random view of an 8-bit grey image as a field device might see it: geometry (rotation, zoom,
    aspect, shift; a left-right mirror when P_MIRROR is given), optics (blur, resampling), tone and noise.
    The one pipeline of every model's training; each model passes its own ranges (the random draws come
    in the same order for all, so a seeded recipe gives the same views as before)."""
    w, h = im.size
    z = rng.uniform(*zoom)
    a = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    im = affine(im, rng.uniform(-rotation_deg, rotation_deg), z * math.sqrt(a), z / math.sqrt(a),
                rng.uniform(-shift, shift) * w, rng.uniform(-shift, shift) * h)
    if p_mirror is not None and rng.random() < p_mirror:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < P_BLUR:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(*BLUR_RADIUS)))
    if rng.random() < P_RESAMPLE:
        im = down_up(im, rng.uniform(*RESAMPLE_FACTOR))
    x = tone(np.asarray(im), rng.uniform(*gamma), rng.uniform(*contrast), rng.uniform(*black_level))
    if rng.random() < P_NOISE:
        x = x + rng.normal(0.0, rng.uniform(*NOISE_SIGMA), x.shape)
    return Image.fromarray(np.rint(x).clip(0, 255).astype(np.uint8))


def augment(gray: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One random training view of a uint8 image, as the model's float input (size, size)."""
    if rng.random() < P_BORDER:
        gray = random_border(gray, rng)
    return prepare(field_view(Image.fromarray(gray), rng), size)


def shift_proxy(gray: np.ndarray, label: int) -> np.ndarray:
    """Swap the class-typical acquisition of an image, as a proxy for data from elsewhere.

    Normal originals are large and nearly square (about 1690x1410), pneumonia originals smaller and
    wider (about 1200x820); both were squashed to a square. A normal image is given the pneumonia
    look (anatomy compressed sideways, softer), a pneumonia image the normal look (stretched
    sideways, sharper, darker black level).
    """
    im = Image.fromarray(gray)
    if label == 0:
        im = affine(im, 0.0, 0.82, 1.0, 0.0, 0.0)
        im = down_up(im, 0.6)
        x = tone(np.asarray(im), 1.0, 0.9, 18.0)
    else:
        im = affine(im, 0.0, 1.22, 1.0, 0.0, 0.0)
        im = im.filter(ImageFilter.UnsharpMask(radius=2, percent=80, threshold=2))
        x = tone(np.asarray(im), 1.0, 1.1, 0.0)
    return np.rint(x).clip(0, 255).astype(np.uint8)


# Edge enhancement (unsharp masking), which X-ray units apply before export, some strongly. Radii are
# in pixels of a 224 px image (the training side), scaled to the image they are applied to. The gate's
# bounds are widened with copies drawn from these ranges (calibration/gate.py).
EDGE_RADIUS = (0.5, 2.0)
EDGE_PERCENT = (40, 130)


def edge_enhance(im: Image.Image, radius: float, percent: int) -> Image.Image:
    """IM (grey) unsharp-masked with RADIUS (pixels at 224 px, scaled to IM) and strength PERCENT."""
    r = radius * max(im.size) / 224.0
    return im.filter(ImageFilter.UnsharpMask(radius=r, percent=int(percent), threshold=2))


def random_edge_enhance(im: Image.Image, rng: np.random.Generator, radius=EDGE_RADIUS, percent=EDGE_PERCENT) -> Image.Image:
    """IM edge-enhanced at a radius and strength drawn uniformly from RADIUS and PERCENT."""
    return edge_enhance(im, rng.uniform(*radius), int(rng.integers(*percent)))


# One acquisition look applied to every scan of a "site", both classes (benchmarks/site_proxy.py,
# benchmarks/site_looks.py; the intended-use check's false refusals under a look: convert/auxiliary.py).
# Stronger than shift_proxy, so a model trained with --shift-swap has not seen them exactly. Applied to
# images kept at the training side (twice the model's input side, at most 224 px: 224 for the screening
# model, 192 for the intended-use check), so the sharp look's 2 px radius is not quite the same look on both.
SITE_LOOKS = {
    "soft": "squeezed sideways to 0.75, down-up resampled at 0.5, contrast 0.9, black level 24",
    "sharp": "stretched sideways to 1.3, unsharp mask 120 %, contrast 1.15",
}


def site_look(gray: np.ndarray, kind: str) -> np.ndarray:
    """GRAY (uint8) as a site of SITE_LOOKS look KIND would have made it ("none": unchanged)."""
    if kind == "none":
        return gray
    if kind not in SITE_LOOKS:
        raise ValueError(f"unknown site look {kind}")
    im = Image.fromarray(gray)
    if kind == "soft":
        im = down_up(affine(im, 0.0, 0.75, 1.0, 0.0, 0.0), 0.5)
        x = tone(np.asarray(im), 1.0, 0.9, 24.0)
    else:
        im = affine(im, 0.0, 1.3, 1.0, 0.0, 0.0).filter(ImageFilter.UnsharpMask(radius=2, percent=120, threshold=2))
        x = tone(np.asarray(im), 1.0, 1.15, 0.0)
    return np.rint(x).clip(0, 255).astype(np.uint8)


def perturb(gray: np.ndarray, kind: str) -> np.ndarray:
    """Named field perturbations, for the robustness (answer flip) figures."""
    import io

    im = Image.fromarray(gray)
    if kind == "jpeg20":
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=20)
        return np.asarray(Image.open(buf).convert("L"))
    if kind in ("bright+20", "bright-20"):
        f = 1.2 if kind.endswith("+20") else 0.8
        return np.rint(gray.astype(np.float32) * f).clip(0, 255).astype(np.uint8)
    if kind in ("contrast+20", "contrast-20"):
        f = 1.2 if kind.endswith("+20") else 0.8
        m = gray.mean()
        return np.rint((gray.astype(np.float32) - m) * f + m).clip(0, 255).astype(np.uint8)
    if kind == "rotate5":
        return np.asarray(affine(im, 5.0, 1.0, 1.0, 0.0, 0.0))
    if kind == "down512":  # a full-resolution scan downscaled so that its long side is 512 px
        scale = 512 / max(im.size)
        if scale >= 1:
            return gray
        return np.asarray(im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR))
    raise ValueError(f"unknown perturbation {kind}")

