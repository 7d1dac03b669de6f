"""edge-xray: offline pediatric pneumonia screening on Raspberry Pi-class devices.

The package root holds the edge path (preprocessing, runtime, classify), which needs only numpy,
Pillow and a TFLite interpreter. Training, calibration and conversion live in subpackages that need
TensorFlow and are imported only by the commands that use them.
"""

__version__ = "0.1.0"

LABELS = ("NORMAL", "BACTERIAL", "VIRAL")  # order of the model's logits
PNEUMONIA_TYPES = {1: "bacterial", 2: "viral"}
