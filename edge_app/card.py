"""Model cards: the JSON that travels with every model, beside it and embedded in the .tflite.

A card is written beside the model as `MODEL.json` and also appended to the `.tflite` flatbuffer as a
zip archive holding `card.json` (the interpreter ignores trailing data; this is how TFLite metadata
carries associated files). The side card adds `sha256`, the checksum of the whole file as shipped;
both carry `flatbuffer_sha256` and `flatbuffer_bytes`, which cover the network itself. Every load checks
them, so a changed model, a changed card or a mismatched pair is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

CARD_MEMBER = "card.json"
SIDE_ONLY_FIELDS = ("sha256", "size_bytes")


class ModelError(RuntimeError):
    """A model that is missing, unreadable, or does not match its card (one-line message)."""

    exit_code = 4


def side_card_path(model_path) -> Path:
    return Path(model_path).with_suffix(".json")


def embed(flatbuffer: bytes, card: dict) -> bytes:
    """FLATBUFFER with CARD appended as a zip archive."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(CARD_MEMBER, json.dumps(card, indent=2, sort_keys=True))
    return flatbuffer + buf.getvalue()


def embedded_card(data: bytes) -> dict | None:
    if b"PK\x05\x06" not in data[-1024:]:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return json.loads(z.read(CARD_MEMBER))
    except (zipfile.BadZipFile, KeyError, ValueError):
        return None


def write_model(path, flatbuffer: bytes, card: dict) -> dict:
    """Write the model with its embedded card, and the side card. Returns the side card."""
    path = Path(path)
    card = dict(card)
    card["flatbuffer_bytes"] = len(flatbuffer)
    card["flatbuffer_sha256"] = hashlib.sha256(flatbuffer).hexdigest()
    card["file"] = path.name
    data = embed(flatbuffer, {k: v for k, v in card.items() if k not in SIDE_ONLY_FIELDS})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    side = dict(card, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    side_card_path(path).write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")
    return side


def read_model(path) -> tuple[bytes, dict]:
    """(flatbuffer bytes, card) of a model file, checked against its cards. Raises ModelError."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read model {path}: {e.strerror or e}") from None
    inner = embedded_card(data)
    side = None
    sp = side_card_path(path)
    if sp.exists():
        try:
            side = json.loads(sp.read_text())
        except (OSError, ValueError):
            raise ModelError(f"model card {sp.name} is not valid JSON") from None
    if inner is None and side is None:
        raise ModelError(f"{path.name} has no model card (neither embedded nor {sp.name} beside it)")
    card = side if side is not None else inner
    if side is not None:
        if side.get("sha256") and hashlib.sha256(data).hexdigest() != side["sha256"]:
            raise ModelError(f"{path.name}: sha256 differs from its card {sp.name} (file changed or corrupt)")
        if inner is not None and {k: v for k, v in side.items() if k not in SIDE_ONLY_FIELDS} != inner:
            raise ModelError(f"{path.name}: the card {sp.name} differs from the card embedded in the model")
    n = card.get("flatbuffer_bytes")
    if not isinstance(n, int) or n <= 0 or n > len(data):
        raise ModelError(f"{path.name}: the model card gives no valid flatbuffer size")
    flatbuffer = data[:n]
    if hashlib.sha256(flatbuffer).hexdigest() != card.get("flatbuffer_sha256"):
        raise ModelError(f"{path.name}: sha256 of the network differs from its card (file changed or corrupt)")
    return flatbuffer, card
