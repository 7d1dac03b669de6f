"""DICOM input through pydicom: modality LUT (rescale), VOI window, MONOCHROME1 inversion; what the tags
say about the intended use; files without preamble or file meta.

Tags: pixel data and the few tags that say what the image is are read. A file whose tags say it is not
a frontal chest radiograph of a child aged 1 to 5 comes back with a `refusal` (see `tag_refusal`):
Modality other than a radiograph (ACCEPTED_MODALITIES), BodyPartExamined that is not the chest,
ViewPosition lateral, PatientAge (or PatientBirthDate with StudyDate, AcquisitionDate or ContentDate)
outside MIN_AGE_YEARS..MAX_AGE_YEARS. Missing, empty or malformed tags refuse nothing: the image checks
decide. No other tag (patient name, id, dates) leaves this module; the age appears only in the reason.

Files without the 128-byte preamble and `DICM` (older ACR-NEMA style exports, some PACS dumps) are read
when their first bytes are a plausible data set (`looks_like_dataset`: ascending tags of a known first
group, implicit or explicit VR little endian, with consistent lengths) and pydicom, forced, finds pixel
data in them.

Compressed pixel data is decoded by pydicom's plugins; the `edge` extra installs pylibjpeg with its
libjpeg plugin (JPEG Baseline, Extended, Lossless, JPEG-LS); Pillow decodes JPEG 2000 (pylibjpeg's
openjpeg plugin is used instead when installed); pydicom itself RLE and deflate. A transfer syntax
without a decoder installed is refused with the pip packages that decode it (DECODER_PACKAGES).

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
import re
import struct
import unicodedata
from datetime import date

import numpy as np
from PIL import Image

from .errors import ImageError
from .levels import colourfulness, gray8_from_array, reduce_mean
from .limits import DICOM_DECODE_BUDGET, LARGE_PIXELS, REDUCED_SIDE
NATIVE_BITS = {8: "u1", 16: "u2", 32: "u4"}

# pip packages that decode each compressed transfer syntax (pydicom's plugins), for the one-line error
# when none is installed; RLE and deflate are decoded by pydicom itself
_LIBJPEG = "pylibjpeg pylibjpeg-libjpeg"
_OPENJPEG = "pylibjpeg pylibjpeg-openjpeg"
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": _LIBJPEG,  # JPEG Baseline (process 1)
    "1.2.840.10008.1.2.4.51": _LIBJPEG,  # JPEG Extended (processes 2 and 4)
    "1.2.840.10008.1.2.4.57": _LIBJPEG,  # JPEG Lossless (process 14)
    "1.2.840.10008.1.2.4.70": _LIBJPEG,  # JPEG Lossless (process 14, selection value 1)
    "1.2.840.10008.1.2.4.80": _LIBJPEG,  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": _LIBJPEG,  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": _OPENJPEG,  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": _OPENJPEG,  # JPEG 2000
    "1.2.840.10008.1.2.4.201": _OPENJPEG,  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": _OPENJPEG,  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": _OPENJPEG,  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE (pydicom decodes it itself, with numpy)
}

# -- what the tags may refuse (tag_refusal) --
# radiographs: computed and digital radiography, vendors' "DR", conventional film (RG); OT ("other", often
# a digitised film or a secondary capture) says nothing either way and is left to the image checks
ACCEPTED_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT"})
MODALITY_NAMES = {"CT": "CT image", "MR": "MRI image", "US": "ultrasound image", "MG": "mammogram",
                  "NM": "nuclear medicine image", "PT": "PET image", "XA": "angiogram", "RF": "fluoroscopy image",
                  "PX": "dental panoramic X-ray", "IO": "intra-oral dental X-ray", "DG": "dental X-ray",
                  "BMD": "bone densitometry image", "ES": "endoscopy image", "XC": "photograph",
                  "OP": "eye photograph", "SM": "microscopy image", "ECG": "ECG", "SR": "report", "DOC": "document"}
XRAY_MODALITIES = frozenset({"MG", "XA", "RF", "PX", "IO", "DG", "BMD"})  # X-ray images, but not of a chest
# BodyPartExamined that name the chest: DICOM's CHEST and THORAX, vendors' spellings and other languages
# (matched in the upper-cased, accent-free value: "CHEST PA", "Thorax a.p.", "TORAX", "PECHO", "LUNGS")
CHEST_WORDS = ("CHEST", "THORA", "TORAX", "TORAC", "TORAK", "THORAK", "LUNG", "PECHO", "POUMON", "BRUST",
               "CXR", "PULMO", "PETTO", "BORST", "KLATKA", "HRUDNIK", "GRUDN", "MELLKAS", "BROST")
UNINFORMATIVE = frozenset({"", "UNKNOWN", "OTHER", "NONE", "NA", "N A", "UNSPECIFIED", "NOT SPECIFIED"})
# ViewPosition values of a lateral view (matched word by word in the upper-cased value)
LATERAL_WORDS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT", "LATL", "LATR", "LATERALE", "LATERAAL"})
LATERAL_REASON = "lateral view: screen a frontal (front-to-back) chest X-ray"
MIN_AGE_YEARS, MAX_AGE_YEARS = 1, 5  # the screen's intended use: children from 1 year up to their 6th birthday
MAX_PLAUSIBLE_AGE_YEARS = 120  # ages above this (999Y, a birth date of 1900-01-01) are placeholders: ignored
AGE_UNITS = {"D": ("day", 1 / 365.25), "W": ("week", 7 / 365.25), "M": ("month", 1 / 12), "Y": ("year", 1.0)}

# -- files without preamble (looks_like_dataset) --
# groups a bare data set may begin with: command (ACR-NEMA), file meta, identifying, patient, acquisition,
# relationship, image presentation
FIRST_GROUPS = frozenset({0x0000, 0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})
VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR "
                b"US UT UV".split())
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
DATASET_ELEMENTS = 2  # elements that must parse cleanly from the first bytes


def reduction(rows: int, cols: int) -> int:
    """The box factor for an image of ROWS x COLS (1: kept at full size)."""
    if rows * cols <= LARGE_PIXELS:
        return 1
    return math.ceil(max(rows, cols) / REDUCED_SIDE)


def frames_note(frames: int) -> str | None:
    return f"first of {frames} frames screened" if frames > 1 else None


def read_dicom(source, max_pixels: int):
    """(8-bit grayscale Pillow image, colourfulness, note, refusal) of a DICOM file: bytes, a path or a
    binary file object. NOTE says what the reader should know (for a multi-frame file: only the first was
    screened); REFUSAL is why the file's own tags refuse it (None: they do not; see `tag_refusal`).
    Raises ImageError with a one-line reason for anything that cannot be read."""
    try:
        return _read_dicom(source, max_pixels)
    except (ImageError, MemoryError):
        raise
    except Exception as e:  # odd tags can fail anywhere in pydicom: one clean line
        raise ImageError(f"DICOM file unreadable ({type(e).__name__})") from None


def has_preamble(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def looks_like_dataset(head: bytes) -> bool:
    """True when HEAD (a file's first bytes) begins like a DICOM data set without preamble: its first
    DATASET_ELEMENTS elements parse, in implicit or explicit VR little endian, with a first group in
    FIRST_GROUPS, ascending tags, even lengths that fit, and (explicit) known VRs."""
    return any(_elements_parse(head, explicit) for explicit in (False, True))


def _elements_parse(head: bytes, explicit: bool) -> bool:
    pos, prev, count = 0, -1, 0
    while count < DATASET_ELEMENTS:
        if pos + 8 > len(head):
            return False
        group, elem = struct.unpack_from("<HH", head, pos)
        tag = group << 16 | elem
        if (count == 0 and group not in FIRST_GROUPS) or tag <= prev or tag == 0xFFFEE000:
            return False
        if explicit:
            vr = head[pos + 4:pos + 6]
            if vr not in VRS:
                return False
            if vr in LONG_VRS:
                if pos + 12 > len(head) or head[pos + 6:pos + 8] != b"\0\0":
                    return False
                length, size = struct.unpack_from("<I", head, pos + 8)[0], 12
            else:
                length, size = struct.unpack_from("<H", head, pos + 6)[0], 8
        else:
            length, size = struct.unpack_from("<I", head, pos + 4)[0], 8
        if length == 0xFFFFFFFF:  # undefined length (a sequence): enough has been seen if it is not the first
            return count > 0
        if length % 2 or length > (1 << 28):
            return False
        pos, prev, count = pos + size + length, tag, count + 1
    return True


def _read_dicom(source, max_pixels: int):
    try:
        import pydicom
    except ImportError:
        raise ImageError("DICOM input needs pydicom (pip install pydicom)") from None
    data = source if isinstance(source, (bytes, bytearray)) else None
    fileobj = io.BytesIO(data) if data is not None else source if hasattr(source, "read") else str(source)
    head = data[:512] if data is not None else _peek(fileobj, 512)
    force = not has_preamble(head) and looks_like_dataset(head)  # no preamble: read it as a bare data set
    try:
        ds = pydicom.dcmread(fileobj, defer_size=1024, force=force)
    except Exception as e:  # pydicom raises many types on corrupt files
        raise ImageError(f"not a readable DICOM file ({type(e).__name__})") from None
    _set_transfer_syntax(ds)  # no file meta (ACR-NEMA style, or a preamble without it): as it was read
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
    refusal = tag_refusal(ds)
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
        return gray8_from_array(grey, full_range=True), chroma, note, refusal
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
    return gray8_from_array(src, fn=values, full_range=has_voi), chroma, note, refusal


def _peek(fileobj, n: int) -> bytes:
    """The first N bytes of a path or a seekable binary file (its position kept)."""
    if isinstance(fileobj, str):
        try:
            with open(fileobj, "rb") as f:
                return f.read(n)
        except OSError:
            return b""
    pos = fileobj.tell()
    head = fileobj.read(n)
    fileobj.seek(pos)
    return head


def _set_transfer_syntax(ds):
    """A data set read without file meta gets the transfer syntax it was read with (pydicom decodes by it)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit = bool(getattr(ds, "original_encoding", (True, True))[0])
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def _text(ds, keyword: str, limit: int = 32) -> str:
    """A tag's value as plain upper-case ASCII words (accents dropped, anything else a space), at most
    LIMIT characters: safe to show in a reason. '' when absent or empty."""
    try:
        v = ds.get(keyword)
    except Exception:  # a malformed value refuses nothing
        return ""
    if v is None:
        return ""
    if not isinstance(v, str) and hasattr(v, "__iter__"):
        v = " ".join(str(x) for x in v)
    v = unicodedata.normalize("NFKD", str(v)).encode("ascii", "ignore").decode().upper()
    return " ".join(re.sub(r"[^A-Z0-9]+", " ", v).split())[:limit]


def tag_refusal(ds) -> str | None:
    """Why the data set's own tags say it is not what the screen is for, or None (tags absent, empty,
    malformed, or saying a frontal chest radiograph of a child aged 1 to 5). Checked in this order:
    Modality, BodyPartExamined, ViewPosition, age."""
    modality = _text(ds, "Modality", 16)
    if modality and modality not in ACCEPTED_MODALITIES:
        what = MODALITY_NAMES.get(modality, "image")
        what = what if modality in what.split() else f"{what} (modality {modality})"
        if modality in XRAY_MODALITIES:
            return f"{what}, not a chest X-ray: screen a frontal chest X-ray"
        return f"{what}, not a radiograph: screen a chest X-ray"
    part = _text(ds, "BodyPartExamined")
    if part not in UNINFORMATIVE and not any(w in part.replace(" ", "") for w in CHEST_WORDS):
        return f"not a chest X-ray (body part: {part})"
    view = set(_text(ds, "ViewPosition").split())
    if view & LATERAL_WORDS or any(w.startswith("LATERAL") for w in view):
        return LATERAL_REASON
    age = patient_age(ds)
    if age is not None and not MIN_AGE_YEARS <= age[0] < MAX_AGE_YEARS + 1:
        return f"patient aged {age[1]}: this screen is made for children aged {MIN_AGE_YEARS} to {MAX_AGE_YEARS}"
    return None


def patient_age(ds) -> tuple[float, str] | None:
    """(age in years, as words) from PatientAge (nnnD, nnnW, nnnM, nnnY), else from PatientBirthDate and
    the StudyDate (or AcquisitionDate, ContentDate); None when neither is present and well formed."""
    m = re.fullmatch(r"0*(\d{1,3})\s*([DWMY])", _text(ds, "PatientAge", 8).replace(" ", ""))
    if m:
        n, (unit, years) = int(m.group(1)), AGE_UNITS[m.group(2)]
        if n * years <= MAX_PLAUSIBLE_AGE_YEARS:
            return n * years, ("under 1 year" if n == 0 and unit == "year" else _plural(n, unit))
    born = _date(ds, "PatientBirthDate")
    seen = next((d for d in map(lambda k: _date(ds, k), ("StudyDate", "AcquisitionDate", "ContentDate")) if d), None)
    if born is None or seen is None or seen < born:
        return None
    months = (seen.year - born.year) * 12 + seen.month - born.month - (seen.day < born.day)
    years = (seen - born).days / 365.25
    if years > MAX_PLAUSIBLE_AGE_YEARS:
        return None
    if months >= 12:
        return years, _plural(months // 12, "year")
    if months >= 1:
        return years, _plural(months, "month")
    return years, _plural((seen - born).days, "day")


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _date(ds, keyword: str) -> date | None:
    v = _text(ds, keyword, 8)
    if not re.fullmatch(r"\d{8}", v):
        return None
    try:
        return date(int(v[:4]), int(v[4:6]), int(v[6:]))
    except ValueError:
        return None


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
        if ts is not None and getattr(ts, "is_compressed", False):
            raise ImageError(_compressed_error(ts)) from None
        raise ImageError(f"DICOM pixel data unreadable ({type(e).__name__})") from None
    if frames > 1 and arr.ndim == (3 if spp == 1 else 4) and arr.shape[0] == frames:
        arr = arr[0]
    return arr


def _compressed_error(ts) -> str:
    """The one line for compressed pixel data that was not decoded: no decoder installed (and the pip
    packages that decode it), no decoder exists in pydicom, or the installed decoder failed on it."""
    name = getattr(ts, "name", "") or str(ts)
    name = name if name != str(ts) else f"transfer syntax {ts}"
    try:
        from pydicom.pixels import get_decoder

        available = get_decoder(ts).is_available
    except (ImportError, NotImplementedError):
        available = None
    if available is None and str(ts) not in DECODER_PACKAGES:
        return f"DICOM compressed as {name}: no decoder for it in pydicom"
    if not available:
        return f"DICOM compressed as {name}: no decoder installed (pip install {DECODER_PACKAGES.get(str(ts))})"
    return f"DICOM compressed as {name}: its pixel data could not be decoded (corrupt or unsupported)"


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
        except Exception:  # a broken LUT: fall back to the window or the robust window
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
