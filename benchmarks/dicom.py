"""DICOM as X-ray units write it: a real scan in every transfer syntax the `edge` extra decodes.

    python benchmarks/dicom.py write SCAN OUTDIR [--side 1024]
        SCAN (any image) as a 12-bit DX DICOM in every syntax of SYNTAXES, plus an ACR-NEMA style file
        (no preamble, no file meta): the files tests/test_dicom.py and .ci/arm64 screen.
    python benchmarks/dicom.py time [--fullres DIR] [--scans 4] [--side 2048] [--repeat 3]
        For the first SCANS of each class under DIR: every syntax written, then screened by the bundled
        model; prints per syntax the median file size, the median time to read and screen one file
        (decode included), and the largest |p - p(uncompressed)| and label changes.

Encoders (the `dev` extra): pydicom itself (RLE, deflate), pyjpegls (JPEG-LS), pylibjpeg-openjpeg
(JPEG 2000), imagecodecs' libjpeg-turbo (JPEG Baseline, Extended 12-bit, Lossless process 14 and SV1:
pydicom has no encoder for these). Decoders: the `edge` extra (pylibjpeg with libjpeg and openjpeg).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGE_XRAY_DATA", ROOT.parent / "shared" / "data" / "chest_xray"))

# transfer syntax UID -> (file name stem, bits stored, lossy); 12 bits is the depth CR and DX units write
SYNTAXES = {
    "1.2.840.10008.1.2.1": ("explicit-vr-le", 12, False),
    "1.2.840.10008.1.2": ("implicit-vr-le", 12, False),
    "1.2.840.10008.1.2.1.99": ("deflated", 12, False),
    "1.2.840.10008.1.2.5": ("rle", 12, False),
    "1.2.840.10008.1.2.4.50": ("jpeg-baseline-8bit", 8, True),
    "1.2.840.10008.1.2.4.51": ("jpeg-extended-12bit", 12, True),
    "1.2.840.10008.1.2.4.57": ("jpeg-lossless-p14", 12, False),  # predictor 6
    "1.2.840.10008.1.2.4.70": ("jpeg-lossless-sv1", 12, False),  # selection value 1
    "1.2.840.10008.1.2.4.80": ("jpeg-ls-lossless", 12, False),
    "1.2.840.10008.1.2.4.81": ("jpeg-ls-near-lossless", 12, True),  # error bound 3 (of 4095)
    "1.2.840.10008.1.2.4.90": ("jpeg2000-lossless", 12, False),
    "1.2.840.10008.1.2.4.91": ("jpeg2000-lossy", 12, True),  # compression ratio 20
}
REFERENCE = "1.2.840.10008.1.2.1"  # uncompressed: what the others are compared with
JPEG_OPTIONS = {"1.2.840.10008.1.2.4.50": dict(level=92),
                "1.2.840.10008.1.2.4.51": dict(level=92, bitspersample=12),
                "1.2.840.10008.1.2.4.57": dict(lossless=True, predictor=6, bitspersample=12),
                "1.2.840.10008.1.2.4.70": dict(lossless=True, predictor=1, bitspersample=12)}
PATIENT = dict(PatientName="Doe^Jane", PatientID="PID-739215")  # made up: tests check they are never written


def to12(gray8: np.ndarray) -> np.ndarray:
    """8-bit values spread over 0..4095 (12 bits stored in 16)."""
    return gray8.astype(np.uint16) * 16 + (gray8 >> 4)


def dataset(pixels: np.ndarray, bits: int, **tags):
    """A DX image data set of PIXELS (uint8 when BITS is 8, else uint16) with file meta and TAGS."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT["PatientName"], PATIENT["PatientID"], "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.PixelData = pixels.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def write_as(path, gray8: np.ndarray, syntax: str, **tags) -> Path:
    """GRAY8 (8-bit grey array) as a DICOM file in transfer SYNTAX (a UID of SYNTAXES), with TAGS."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    syntax = UID(syntax)
    _, bits, _ = SYNTAXES[syntax]
    pixels = gray8 if bits == 8 else to12(gray8)
    ds = dataset(pixels, bits, **tags)
    if syntax in JPEG_OPTIONS:  # libjpeg-turbo through imagecodecs
        import imagecodecs

        ds.PixelData = encapsulate([imagecodecs.jpeg8_encode(pixels, **JPEG_OPTIONS[syntax])])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax.is_compressed:
        options = {"1.2.840.10008.1.2.4.81": dict(jls_error=3), "1.2.840.10008.1.2.4.91": dict(j2k_cr=[20])}
        ds.compress(syntax, pixels, **options.get(syntax, {}))
    else:  # uncompressed or deflated: only the transfer syntax changes
        ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def write_bare(path, ds, implicit: bool = True) -> Path:
    """DS as an ACR-NEMA style file: no preamble, no DICM, no file meta (implicit or explicit VR LE)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    Path(path).write_bytes(fp.getvalue())
    return Path(path)


