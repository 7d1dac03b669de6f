"""Out-of-distribution refusal: inputs that are not a frontal chest X-ray get `status: rejected`.

Three stages, all cheap on the device:
1. Image statistics of the decoded input: colour (radiographs are grey), blank or nearly constant
   images, extreme aspect ratios.
2. Layout: the correlation of the prepared image, shrunk to 16x16, with the mean training scan. Every
   frontal chest X-ray shares that layout (bright mediastinum between two dark lung fields); photos,
   documents and patterns do not.
3. Distance of the model's own pooled features from the training distribution: a Mahalanobis
   distance in the top principal components of the pooled last feature map, plus the residual outside
   them, with a threshold set on real validation scans.
The parameters of 2 and 3 live in the model card (`gate`), so the gate always matches the model.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MAX_CHROMA = 12.0  # mean |R-G|+|G-B|+|B-R| (grey levels) above which an image is a colour photo
MIN_STD = 6.0  # grey levels: below this the image is blank
MAX_ASPECT = 2.5
TEMPLATE_SIDE = 16


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


class Gate:
    def __init__(self, params: dict | None = None):
        self.params = params
        if params:
            self.mean = np.asarray(params["mean"], np.float32)
            self.components = np.asarray(params["components"], np.float32)
            self.variances = np.asarray(params["variances"], np.float32)
            self.residual_variance = float(params["residual_variance"])
            self.threshold = float(params["threshold"])
            self.template = np.asarray(params["template"], np.float32) if "template" in params else None
            self.min_correlation = float(params.get("template_min_correlation", -1.0))

    @classmethod
    def from_card(cls, card) -> "Gate":
        return cls(card.get("gate"))

    def distance(self, pooled: np.ndarray) -> float:
        d = np.asarray(pooled, np.float32) - self.mean
        z = self.components @ d
        resid = float(d @ d - z @ z)
        k = len(self.variances)
        # average squared standardised distance per dimension, principal and residual parts
        return float((np.sum(z * z / self.variances) + max(resid, 0.0) / self.residual_variance) / (k + 1))

    def feature_distance(self, features) -> float | None:
        """The distance of a feature map's pooled vector from the training scans (None without a fit)."""
        if not self.params or features is None:
            return None
        return self.distance(features.mean(axis=(0, 1)))

    def check_image(self, im, chroma: float = 0.0) -> str | None:
        """Cheap checks of the decoded image, before any inference: a one-line reason to refuse, or None."""
        return image_reason(im, chroma)

    def check_features(self, x, features) -> str | None:
        """Checks of the prepared image and the model's feature map: a one-line reason, or None."""
        if self.params and self.template is not None:
            c = correlation(layout(x), self.template)
            if c < self.min_correlation:
                return f"does not look like a frontal chest X-ray (layout correlation {c:.2f} < {self.min_correlation:.2f})"
        if self.params and features is not None:
            dist = self.distance(features.mean(axis=(0, 1)))
            if dist > self.threshold:
                return f"does not look like a chest X-ray (distance {dist:.1f} > {self.threshold:.1f})"
        return None


def image_reason(im, chroma: float = 0.0) -> str | None:
    if chroma > MAX_CHROMA:
        return "colour image: not a radiograph"
    w, h = im.size
    if max(w, h) / min(w, h) > MAX_ASPECT:
        return f"aspect ratio {max(w, h) / min(w, h):.1f} is not that of a chest X-ray"
    small = np.asarray(im.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=2.0), np.float32)
    if small.std() < MIN_STD:
        return "blank or nearly uniform image"
    return None
