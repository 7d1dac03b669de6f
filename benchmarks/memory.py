"""Peak memory and time of `edge-xray classify` on the worst inputs we know, each in a fresh process.

    python benchmarks/memory.py [--data DATA_DIR] [--keep DIR] [--only NAME ...]

The bound (issue 12): any input up to the pixel limit (about 89 M pixels) screened or refused with a
peak resident memory of at most 300 MB and in at most 3 s, so that a 1 GB device copes. The cases are
written to a temporary folder (several hundred MB; about a minute to make), then each is screened by
`edge-xray classify CASE --json` in its own process, which reports its own peak RSS (VmHWM of
/proc/self/status: since exec, so not its parent's) and CPU time; the wall time is the command's
(start-up and model load included).
The time bound is checked on CPU time (user + system), which a machine shared with other jobs inflates
less than wall time; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("EDGE_XRAY_DATA", ROOT.parent / "shared" / "data" / "chest_xray"))
SIDE = 9400  # 88.4 M pixels, just under Pillow's limit of 89.5 M
LIMIT_MB, LIMIT_S = 300, 3.0


def scan_like(side: int, depth: int = 12) -> np.ndarray:
    """A smooth chest-like 16-bit image (12-bit values), made in strips to keep this script's own memory low."""
    out = np.empty((side, side), np.uint16)
    x = np.linspace(-1, 1, side, dtype=np.float32)
    top = (1 << depth) - 1
    for y0 in range(0, side, 1024):
        y = np.linspace(-1, 1, side, dtype=np.float32)[y0:y0 + 1024, None]
        body = np.exp(-(x[None, :] ** 4 / 0.4 + y ** 4 / 0.5))
        lungs = 0.45 * (np.exp(-((x[None, :] - 0.35) ** 2 / 0.03 + y ** 2 / 0.2))
                        + np.exp(-((x[None, :] + 0.35) ** 2 / 0.03 + y ** 2 / 0.2)))
        out[y0:y0 + 1024] = np.clip((body - lungs) * top, 0, top).astype(np.uint16)
    return out


def write_dicom(path, pixels: np.ndarray, frames: int = 1):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "DX", "MONOCHROME2", 1
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes() * frames
    ds.save_as(str(path), enforce_file_format=True)


def make_cases(d: Path, data_dir: Path) -> dict:
    """name -> list of input paths (a batch)."""
    cases = {}
    good = sorted((data_dir / "fullres" / "PNEUMONIA").glob("*.jpeg"))[:1] if data_dir.is_dir() else []
    good = good or [d / "good.png"]
    if not good[0].exists():
        Image.fromarray((scan_like(1400) >> 4).astype(np.uint8)).save(good[0])

    zeros = Image.new("I;16", (SIDE, SIDE))
    zeros.save(d / "zeros16.png")
    cases["16-bit PNG 9400^2 of zeros (issue row 5)"] = [d / "zeros16.png"]
    big = scan_like(SIDE)
    Image.fromarray(big).save(d / "scan16.png", compress_level=1)
    cases["16-bit PNG 9400^2 scan-like, 12-bit values"] = [d / "scan16.png"]
    write_dicom(d / "scan16.dcm", big)
    cases["16-bit DICOM 9400^2, then a good scan (issue row 4)"] = [d / "scan16.dcm", good[0]]
    write_dicom(d / "frames.dcm", big[:4096, :4096], frames=3)
    cases["16-bit DICOM 3 frames of 4096^2"] = [d / "frames.dcm"]
    rgb = np.repeat((big >> 4).astype(np.uint8)[:, :, None], 3, axis=2)
    Image.fromarray(rgb, "RGB").save(d / "rgb8.png", compress_level=1)
    del rgb
    cases["8-bit RGB PNG 9400^2"] = [d / "rgb8.png"]
    Image.fromarray((big >> 4).astype(np.uint8)).save(d / "gray8.jpg", quality=90)
    cases["8-bit JPEG 9400^2"] = [d / "gray8.jpg"]
    zeros.save(d / "zeros16.tif", compression="tiff_adobe_deflate")
    cases["16-bit TIFF 9400^2 of zeros, deflate"] = [d / "zeros16.tif"]
    Image.fromarray(big).save(d / "scan16_raw.tif")
    cases["16-bit TIFF 9400^2 uncompressed (177 MB file)"] = [d / "scan16_raw.tif"]
    Image.new("RGB", (9000, 9000), (90, 90, 90)).save(d / "rgb_deflate.tif", compression="tiff_deflate")
    cases["8-bit RGB TIFF 9000^2, deflate (243 MB decoded)"] = [d / "rgb_deflate.tif"]
    del big
    return cases


