"""Field safety: DICOM and other clinic formats, refusal of what is not a chest X-ray, fuzzing."""

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from edge_xray.cli import cli
from edge_xray.preprocess import ImageError, decode_bytes, load_image, prepare
from edge_xray.runtime import DEFAULT_MODEL
from conftest import FULLRES, xray_like

needs_pydicom = pytest.mark.skipif(__import__("importlib").util.find_spec("pydicom") is None,
                                   reason="pydicom is not installed")


def write_dicom(path, pixels, photometric="MONOCHROME2", bits=16, slope=1.0, intercept=0.0, window=None,
                transfer_syntax=None, compressed_bytes=None):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = "Test^Child", "ID-0001", "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, 12 if bits == 16 else 8, (11 if bits == 16 else 7), 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if compressed_bytes is not None:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([compressed_bytes])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels.astype(np.uint16 if bits == 16 else np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def same_as_png(im, ref):
    a, b = prepare(im, 128), prepare(Image.fromarray(ref), 128)
    return np.abs(a - b).mean()


@needs_pydicom
def test_dicom_monochrome2_with_rescale(tmp_path):
    g = xray_like()
    p = write_dicom(tmp_path / "a.dcm", g.astype(np.uint16) * 16, slope=2.0, intercept=-100)
    assert same_as_png(load_image(p), g) < 0.01


@needs_pydicom
def test_dicom_monochrome1_is_inverted(tmp_path):
    g = xray_like()
    p = write_dicom(tmp_path / "b.dcm", (255 - g).astype(np.uint16) * 16, photometric="MONOCHROME1")
    assert same_as_png(load_image(p), g) < 0.01


@needs_pydicom
def test_dicom_without_extension_and_with_window(tmp_path):
    g = xray_like()
    p = write_dicom(tmp_path / "scan_no_ext", g.astype(np.uint16) * 16, window=(2048, 4096))
    assert same_as_png(load_image(p), g) < 0.01


@needs_pydicom
def test_dicom_compressed_without_decoder_is_refused(tmp_path):
    from pydicom.uid import JPEG2000Lossless

    p = write_dicom(tmp_path / "c.dcm", xray_like(), transfer_syntax=JPEG2000Lossless,
                    compressed_bytes=b"\xff\x4f\xff\x51" + bytes(64))
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert str(e.value).startswith("DICOM compressed as JPEG 2000")


@needs_pydicom
def test_corrupt_dicom_is_refused(tmp_path):
    p = tmp_path / "d.dcm"
    p.write_bytes(bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI" + bytes(20))
    with pytest.raises(ImageError):
        load_image(p)


def test_tiff_16bit_matches_8bit(tmp_path):
    g = xray_like()
    Image.fromarray(g.astype(np.uint16) * 200).save(tmp_path / "a.tif")
    assert same_as_png(load_image(tmp_path / "a.tif"), g) < 0.01


bundled = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no bundled model in this checkout")


def ood_images():
    rng = np.random.default_rng(3)
    s = 300
    yy, xx = np.mgrid[0:s, 0:s] / s
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[0]
    return {
        "blank": np.zeros((s, s), np.uint8),
        "noise": rng.integers(0, 256, (s, s)).astype(np.uint8),
        "gradient": (xx * 255).astype(np.uint8),
        "checkerboard": ((((np.arange(s)[:, None] // 20) + (np.arange(s)[None] // 20)) % 2) * 255).astype(np.uint8),
        "photo": photo,
    }


@bundled
@pytest.mark.parametrize("kind", ["blank", "noise", "gradient", "checkerboard", "photo"])
def test_not_a_chest_xray_is_rejected(tmp_path, kind):
    p = tmp_path / f"{kind}.png"
    Image.fromarray(ood_images()[kind]).save(p)
    r = CliRunner().invoke(cli, ["classify", str(p), "--json"])
    assert r.exit_code == 3
    row = json.loads(r.stdout)
    assert row["status"] == "rejected" and row["label"] is None and row["error"]
    assert r.stderr == (f"{p}: REJECTED - {row['error']}\n"
                        "summary: 0 screened (0 refer today, 0 refer, 0 no pneumonia found), 1 refused, 0 errors\n")


@bundled
@pytest.mark.slow
def test_real_scans_are_not_rejected(data_dir):
    r = CliRunner().invoke(cli, ["classify", str(FULLRES), "--json"])
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 80 and sum(x["status"] == "rejected" for x in rows) <= 1


def encoded(fmt, arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


@settings(max_examples=int(__import__("os").environ.get("EDGE_XRAY_FUZZ_EXAMPLES", "150")), deadline=2000,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_decode_and_prepare_only_refuse_cleanly(data):
    """Mutated PNG/JPEG/TIFF/BMP bytes: decode + prepare either succeeds or raises ImageError."""
    fmt = data.draw(st.sampled_from(["PNG", "JPEG", "TIFF", "BMP"]))
    side = data.draw(st.integers(8, 96))
    base = bytearray(encoded(fmt, xray_like((side + 70, side + 64), seed=side)))
    for _ in range(data.draw(st.integers(0, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, max(0, len(base) - 1)))
        if op == "flip" and base:
            base[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del base[i:]
        else:
            base[i:i] = data.draw(st.binary(max_size=16))
    try:
        im = decode_bytes(bytes(base), 128).image
    except ImageError as e:
        assert str(e) and "\n" not in str(e)
        return
    x = prepare(im, 128)
    assert x.shape == (128, 128) and np.isfinite(x).all()


@bundled
@pytest.mark.parametrize("variant", ["png16", "tiff16", "dicom_mono1", "dicom_mono2", "exif_rotated", "rgba", "palette"])
def test_clinic_formats_give_the_same_answer_as_the_jpeg(data_dir, tmp_path, variant):
    """A real full-resolution scan, re-encoded as clinics produce it, gets the same label and p."""
    import edge_xray

    src = sorted((FULLRES / "PNEUMONIA").glob("*.jpeg"))[0]
    g8 = np.asarray(Image.open(src).convert("L"))
    g16 = g8.astype(np.uint16) * 256 + 128
    p = tmp_path / f"scan-{variant}"
    if variant == "png16":
        p = p.with_suffix(".png")
        Image.fromarray(g16).save(p)
    elif variant == "tiff16":
        p = p.with_suffix(".tif")
        Image.fromarray(g16).save(p)
    elif variant == "dicom_mono1":
        p = write_dicom(p.with_suffix(".dcm"), (4095 - g8.astype(np.uint16) * 16), photometric="MONOCHROME1")
    elif variant == "dicom_mono2":
        p = write_dicom(p.with_suffix(".dcm"), g8.astype(np.uint16) * 16, slope=0.5, intercept=10)
    elif variant == "exif_rotated":
        exif = Image.Exif()
        exif[0x0112] = 6
        p = p.with_suffix(".jpg")
        Image.fromarray(g8).rotate(90, expand=True).convert("RGB").save(p, exif=exif, quality=95)
    elif variant == "rgba":
        p = p.with_suffix(".png")
        Image.fromarray(g8).convert("RGBA").save(p)
    else:
        p = p.with_suffix(".png")
        Image.fromarray(g8).convert("P").save(p)
    screener = edge_xray.load_model()
    ref, got = screener.classify(src), screener.classify(p)
    assert ref.status == got.status == "ok", got
    assert got.label == ref.label
    assert abs(got.pneumonia_probability - ref.pneumonia_probability) < 0.05
