"""DICOM input through pydicom: modality LUT (rescale), VOI window, MONOCHROME1 inversion.

Only pixel data is read; no tag (patient name, id, dates) leaves this module.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import ImageError
from .levels import colourfulness, gray8_from_array


def read_dicom(source, max_pixels: int):
    """(8-bit grayscale Pillow image, colourfulness) of a DICOM file (a path or a binary file object)."""
    try:
        import pydicom
    except ImportError:
        raise ImageError("DICOM input needs pydicom (pip install pydicom)") from None
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    try:
        ds = pydicom.dcmread(source if hasattr(source, "read") else str(source))
    except Exception as e:  # pydicom raises many types on corrupt files
        raise ImageError(f"not a readable DICOM file ({type(e).__name__})") from None
    if "PixelData" not in ds:
        raise ImageError("DICOM file holds no image")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > max_pixels:
        raise ImageError(f"image too large (over {max_pixels} pixels)")
    try:
        arr = ds.pixel_array
    except Exception as e:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", str(ts)) if ts else "unknown transfer syntax"
        if ts is not None and getattr(ts, "is_compressed", False):
            raise ImageError(f"DICOM compressed as {name}: no decoder installed for it") from None
        raise ImageError(f"DICOM pixel data unreadable ({type(e).__name__})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    chroma = 0.0
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") and arr.ndim == 3:
        rgb = np.asarray(arr[..., :3], np.float64)
        top = float(rgb.max()) or 1.0
        chroma = colourfulness(Image.fromarray(np.rint(rgb * (255.0 / top)).astype(np.uint8), "RGB"))
        arr = rgb @ np.array([0.299, 0.587, 0.114])
    elif arr.ndim != 2:
        raise ImageError(f"unsupported DICOM image shape {arr.shape}")
    else:
        arr = apply_modality_lut(arr, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            arr = apply_voi_lut(arr, ds, index=0)
        if photometric == "MONOCHROME1":
            arr = arr.max() - arr + arr.min()
    return gray8_from_array(np.asarray(arr, dtype=np.float64)), chroma
