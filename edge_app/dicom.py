"""DICOM input through pydicom: modality LUT (rescale), VOI window, MONOCHROME1 inversion.

Only pixel data is read; no tag (patient name, id, dates) leaves this module.

Memory: uncompressed pixel data (the common case) is never copied whole. The header is parsed with the
pixel data deferred, the first frame is viewed in place in the file's bytes (numpy.frombuffer) and, for
an image over LARGE_PIXELS, box-averaged in strips to at most REDUCED_SIDE pixels a side, as float32.
A 9400 x 9400 16-bit file is screened with its own bytes plus a few MB. Compressed pixel data is decoded
by pydicom (first frame only) when its decoded size fits DICOM_DECODE_BUDGET, else refused. Multi-frame files:
the first frame is screened, and the note says so.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from .errors import ImageError
from .levels import colourfulness, gray8_from_array, reduce_mean
from .limits import DICOM_DECODE_BUDGET, LARGE_PIXELS, REDUCED_SIDE
NATIVE_BITS = {8: "u1", 16: "u2", 32: "u4"}
GREY = ("MONOCHROME1", "MONOCHROME2")


def reduction(rows: int, cols: int) -> int:
    """The box factor for an image of ROWS x COLS (1: kept at full size)."""
    if rows * cols <= LARGE_PIXELS:
        return 1
    return math.ceil(max(rows, cols) / REDUCED_SIDE)


def frames_note(frames: int) -> str | None:
    return f"first of {frames} frames screened" if frames > 1 else None


def read_dicom(source, max_pixels: int):
    """(8-bit grayscale Pillow image, colourfulness, note) of a DICOM file: bytes, a path or a binary file
    object. NOTE says what the reader should know (for a multi-frame file: only the first was screened).
    Raises ImageError with a one-line reason for anything that cannot be read."""
    try:
        return _read_dicom(source, max_pixels)
    except (ImageError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - odd tags can fail anywhere in pydicom: one clean line
        raise ImageError(f"DICOM file unreadable ({type(e).__name__})") from None


def _read_dicom(source, max_pixels: int):
    try:
        import pydicom
    except ImportError:
        raise ImageError("DICOM input needs pydicom (pip install pydicom)") from None
    data = source if isinstance(source, (bytes, bytearray)) else None
    fileobj = io.BytesIO(data) if data is not None else source if hasattr(source, "read") else str(source)
    try:
        ds = pydicom.dcmread(fileobj, defer_size=1024)
    except Exception as e:  # pydicom raises many types on corrupt files
        raise ImageError(f"not a readable DICOM file ({type(e).__name__})") from None
    if "PixelData" not in ds:
        raise ImageError("DICOM file holds no image")
    try:
        rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        raise ImageError("DICOM image size unreadable") from None
    if rows * cols > max_pixels:
        raise ImageError(f"image too large (over {max_pixels} pixels)")
    if rows <= 0 or cols <= 0:
        raise ImageError("DICOM file gives no image size")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    factor = reduction(rows, cols)
    arr = _native_frame(ds, data, rows, cols, spp, photometric) if data is not None else None
    if arr is None:
        arr = _decoded_frame(ds, rows, cols, spp, frames)
    note = frames_note(frames)
    chroma = 0.0
    if arr.ndim == 3:
        if photometric not in ("RGB", "YBR_FULL", "YBR_FULL_422") and not photometric.startswith("YBR"):
            raise ImageError(f"unsupported DICOM image shape {arr.shape}")
        # colour: box-averaged to at most REDUCED_SIDE a side whatever its pixel count (3 float32 planes)
        rgb = reduce_mean(arr[..., :3], max(factor, math.ceil(max(rows, cols) / REDUCED_SIDE)))
        bits = int(ds.get("BitsStored", 8) or 8)
        # the same scale as a PNG of the same colours (8-bit data unchanged), so that the colour check agrees
        top = float((1 << bits) - 1) if arr.dtype.kind in "iu" and 1 <= bits <= 16 else (float(rgb.max()) or 1.0)
        chroma = colourfulness(Image.fromarray(np.rint(rgb * np.float32(255.0 / top)).astype(np.uint8), "RGB"))
        grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        return gray8_from_array(grey, full_range=True), chroma, note
    if arr.ndim != 2:
        raise ImageError(f"unsupported DICOM image shape {arr.shape}")
    has_voi = _voi(np.zeros(1, np.float32), ds) is not None  # a usable VOI window or LUT

    def values(a: np.ndarray) -> np.ndarray:  # float32 stored values -> displayed values, in place
        a = _modality(a, ds)
        windowed = _voi(a, ds) if has_voi else None
        a = a if windowed is None else windowed
        if photometric == "MONOCHROME1":
            np.negative(a, out=a)
        return a

    # a large image is box-averaged first (float32, small); otherwise the levels are mapped strip by
    # strip from the file's own bytes. After a VOI window: its min..max; without: the robust window.
    src = reduce_mean(arr, factor) if factor > 1 else arr
    return gray8_from_array(src, fn=values, full_range=has_voi), chroma, note


def _native_frame(ds, data: bytes, rows, cols, spp, photometric):
    """The first frame viewed in place in DATA (no copy), or None when pydicom must decode it."""
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts is not None and (ts.is_compressed or getattr(ts, "is_deflated", False)):
        return None
    try:
        elem = ds.get_item("PixelData", keep_deferred=True)  # pydicom 3: the raw element, value not read
    except TypeError:  # pydicom 2 returns the raw element as it is
        elem = ds.get_item("PixelData")
    offset = getattr(elem, "value_tell", None)
    length = getattr(elem, "length", None)
    bits = int(ds.get("BitsAllocated", 0) or 0)
    stored = int(ds.get("BitsStored", bits) or bits)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if offset is None or bits not in NATIVE_BITS or (signed and stored < bits):
        return None
    if spp == 3 and photometric != "RGB":
        return None
    little = ts.is_little_endian if ts is not None else bool(getattr(ds, "is_little_endian", True))
    dtype = np.dtype(("<" if little else ">") + ("i" if signed else "u") + NATIVE_BITS[bits][1])
    count = rows * cols * spp
    if length is not None and 0 < length < count * dtype.itemsize or offset + count * dtype.itemsize > len(data):
        raise ImageError("DICOM pixel data is shorter than the image size it gives (truncated file)")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    if spp == 1:
        return arr.reshape(rows, cols)
    if int(ds.get("PlanarConfiguration", 0) or 0) == 1:
        return arr.reshape(3, rows, cols).transpose(1, 2, 0)
    return arr.reshape(rows, cols, 3)


def _decoded_frame(ds, rows, cols, spp, frames):
    """The first frame decoded by pydicom (compressed or unusual pixel data), within DICOM_DECODE_BUDGET."""
    bits = int(ds.get("BitsAllocated", 16) or 16)
    need = rows * cols * spp * max(1, bits // 8) * (4 if bits < 8 else 1)
    if need > DICOM_DECODE_BUDGET:
        raise ImageError(f"DICOM image too large to decode on this device ({rows}x{cols}, compressed or "
                         f"unusual pixel data needs {need // (1024 * 1024)} MB)")
    try:
        if frames > 1:
            ds.pixel_array_options(index=0)
        arr = ds.pixel_array
    except MemoryError:
        raise
    except Exception as e:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", str(ts)) if ts else "unknown transfer syntax"
        if ts is not None and getattr(ts, "is_compressed", False):
            raise ImageError(f"DICOM compressed as {name}: no decoder installed for it") from None
        raise ImageError(f"DICOM pixel data unreadable ({type(e).__name__})") from None
    if frames > 1 and arr.ndim == (3 if spp == 1 else 4) and arr.shape[0] == frames:
        arr = arr[0]
    return arr


def _modality(a: np.ndarray, ds) -> np.ndarray:
    """Modality LUT: rescale slope and intercept in place (float32), or a LUT sequence through pydicom."""
    if "ModalityLUTSequence" in ds:
        try:
            from pydicom.pixels import apply_modality_lut
        except ImportError:  # pydicom 2
            from pydicom.pixel_data_handlers.util import apply_modality_lut
        return np.asarray(apply_modality_lut(np.rint(a).astype(np.int64), ds), np.float32)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if slope != 1.0:
        a *= np.float32(slope)
    if intercept != 0.0:
        a += np.float32(intercept)
    return a


def _first(v):
    try:
        return float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)
    except (TypeError, ValueError, IndexError):
        return None


def _voi(a: np.ndarray, ds) -> np.ndarray | None:
    """The VOI window of the file (first one) applied to A (float32, 0..1), or None when it has none."""
    if "VOILUTSequence" in ds:
        try:
            from pydicom.pixels import apply_voi_lut
        except ImportError:  # pydicom 2
            from pydicom.pixel_data_handlers.util import apply_voi_lut
        try:
            return np.asarray(apply_voi_lut(np.rint(a).astype(np.int64), ds, index=0), np.float32)
        except Exception:  # noqa: BLE001 - a broken LUT: fall back to the window or the robust window
            pass
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
    if c is None or w is None or not math.isfinite(c) or not math.isfinite(w) or w <= 0:
        return None
    func = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    if func == "SIGMOID":
        a -= np.float32(c)
        a *= np.float32(-4.0 / w)
        np.exp(a, out=a)
        a += np.float32(1.0)
        np.reciprocal(a, out=a)
        return a
    if func == "LINEAR_EXACT":
        a -= np.float32(c - w / 2.0)
        a *= np.float32(1.0 / w)
    else:  # LINEAR (DICOM PS3.3 C.11.2.1.2.1)
        if w < 1:
            return None
        a -= np.float32(c - 0.5)
        a *= np.float32(1.0 / max(w - 1.0, 1e-6))
        a += np.float32(0.5)
    np.clip(a, 0.0, 1.0, out=a)
    return a
