"""Reading DICOM as clinics export it (edge_xray.dicom), replayed from the adversarial trial (issue 12): 12-bit
data without a VOI window and with one hot pixel is not blank, a DICOMDIR is screened through its images
once each, an RGB DICOM gets the same decision as the same PNG, a multi-frame file has its first frame
screened and says so. (tests/test_dicom.py covers the DICOM reader's own cases.)"""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from conftest import xray_like
from helpers import bundled_screener, dicom_file


@pytest.fixture(scope="module")
def screener():
    return bundled_screener()



def test_12bit_dicom_without_window_with_one_hot_pixel_is_not_blank(tmp_path):
    pytest.importorskip("pydicom")
    from edge_xray.gate import image_reason
    from edge_xray.preprocess import load_image, prepare
    from test_field import write_dicom

    g8 = xray_like()
    g16 = g8.astype(np.uint16) * 16
    g16[5, 5] = 65535
    im = load_image(write_dicom(tmp_path / "a.dcm", g16))
    assert image_reason(im) is None
    assert np.abs(prepare(im, 128) - prepare(Image.fromarray(g8), 128)).mean() < 0.01


def test_dicomdir_is_screened_through_its_images(screener, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.fileset import FileSet
    from test_field import write_dicom

    src = tmp_path / "src"
    src.mkdir()
    fs = FileSet()
    for i in range(2):
        p = write_dicom(src / f"{i}.dcm", xray_like(seed=i).astype(np.uint16) * 16)
        ds = pydicom.dcmread(p)
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "P1", "1.2.3", "1.2.3.4"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.SeriesNumber, ds.InstanceNumber = (
            "20260101", "120000", "1", "1", 1, i + 1)
        fs.add(ds)
    usb = tmp_path / "usb"
    fs.write(usb)
    rows = list(screener.classify_many([usb]))
    assert len(rows) == 2 and all(r.status in ("ok", "rejected") for r in rows), rows  # once each
    assert all("DICOMDIR" not in r.path for r in rows)
    rows = list(screener.classify_many([usb / "DICOMDIR"]))  # the index itself, given as the input
    assert len(rows) == 2 and all(r.input_sha256 for r in rows)


def test_tinted_image_as_png_and_rgb_dicom_gets_the_same_decision(screener, tmp_path):
    pytest.importorskip("pydicom")

    g = xray_like().astype(np.float32)
    rgb = np.clip(np.stack([g * 1.0, g * 0.8, g * 0.55], -1), 0, 255).astype(np.uint8)  # sepia-tinted
    Image.fromarray(rgb, "RGB").save(tmp_path / "t.png")
    p = dicom_file(tmp_path / "t.dcm", rgb)
    a, b = screener.classify(tmp_path / "t.png"), screener.classify(p)
    assert a.status == b.status == "rejected"
    assert a.error == b.error == "colour image: not a radiograph (X-rays are grey)"


def test_multiframe_dicom_screens_the_first_frame_and_says_so(screener, tmp_path):
    pytest.importorskip("pydicom")
    g = xray_like().astype(np.uint16) * 16
    dicom_file(tmp_path / "f.dcm", g, frames=3)
    s = screener.classify(tmp_path / "f.dcm")
    assert s.note == "first of 3 frames screened" and s.input_sha256
