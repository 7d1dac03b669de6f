"""edge-xray: offline pediatric pneumonia screening on Raspberry Pi-class devices.

    import edge_xray
    screener = edge_xray.load_model()            # the bundled int8 model, its card verified
    for s in screener.classify_many(["scans/"]):  # files and folders
        print(s.path, s.label, s.pneumonia_probability, s.advice)

The package root holds the edge path (preprocessing, runtime, decision, gate, screening), which needs
only numpy, Pillow and a TFLite interpreter. Training, calibration and conversion live in subpackages
that need TensorFlow and are imported only by the commands that use them.
"""

if __name__ != "edge_xray":  # the folder imported by its own name (Python started in the checkout): a second copy
    raise ImportError(f"{__name__} is the source folder of the package edge_xray: `import edge_xray` "
                      "(install the checkout with `pip install -e .`), never the folder itself")

__version__ = "0.8.0"

LABELS = ("NORMAL", "BACTERIAL", "VIRAL")  # order of the model's logits

from .errors import EdgeXrayError, ImageError, InputError, ModelError, UsageError  # noqa: E402

# The screening API is imported on first use, so that `edge-xray --help`, `audit verify` and the
# training commands do not pay for numpy, Pillow and the runtime at start-up.
_LAZY = {"ModelCard": "card", "Screener": "screen", "Screening": "screen", "load_model": "screen"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EdgeXrayError",
    "ImageError",
    "InputError",
    "LABELS",
    "ModelCard",
    "ModelError",
    "Screener",
    "Screening",
    "UsageError",
    "__version__",
    "load_model",
]