PROBE = r"""
import atexit, resource, sys

def report():  # VmHWM: this process's own peak RSS since exec (ru_maxrss would count its parent's at fork)
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    r = resource.getrusage(resource.RUSAGE_SELF)
    print(f"PEAK {int(hwm) / 1024:.1f} {r.ru_utime + r.ru_stime:.2f}", file=sys.stderr, flush=True)

atexit.register(report)
from edge_xray.cli import cli
cli(["classify", *sys.argv[1:], "--json"], prog_name="edge-xray")
"""


def measure_child(paths) -> dict:
    """Screen PATHS in a fresh `edge-xray classify --json` process: its own peak RSS (VmHWM) and CPU time,
    the wall time, the rows."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PROBE, *map(str, paths)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    err = p.stderr.strip().splitlines()
    peak = [line.split() for line in err if line.startswith("PEAK ")][0]
    return {"peak_rss_mb": float(peak[1]), "seconds": round(wall, 2), "cpu_seconds": float(peak[2]),
            "exit": p.returncode,
            "rows": [f"{r['status']}: {r['error'] or r['label']}" + (f" ({r['note']})" if r.get("note") else "")
                     for r in rows],
            "stderr": [line for line in err if "Traceback" in line or line.startswith("Error")][:2]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data (a real good scan from fullres/)")
    ap.add_argument("--keep", type=Path, default=None, help="make the cases here and keep them")
    ap.add_argument("--only", nargs="*", default=None, help="case names containing these words")
    ap.add_argument("--make", type=Path, default=None, help=argparse.SUPPRESS)  # internal: make the cases only
    args = ap.parse_args()
    if args.make:  # in its own process, so that the measuring process stays small (a child's peak RSS
        # counts the pages it shares with its parent at fork)
        print(json.dumps({k: [str(p) for p in v] for k, v in make_cases(args.make, args.data).items()}))
        return
    d = args.keep or Path(tempfile.mkdtemp(prefix="edge-xray-memory-"))
    d.mkdir(parents=True, exist_ok=True)
    try:
        made = subprocess.run([sys.executable, __file__, "--make", str(d), "--data", str(args.data)],
                              capture_output=True, text=True, check=True)
        cases = json.loads(made.stdout)
        baseline = measure_child(list(cases.values())[2][1:])
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"baseline (one good scan): {baseline['peak_rss_mb']} MB, {baseline['seconds']} s wall, "
              f"{baseline['cpu_seconds']} s CPU")
        worst = 0.0
        for name, paths in cases.items():
            if args.only and not any(w in name for w in args.only):
                continue
            r = measure_child(paths)
            ok = r["peak_rss_mb"] <= LIMIT_MB and r["cpu_seconds"] <= LIMIT_S and not r["stderr"]
            worst = max(worst, r["peak_rss_mb"])
            print(f"{'ok  ' if ok else 'OVER'} {name}: {r['peak_rss_mb']} MB, {r['seconds']} s wall, "
                  f"{r['cpu_seconds']} s CPU, exit {r['exit']}; "
                  + "; ".join(r["rows"]) + (f" | {r['stderr']}" if r["stderr"] else ""))
        print(f"worst peak: {worst} MB (bound {LIMIT_MB} MB, {LIMIT_S} s)")
    finally:
        if args.keep is None:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
