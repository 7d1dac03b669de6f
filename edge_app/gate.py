"""Out-of-distribution refusal: inputs that are not a frontal chest X-ray get `status: rejected`.

Two calls, so that the cheap checks run before the model:
1. `Gate.check_image(gray, chroma)`: statistics of the decoded input alone: colour (radiographs are
   grey), blank or nearly constant images, extreme aspect ratios.
2. `Gate.check_features(x, features)`: the prepared image and the model's last feature map.
   - Layout: the correlation of the prepared image, shrunk to 16x16, with the mean training scan.
     Every frontal chest X-ray shares that layout (bright mediastinum between two dark lung fields).
   - Distance of the model's pooled features from the training distribution: a Mahalanobis distance
     in the top principal components of the pooled last feature map, plus the residual outside them.
   - Shape score (cards fitted since the stricter gate): a vector of cheap statistics of the scan and
     of the feature map (per-pixel z-scores of the layout against the training scans, the contrast of
     a bright mediastinum column, left-right symmetry, fine detail and edge density, per-region
     z-scores of the feature map, the two checks above) and its Mahalanobis distance from the
     training scans, and a bound on each statistic alone (a little beyond the most extreme training
     scan). The joint score lets a scan from another machine be unusual in one respect, while a
     non-X-ray is usually unusual in several.
All parameters live in the model card (`gate`), so the gate always matches the model. A card without
the shape score (older fits) gates exactly as before. Only numpy and Pillow are used.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

MAX_CHROMA = 12.0  # mean |R-G|+|G-B|+|B-R| (grey levels) above which an image is a colour photo
MIN_STD = 6.0  # grey levels: below this the image is blank
MAX_ASPECT = 2.5
TEMPLATE_SIDE = 16
MAP_GRID = 2  # the feature map is pooled to MAP_GRID x MAP_GRID regions for its z-scores
MIN_STD_LAYOUT = 5.0  # grey levels: floor of the per-pixel layout spread (a pixel every scan shares)

# The statistics of the shape score, in the order of the card's vectors, with what each one says
# in plain words when it is the main reason for a refusal.
STATS = (
    ("layout_z", "its light and dark areas are not where a chest X-ray has them"),
    ("mediastinum", "no bright column down the middle (spine and heart) between two darker lung fields"),
    ("symmetry", "its left and right halves do not mirror each other as a chest does"),
    ("fine_detail", "too much fine detail or sharp edges for a radiograph (text, texture, a photo or a screen?)"),
    ("edges", "too many or too few edges for a radiograph"),
    ("feature_map_z", "parts of the image are unlike any part of the training X-rays"),
    ("distance", "its content is unlike the chest X-rays the model was trained on"),
    ("layout_correlation", "its layout does not match that of a frontal chest X-ray"),
)
STAT_NAMES = tuple(name for name, _ in STATS)
PLAIN = dict(STATS)


def layout(x: np.ndarray) -> np.ndarray:
    """The prepared image (values 0..1) shrunk to TEMPLATE_SIDE x TEMPLATE_SIDE, flattened."""
    im = Image.fromarray(np.rint(x * 255).astype(np.uint8)).resize((TEMPLATE_SIDE, TEMPLATE_SIDE),
                                                                     Image.Resampling.BILINEAR)
    return np.asarray(im, np.float32).ravel()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else 0.0


def mediastinum_contrast(lay: np.ndarray) -> float:
    """Grey levels by which the central column (mediastinum, spine) of the 16x16 layout is brighter
    than the two lung bands either side of it, over the middle rows."""
    g = lay.reshape(TEMPLATE_SIDE, TEMPLATE_SIDE)
    rows = slice(4, 12)
    centre = g[rows, 7:9].mean()
    return float(centre - 0.5 * (g[rows, 3:6].mean() + g[rows, 10:13].mean()))


def fine_detail(x: np.ndarray) -> tuple[float, float]:
    """(fine-to-coarse gradient ratio, mean absolute gradient) of the prepared image.

    Radiographs are smooth at the model's input size: neighbouring pixels differ much less than
    pixels four apart. Text, textures, noise and screens have detail at the finest scale."""
    fine = np.abs(x[:, 1:] - x[:, :-1]).mean() + np.abs(x[1:] - x[:-1]).mean()
    coarse = np.abs(x[:, 4:] - x[:, :-4]).mean() + np.abs(x[4:] - x[:-4]).mean()
    return float(fine / (coarse + 1e-6)), float(fine)


def pool_map(features: np.ndarray, grid: int = MAP_GRID) -> np.ndarray:
    """The feature map (h, w, c) averaged over GRID x GRID regions -> (grid * grid * c,)."""
    h, w, c = features.shape
    grid = max(1, min(grid, h, w))  # a tiny model's map can be smaller than the grid
    f = np.asarray(features, np.float32)[: h - h % grid, : w - w % grid]
    return f.reshape(grid, f.shape[0] // grid, grid, f.shape[1] // grid, c).mean(axis=(1, 3)).ravel()


class Gate:
    def __init__(self, params: dict | None = None):
        self.params = params
        self.template = None
        self.shape = None
        if params:
            self.mean = np.asarray(params["mean"], np.float32)
            self.components = np.asarray(params["components"], np.float32)
            self.variances = np.asarray(params["variances"], np.float32)
            self.residual_variance = float(params["residual_variance"])
            self.threshold = float(params["threshold"])
            self.template = np.asarray(params["template"], np.float32) if "template" in params else None
            self.min_correlation = float(params.get("template_min_correlation", -1.0))
            shape = params.get("shape")
            if shape:
                self.shape = {
                    "template_std": np.asarray(shape["template_std"], np.float32),
                    "map_mean": np.asarray(shape["map_mean"], np.float32),
                    "map_std": np.maximum(np.asarray(shape["map_std"], np.float32), 1e-6),
                    "mean": np.asarray(shape["mean"], np.float64),
                    "inverse_covariance": np.asarray(shape["inverse_covariance"], np.float64),
                    "scale": np.maximum(np.asarray(shape["scale"], np.float64), 1e-6),
                    "threshold": float(shape["threshold"]),
                    "max_z": np.asarray(shape["max_z"], np.float64),
                }

    @classmethod
    def from_card(cls, card: dict) -> "Gate":
        return cls(card.get("gate"))

    def distance(self, pooled: np.ndarray) -> float:
        d = np.asarray(pooled, np.float32) - self.mean
        z = self.components @ d
        resid = float(d @ d - z @ z)
        k = len(self.variances)
        # average squared standardised distance per dimension, principal and residual parts
        return float((np.sum(z * z / self.variances) + max(resid, 0.0) / self.residual_variance) / (k + 1))

    def statistics(self, x: np.ndarray, features: np.ndarray, template_std=None, map_mean=None,
                   map_std=None) -> np.ndarray:
        """The shape score's statistics (STAT_NAMES order) of a prepared image and its feature map.

        The template spread and feature-map moments come from the card, or are given (by the fit)."""
        sh = self.shape or {}
        template_std = sh.get("template_std") if template_std is None else template_std
        map_mean = sh.get("map_mean") if map_mean is None else map_mean
        map_std = sh.get("map_std") if map_std is None else map_std
        lay = layout(x)
        lz = float(np.mean(((lay - self.template) / np.maximum(template_std, MIN_STD_LAYOUT)) ** 2))
        ratio, edges = fine_detail(x)
        mz = float(np.mean(((pool_map(features) - map_mean) / map_std) ** 2))
        dist = self.distance(features.mean(axis=(0, 1)))
        return np.array([math.log(lz + 1e-3), mediastinum_contrast(lay) / 100.0,
                         correlation(lay.reshape(TEMPLATE_SIDE, -1), lay.reshape(TEMPLATE_SIDE, -1)[:, ::-1]),
                         ratio, math.log(edges + 1e-3), math.log(mz + 1e-3), math.log(dist + 1e-3),
                         correlation(lay, self.template)])

    def shape_score(self, stats: np.ndarray) -> tuple[float, str]:
        """(Mahalanobis distance per statistic, name of the statistic contributing most)."""
        sh = self.shape
        d = (stats - sh["mean"]) / sh["scale"]
        contrib = d * (sh["inverse_covariance"] @ d)
        return float(contrib.sum() / len(d)), STAT_NAMES[int(np.argmax(contrib))]

    def shape_reason(self, x: np.ndarray, features: np.ndarray) -> str | None:
        """The shape checks: no single statistic beyond its bound, and the joint score below its threshold."""
        sh = self.shape
        stats = self.statistics(x, features)
        z = (stats - sh["mean"]) / sh["scale"]
        over = np.abs(z) / sh["max_z"]
        if over.max() > 1.0:
            k = int(np.argmax(over))
            return (f"does not look like a chest X-ray: {PLAIN[STAT_NAMES[k]]} "
                    f"({STAT_NAMES[k]} {z[k]:+.1f} SD, limit {sh['max_z'][k]:.1f})")
        score, worst = self.shape_score(stats)
        if score > sh["threshold"]:
            return f"does not look like a chest X-ray: {PLAIN[worst]} (shape score {score:.1f} > {sh['threshold']:.1f})"
        return None

    def feature_distance(self, features) -> float | None:
        """The distance of a feature map's pooled vector from the training scans (None without a fit)."""
        if not self.params or features is None:
            return None
        return self.distance(np.asarray(features, np.float32).mean(axis=(0, 1)))

    def check_image(self, gray: Image.Image, chroma: float = 0.0) -> str | None:
        """Cheap checks of the decoded 8-bit grey image (no model needed): a one-line reason, or None.
        CHROMA is the colourfulness of the image before it was turned grey (0 for a grey file)."""
        return image_reason(gray, chroma)

    def check_features(self, x: np.ndarray, features: np.ndarray | None, distance: float | None = None) -> str | None:
        """Checks of the prepared image X and the model's feature map: a one-line reason, or None.
        DISTANCE: `feature_distance(features)` when the caller has it already."""
        if not self.params:
            return None
        if self.template is not None:
            c = correlation(layout(x), self.template)
            if c < self.min_correlation:
                return ("does not look like a frontal chest X-ray: its layout does not match "
                        f"(correlation {c:.2f} < {self.min_correlation:.2f})")
        if features is None:
            return None
        dist = self.feature_distance(features) if distance is None else distance
        if dist > self.threshold:
            return ("does not look like a chest X-ray: its content is unlike the training X-rays "
                    f"(distance {dist:.1f} > {self.threshold:.1f})")
        if self.shape is not None and self.template is not None:
            return self.shape_reason(x, features)
        return None

def image_reason(im, chroma: float = 0.0) -> str | None:
    if chroma > MAX_CHROMA:
        return "colour image: not a radiograph (X-rays are grey)"
    w, h = im.size
    if max(w, h) / min(w, h) > MAX_ASPECT:
        return f"too long and narrow for a chest X-ray (aspect ratio {max(w, h) / min(w, h):.1f} > {MAX_ASPECT})"
    small = np.asarray(im.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=2.0), np.float32)
    if small.std() < MIN_STD:
        return "blank or nearly uniform image"
    return None
