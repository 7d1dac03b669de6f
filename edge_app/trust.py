"""Trusted models: the sha256 of every model file this package ships.

A model card proves only that a file and its card belong together: anyone can copy the card of a real
model onto a foreign network and recompute its checksums. What a card cannot fake is this list, which
is part of the installed package: a model whose file sha256 is not here is "unverified" and is run only
when the caller says so (`--allow-unverified-model`, `EDGE_XRAY_ALLOW_UNVERIFIED_MODEL=1`, or
`load_model(..., allow_unverified=True)`); every row and audit entry then says `model_verified: false`.

What it protects against: a swapped or copied-over model file, a foreign model with a copied card.
What it does not: someone who can also edit the installed package (this file); a signed release
(a signature checked against a key held outside the device) is the next step.

All three shipped models are checked against this list when `load_model` loads them together: the
screening model, the orientation model and the intended-use model.

Updating: when a bundled model changes, put the new files' sha256 here (`sha256sum
edge_app/models/*.tflite`); tests/test_hardening.py checks that this list matches edge_app/models/.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelError
from .preprocess import file_sha256

ALLOW_ENV = "EDGE_XRAY_ALLOW_UNVERIFIED_MODEL"  # "1": the site allows unverified models (as the flag)

# file name in edge_app/models/ -> sha256 of the .tflite file as shipped (card embedded)
BUNDLED_SHA256 = {
    "edge-xray-int8.tflite": "40f772e038648ece6a028271b5f000dd697c0a8b50d03ec5424f6066d9e85f63",
    "edge-xray-float32.tflite": "b38d52b788b7290589ee1f8f79adcefdbccc4a5e1932b316aee3d3aca5cee689",
    "edge-xray-orientation-int8.tflite": "6073e490ed70333e5e9f08136d5be1d406c72fb02eb234b75597d5251f1ad3db",
    "edge-xray-intended-use-int8.tflite": "c0bf4ab5c8aa7b82418e490146d2b0ea69ad69f21fe1ddb7df44d82f05ad8f09",
}
TRUSTED_SHA256 = frozenset(BUNDLED_SHA256.values())


def allowed_by_environment() -> bool:
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")


def is_trusted(path, sha256: str | None = None) -> bool:
    """True when the model file at PATH is one the package ships (by the sha256 of its bytes; SHA256
    when the caller hashed the bytes it loaded, so the file is not read twice)."""
    try:
        return (sha256 or file_sha256(path)) in TRUSTED_SHA256
    except OSError:
        return False


def check_model(path, allow_unverified: bool = False, sha256: str | None = None) -> bool:
    """model_verified for the model file at PATH; ModelError unless it is trusted or allowed."""
    if is_trusted(path, sha256):
        return True
    if allow_unverified or allowed_by_environment():
        return False
    raise ModelError(f"{Path(path).name} is not a model shipped with edge-xray (sha256 not in the package's list): "
                     "give --allow-unverified-model to run it anyway")


def warning(path) -> str:
    return (f"warning: {Path(path).name} is not a verified edge-xray model; its results are marked "
            "model_verified: false")
