"""Helpers shared by the tests of the command line's hard cases (test_output, test_audit, test_trust,
test_inputs, test_decode_large, test_dicom_read, test_decode_formats): run a command in-process, check that
it ended cleanly, bound a call that could hang, and make scans and DICOM files in a temporary folder."""

from __future__ import annotations

import errno
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import FULLRES, TRAIN, need_data, xray_like
from edge_xray.cli import cli
from edge_xray.runtime import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
bundled = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no bundled model")


def run(*args, env=None):
    return CliRunner().invoke(cli, [a if isinstance(a, str) else os.fsdecode(a) for a in args], env=env)


def assert_clean(r):
    """No traceback: the command ended by its own exit code."""
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output


@contextmanager
def deadline(seconds):
    """Fail instead of hanging (SIGALRM interrupts a blocking open or read)."""

    def hang(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def save_scan(path, seed=0, size=(400, 360)):
    Image.fromarray(xray_like(size, seed)).save(path)
    return Path(path)


def dicom_file(path, pixels: np.ndarray, frames: int = 1):
    """An uncompressed DICOM of PIXELS (grey 16-bit, or RGB 8-bit when H x W x 3), FRAMES copies of it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape[:2]
    rgb = pixels.ndim == 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = (3, "RGB") if rgb else (1, "MONOCHROME2")
    if rgb:
        ds.PlanarConfiguration = 0
    bits = 8 if rgb else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.astype(np.uint8 if rgb else np.uint16).tobytes() * frames
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def real_scan(i: int = 0, label: str = "PNEUMONIA", folder: Path = FULLRES) -> Path:
    """Scan I (sorted by name) of FOLDER/LABEL of the real data (default: the first full-resolution
    PNEUMONIA scan)."""
    need_data()
    files = sorted((folder / label).glob("*.jpeg"))
    if len(files) <= i:
        pytest.fail(f"{folder / label}: fewer than {i + 1} scans")
    return files[i]


def child_scan(i: int = 0, label: str = "NORMAL") -> np.ndarray:
    """Training scan I of LABEL as grey uint8 (224 px): for tests that need a scan to be screened. The
    synthetic xray_like images are refused by the intended-use check (not a young child's chest), as
    they should be."""
    with Image.open(real_scan(i, label, TRAIN)) as im:
        return np.asarray(im.convert("L"))


def bundled_screener():
    """The bundled model, loaded (skips without it)."""
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled model")
    import edge_xray

    return edge_xray.load_model()


def full_disk_after(n):
    """A replacement for the row/audit writers' sync that raises ENOSPC after N good syncs (a full disk)."""
    calls = {"n": 0}

    def sync(self):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(self.fd)

    return sync
