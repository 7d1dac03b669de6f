"""edge-xray: offline pediatric pneumonia screening on Raspberry Pi-class devices.

    import edge_xray
    screener = edge_xray.load_model()            # the bundled int8 model, its card verified
    for s in screener.classify_many(["scans/"]):  # files and folders
        print(s.path, s.label, s.pneumonia_probability, s.advice)

The package root holds the edge path (preprocessing, runtime, decision, gate, screening), which needs
only numpy, Pillow and a TFLite interpreter. Training, calibration and conversion live in subpackages
that need TensorFlow and are imported only by the commands that use them.
"""

__version__ = "0.2.0"

LABELS = ("NORMAL", "BACTERIAL", "VIRAL")  # order of the model's logits

from .card import ModelCard  # noqa: E402
from .errors import EdgeXrayError, ImageError, InputError, ModelError, UsageError  # noqa: E402
from .screen import Screener, Screening, load_model  # noqa: E402

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