def read_gray(path, side: int) -> np.ndarray:
    im = Image.open(path).convert("L")
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(im)


def write_all(scan, outdir, side: int, **tags) -> list[Path]:
    """SCAN in every syntax (and ACR-NEMA style) under OUTDIR, as `<name>.dcm` and `acr-nema`."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    g = read_gray(scan, side)
    files = [write_as(out / f"{name}.dcm", g, syntax, **tags) for syntax, (name, _, _) in SYNTAXES.items()]
    ds = dataset(to12(g), 12, **tags)
    del ds.file_meta
    return files + [write_bare(out / "acr-nema", ds)]


def timing(args):
    import edge_xray

    screener = edge_xray.load_model()
    scans = [p for cls in ("NORMAL", "PNEUMONIA") for p in sorted((Path(args.fullres) / cls).glob("*.jpeg"))[:args.scans]]
    if not scans:
        sys.exit(f"no scans under {args.fullres}/NORMAL and /PNEUMONIA")
    sizes, times, dp, flips = ({s: [] for s in SYNTAXES} for _ in range(4))
    with tempfile.TemporaryDirectory() as tmp:
        for scan in scans:
            g = read_gray(scan, args.side)
            rows = {}
            for syntax, (name, _, _) in SYNTAXES.items():
                p = write_as(Path(tmp) / f"{name}.dcm", g, syntax)
                sizes[syntax].append(p.stat().st_size)
                best = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    rows[syntax] = screener.classify(p)
                    best.append(time.perf_counter() - t)
                times[syntax].append(statistics.median(best))
            ref = rows[REFERENCE]
            for syntax, r in rows.items():
                if not r.ok:
                    sys.exit(f"{scan.name} as {SYNTAXES[syntax][0]}: {r.status} {r.error}")
                dp[syntax].append(abs(r.pneumonia_probability - ref.pneumonia_probability))
                flips[syntax].append(r.label != ref.label)
    print(f"{len(scans)} real scans (fullres, first {args.scans} per class) at {args.side} px a side at most, "
          f"bundled model, median of {args.repeat} runs per file")
    print(f"{'transfer syntax':24s} {'size (KB)':>10s} {'read+screen (ms)':>17s} {'max |dp|':>9s} {'label flips':>12s}")
    for syntax, (name, _, _) in SYNTAXES.items():
        print(f"{name:24s} {statistics.median(sizes[syntax]) / 1024:10.0f} {1000 * statistics.median(times[syntax]):17.0f} "
              f"{max(dp[syntax]):9.4f} {sum(flips[syntax]):12d}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="one scan in every syntax (and ACR-NEMA style) into a folder")
    w.add_argument("scan")
    w.add_argument("outdir")
    w.add_argument("--side", type=int, default=1024)
    t = sub.add_parser("time", help="size, time and answer per syntax on real scans")
    t.add_argument("--fullres", default=str(DATA / "fullres"), help="a folder with NORMAL/ and PNEUMONIA/ scans")
    t.add_argument("--scans", type=int, default=4)
    t.add_argument("--side", type=int, default=2048)
    t.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.cmd == "write":
        tags = dict(BodyPartExamined="CHEST", ViewPosition="PA", PatientAge="003Y")  # a frontal chest of a child
        files = write_all(args.scan, args.outdir, args.side, **tags)
        print(f"{len(files)} DICOM files of {Path(args.scan).name} in {args.outdir}")
    else:
        timing(args)


if __name__ == "__main__":
    main()
