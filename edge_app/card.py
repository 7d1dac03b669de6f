"""Model cards: the JSON that travels with every model, beside it and embedded in the .tflite.

A card is written beside the model as `MODEL.json` and also appended to the `.tflite` flatbuffer as a
zip archive holding `card.json` (the interpreter ignores trailing data; this is how TFLite metadata
carries associated files). The side card adds `sha256`, the checksum of the whole file as shipped;
both carry `flatbuffer_sha256` and `flatbuffer_bytes`, which cover the network itself. Every load checks
them, so a changed model, a changed card or a mismatched pair is refused.

`ModelCard` is the one reader, validator and writer of cards: every number in a card must be finite,
the temperature positive, the threshold a probability and the labels those the model was built with.

What the network expects and gives, for a builder's classifier as for the bundled model:
`input.range` [lo, hi] (the prepared image's 0..1 is mapped to it; default [0, 1]), the input's
channels from its shape (grey replicated to RGB), and `output` (OUTPUT_KINDS: logits, the default;
softmax probabilities; or one sigmoid for two labels). `gate` holds the out-of-distribution gate, when
one was fitted.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelError

CARD_MEMBER = "card.json"
SIDE_ONLY_FIELDS = ("sha256", "size_bytes")
OUTPUT_KINDS = ("logits", "softmax", "sigmoid")


def side_card_path(model_path) -> Path:
    return Path(model_path).with_suffix(".json")


def _bad_number(obj, where="card"):
    """The first place in OBJ that holds a NaN or infinite number, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where
    if isinstance(obj, dict):
        for k, v in obj.items():
            bad = _bad_number(v, f"{where}.{k}")
            if bad:
                return bad
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad = _bad_number(v, f"{where}[{i}]")
            if bad:
                return bad
    return None


@dataclass(frozen=True)
class ModelCard:
    """A validated card. `data` is the card as stored (JSON types); the properties are typed views."""

    data: dict
    file_sha256: str | None = field(default=None, compare=False)  # of the model file read (ModelCard.read)

    def __post_init__(self):
        self.validate()

    def validate(self):
        d = self.data
        if not isinstance(d, dict):
            raise ModelError("model card is not a JSON object")
        bad = _bad_number(d)
        if bad:
            raise ModelError(f"model card holds a number that is not finite ({bad})")
        labels = d.get("labels")
        if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
            raise ModelError("model card: labels must be a list of names")
        if "temperature" in d and not (isinstance(d["temperature"], (int, float)) and d["temperature"] > 0):
            raise ModelError(f"model card: temperature must be positive (got {d['temperature']!r})")
        if "threshold" in d and not (isinstance(d["threshold"], (int, float)) and 0.0 < d["threshold"] < 1.0):
            raise ModelError(f"model card: threshold must lie between 0 and 1 (got {d['threshold']!r})")
        if d.get("output", "logits") not in OUTPUT_KINDS:
            raise ModelError(f"model card: output must be one of {', '.join(OUTPUT_KINDS)} (got {d.get('output')!r})")
        if d.get("output") == "sigmoid" and labels is not None and len(labels) != 2:
            raise ModelError("model card: a sigmoid output needs two labels")
        rng = (d.get("input") or {}).get("range", [0.0, 1.0])
        if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) for v in rng)
                and rng[0] < rng[1]):
            raise ModelError(f"model card: input.range must be [low, high] with low < high (got {rng!r})")
        bias = d.get("logit_bias")
        if bias is not None and labels is not None and len(bias) != len(labels):
            raise ModelError("model card: logit_bias needs one value per label")

    # typed views -------------------------------------------------------------------------------
    def get(self, key, default=None):
        return self.data.get(key, default)

    def __getitem__(self, key):
        return self.data[key]

    def __contains__(self, key):
        return key in self.data

    @property
    def name(self) -> str | None:
        return self.data.get("name")

    @property
    def version(self) -> str | None:
        return self.data.get("version")

    @property
    def labels(self) -> tuple:
        return tuple(self.data.get("labels") or ())

    @property
    def sha256(self) -> str | None:
        """The whole file's checksum (side card), else the network's."""
        return self.data.get("sha256") or self.data.get("flatbuffer_sha256")

    @property
    def temperature(self) -> float:
        return float(self.data.get("temperature", 1.0))

    @property
    def logit_bias(self) -> tuple:
        return tuple(float(v) for v in self.data.get("logit_bias") or [0.0] * max(1, len(self.labels)))

    @property
    def threshold(self) -> float:
        return float(self.data.get("threshold", 0.5))

    @property
    def gate(self) -> dict | None:
        return self.data.get("gate")

    @property
    def output_kind(self) -> str:
        """logits, softmax or sigmoid: what the network's class output is."""
        return self.data.get("output", "logits")

    @property
    def input_range(self) -> tuple:
        """(low, high): the model's input values for prepared levels 0 and 1."""
        lo, hi = (self.data.get("input") or {}).get("range", [0.0, 1.0])
        return float(lo), float(hi)

    @property
    def cam(self) -> dict | None:
        return self.data.get("cam")

    def to_dict(self) -> dict:
        return dict(self.data)

    # files -------------------------------------------------------------------------------------
    @classmethod
    def read(cls, path) -> tuple[bytes, "ModelCard"]:
        """(flatbuffer bytes, card) of a model file, checked against its cards. Raises ModelError."""
        flatbuffer, data, digest = _read_model_file(path)
        try:
            return flatbuffer, cls(data, digest)
        except ModelError as e:
            raise ModelError(f"{Path(path).name}: {e}") from None

    @classmethod
    def write(cls, path, flatbuffer: bytes, card: dict) -> "ModelCard":
        """Write the model with its embedded card, and the side card; returns the side card."""
        cls(dict(card))  # refuse to write a card that would not load
        return cls(write_model(path, flatbuffer, card))


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
    """Write the model with its embedded card, and the side card. Returns the side card (a dict)."""
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
    """(flatbuffer bytes, card dict) of a model file, checked against its cards. Raises ModelError."""
    flatbuffer, card, _ = _read_model_file(path)
    return flatbuffer, card


def _read_model_file(path) -> tuple[bytes, dict, str]:
    """read_model, with the sha256 of the whole file (computed once, from the bytes read)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read model {path}: {e.strerror or e}") from None
    digest = hashlib.sha256(data).hexdigest()
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
        if side.get("sha256") and digest != side["sha256"]:
            raise ModelError(f"{path.name}: sha256 differs from its card {sp.name} (file changed or corrupt)")
        if inner is not None and {k: v for k, v in side.items() if k not in SIDE_ONLY_FIELDS} != inner:
            raise ModelError(f"{path.name}: the card {sp.name} differs from the card embedded in the model")
    n = card.get("flatbuffer_bytes") if isinstance(card, dict) else None
    if not isinstance(n, int) or n <= 0 or n > len(data):
        raise ModelError(f"{path.name}: the model card gives no valid flatbuffer size")
    flatbuffer = data[:n]
    if hashlib.sha256(flatbuffer).hexdigest() != card.get("flatbuffer_sha256"):
        raise ModelError(f"{path.name}: sha256 of the network differs from its card (file changed or corrupt)")
    return flatbuffer, card, digest
