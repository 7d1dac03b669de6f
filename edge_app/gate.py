"""Out-of-distribution refusal: inputs that are not a frontal chest X-ray get `status: rejected`.

Two stages, both cheap on the device:
1. Image statistics of the decoded input: colour (radiographs are grey), blank or nearly constant
   images, extreme aspect ratios.
2. Distance of the model's own pooled features from the training distribution: a Mahalanobis
   distance in the top principal components of the pooled last feature map, plus the residual outside
   them, with a threshold set on real validation scans. Its parameters live in the model card
   (`gate`), so the gate always matches the model.
"""

from __future__ import annotations

import numpy as np

MAX_CHROMA = 12.0  # mean |R-G|+|G-B|+|B-R| (grey levels) above which an image is a colour photo
MIN_STD = 6.0  # grey levels: below this the image is blank
MAX_ASPECT = 2.5


class Gate:
    def __init__(self, params: dict | None = None):
        self.params = params
        if params:
            self.mean = np.asarray(params["mean"], np.float32)
            self.components = np.asarray(params["components"], np.float32)
            self.variances = np.asarray(params["variances"], np.float32)
            self.residual_variance = float(params["residual_variance"])
            self.threshold = float(params["threshold"])

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

    def check(self, im, x, features) -> str | None:
        """A one-line reason to refuse, or None."""
        reason = image_reason(im)
        if reason:
            return reason
        if self.params and features is not None:
            dist = self.distance(features.mean(axis=(0, 1)))
            if dist > self.threshold:
                return f"does not look like a chest X-ray (distance {dist:.1f} > {self.threshold:.1f})"
        return None


def image_reason(im) -> str | None:
    chroma = im.info.get("chroma")
    if chroma is not None and chroma > MAX_CHROMA:
        return "colour image: not a radiograph"
    w, h = im.size
    if max(w, h) / min(w, h) > MAX_ASPECT:
        return f"aspect ratio {max(w, h) / min(w, h):.1f} is not that of a chest X-ray"
    small = np.asarray(im.resize((64, 64)), np.float32)
    if small.std() < MIN_STD:
        return "blank or nearly uniform image"
    return None
