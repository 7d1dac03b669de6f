"""One version story: the package's version and the versions of the models it ships.

`edge-xray --version` and `edge-xray info` print them. The package (`edge_xray.__version__`) and each
model have their own version: a model is retrained less often than the code changes, and its card
(`version`) names it. The screening model is the one whose card names a float twin or that a command
loads; every other card in the models folder (the orientation model, and any auxiliary model added
later) is listed as it is found, so a new bundled model needs no change here.

Reads the side cards (JSON) only: no numpy, no runtime, so `--version` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import __version__

# the folder of the bundled models: runtime.MODELS_DIR (not imported from there: it needs numpy)
MODELS_DIR = Path(__file__).parent / "models"
SCREENING_MODEL = "edge-xray-int8.tflite"  # runtime.DEFAULT_MODEL's file name


def bundled_models(models_dir=MODELS_DIR) -> list[dict]:
    """{file, name, version} of every model card in MODELS_DIR, sorted by file name; unreadable cards
    are listed with version None (loading that model will say why)."""
    out = []
    for card in sorted(Path(models_dir).glob("*.json")):
        try:
            data = json.loads(card.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        out.append({"file": data.get("file") or card.with_suffix(".tflite").name,
                    "name": data.get("name"), "version": data.get("version"),
                    "float_model": data.get("float_model")})
    return out


def auxiliary_models(screening_name: str | None, models_dir=MODELS_DIR) -> list[dict]:
    """The bundled models that are not the screening model (by card name): orientation, and so on."""
    return [{k: m[k] for k in ("name", "version", "file")} for m in bundled_models(models_dir)
            if m["name"] != screening_name]


def versions(screening: dict | None = None, models_dir=MODELS_DIR) -> dict:
    """{package, screening_model, auxiliary_models}. SCREENING is {name, version, file} of the screening
    model in use (default: the bundled one)."""
    if screening is None:
        found = [m for m in bundled_models(models_dir) if m["file"] == SCREENING_MODEL]
        screening = {k: found[0][k] for k in ("name", "version", "file")} if found else None
    return {"package": __version__, "screening_model": screening,
            "auxiliary_models": auxiliary_models(screening and screening["name"], models_dir)}


def _model_words(m: dict | None) -> str:
    if not m:
        return "none found"
    return f"{m['name']} {m['version'] or '(version unknown)'} ({m['file']})"


def version_lines(v: dict) -> list[str]:
    """VERSIONS as the lines of `edge-xray --version`."""
    return [f"edge-xray {v['package']}", f"screening model: {_model_words(v['screening_model'])}",
            *(f"auxiliary model: {_model_words(m)}" for m in v["auxiliary_models"])]
