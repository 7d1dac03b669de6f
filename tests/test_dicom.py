"""DICOM as X-ray units write it (edge_app/dicom.py): a real scan in every transfer syntax the `edge` extra
decodes, read and screened as its source; the refusals by tag (modality, body part, lateral view, age);
files without preamble or file meta (ACR-NEMA style) found in folders; no tag value in rows or the audit
log; the package named when a decoder is missing."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom import uid as U  # noqa: E402

import edge_xray  # noqa: E402
from edge_xray import dicom  # noqa: E402
from edge_xray.cli import cli  # noqa: E402
from edge_xray.errors import ImageError  # noqa: E402
from edge_xray.inputs import Skipped, find_inputs  # noqa: E402
from edge_xray.preprocess import load_scan  # noqa: E402
from edge_xray.runtime import DEFAULT_MODEL  # noqa: E402
from conftest import FULLRES, ROOT, need_data, xray_like  # noqa: E402
from helpers import child_scan  # noqa: E402

# the writer of every transfer syntax (shared with the benchmark and .ci/arm64)
_spec = importlib.util.spec_from_file_location("dicom_writer", ROOT / "benchmarks" / "dicom.py")
W = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(W)

SIDE = 640  # the real scan is written at this longest side: every syntax encodes in well under a second
LOSSY_TOLERANCE = 0.05  # pneumonia probability, lossy syntax against the uncompressed file
SOURCE_TOLERANCE = 0.03  # uncompressed 12-bit DICOM against the 8-bit PNG it was made from
NAME, PATIENT_ID = W.PATIENT["PatientName"], W.PATIENT["PatientID"]  # never in a row or the audit log
SYNTAXES = {U.UID(k): v for k, v in W.SYNTAXES.items()}  # uid -> (name, bits stored, lossy)


# the pydicom plugin that decodes each compressed syntax on a device with only the `edge` extra
EDGE_PLUGINS = {U.RLELossless: "pydicom", U.JPEG2000Lossless: "pillow", U.JPEG2000: "pillow"}
EDGE_PLUGINS.update({s: "pylibjpeg" for s in SYNTAXES if s.is_compressed and s not in EDGE_PLUGINS})


@pytest.fixture()
def edge_decoders(monkeypatch):
    """pydicom's decoders limited to the plugins the `edge` extra installs (the dev extra adds others)."""
    from pydicom.pixels import get_decoder

    for syntax, plugin in EDGE_PLUGINS.items():
        dec = get_decoder(syntax)
        assert plugin in dec._available, f"{syntax.name}: {plugin} is not installed"  # pydicom 3's plugin table
        monkeypatch.setattr(dec, "_available", {plugin: dec._available[plugin]})


@pytest.fixture(scope="module")
def screener():
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled model")
    return edge_xray.load_model()


def dataset(pixels: np.ndarray, bits: int, **tags) -> Dataset:
    return W.dataset(pixels, bits, **tags)


def write_as(path, gray8: np.ndarray, syntax, **tags):
    if syntax in W.JPEG_OPTIONS:
        pytest.importorskip("imagecodecs")
    return W.write_as(path, gray8, syntax, **tags)


def bare(path, ds: Dataset, implicit: bool = True):
    return W.write_bare(path, ds, implicit)


@pytest.fixture(scope="module", params=["NORMAL", "PNEUMONIA"])
def source(request, tmp_path_factory):
    """A real full-resolution scan of each class, 8-bit, at SIDE pixels, and the PNG of it."""
    need_data()
    im = Image.open(sorted((FULLRES / request.param).glob("*.jpeg"))[0]).convert("L")
    im.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    png = tmp_path_factory.mktemp("src") / "scan.png"
    im.save(png)
    return np.asarray(im), png


# -- every transfer syntax, from a real scan -----------------------------------------------------------

def test_every_transfer_syntax_reads_and_screens_as_its_source(screener, source, tmp_path, edge_decoders):
    gray8, png = source
    ref = screener.classify(png)
    assert ref.ok
    rows = {}
    for syntax in SYNTAXES:
        p = write_as(tmp_path / f"{SYNTAXES[syntax][0]}.dcm", gray8, syntax)
        assert pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
        rows[syntax] = s = screener.classify(p)
        assert s.ok, (syntax.name, s.error)
        assert s.label == ref.label, syntax.name
    base = rows[U.ExplicitVRLittleEndian].pneumonia_probability
    assert abs(base - ref.pneumonia_probability) <= SOURCE_TOLERANCE
    for syntax, s in rows.items():
        if SYNTAXES[syntax][2]:
            assert abs(s.pneumonia_probability - base) <= LOSSY_TOLERANCE, syntax.name
        else:  # lossless: the very same pixels, the very same answer
            assert s.pneumonia_probability == base, syntax.name


def test_lossless_syntaxes_decode_to_the_same_pixels(source, tmp_path, edge_decoders):
    gray8, _ = source
    want = np.asarray(load_scan(write_as(tmp_path / "u.dcm", gray8, U.ExplicitVRLittleEndian)).image)
    for syntax in (U.RLELossless, U.JPEGLossless, U.JPEGLosslessSV1, U.JPEGLSLossless, U.JPEG2000Lossless,
                   U.DeflatedExplicitVRLittleEndian, U.ImplicitVRLittleEndian):
        got = np.asarray(load_scan(write_as(tmp_path / "c.dcm", gray8, syntax)).image)
        assert np.array_equal(got, want), syntax.name


def test_a_missing_decoder_names_the_syntax_and_the_package(monkeypatch, tmp_path):
    from pydicom.pixels import get_decoder

    p = write_as(tmp_path / "ls.dcm", xray_like(), U.JPEGLSLossless)
    monkeypatch.setattr(get_decoder(U.JPEGLSLossless), "_available", {})  # as without pylibjpeg or pyjpegls
    with pytest.raises(ImageError) as e:
        load_scan(p)
    assert str(e.value) == ("DICOM compressed as JPEG-LS Lossless Image Compression: no decoder installed "
                            "(pip install pylibjpeg pylibjpeg-libjpeg)")


def test_a_corrupt_codestream_is_not_called_a_missing_decoder(tmp_path):
    p = write_as(tmp_path / "j.dcm", xray_like(), U.JPEGLossless)
    ds = pydicom.dcmread(p)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + bytes(200)])
    ds.save_as(p, enforce_file_format=True)
    with pytest.raises(ImageError) as e:
        load_scan(p)
    assert "could not be decoded" in str(e.value) and "no decoder" not in str(e.value)


# -- refusals by tag -----------------------------------------------------------------------------------

REFUSALS = [
    (dict(Modality="CT"), "CT image, not a radiograph: screen a chest X-ray"),
    (dict(Modality="MR"), "MRI image (modality MR), not a radiograph: screen a chest X-ray"),
    (dict(Modality="MG"), "mammogram (modality MG), not a chest X-ray: screen a frontal chest X-ray"),
    (dict(Modality="ZZ"), "image (modality ZZ), not a radiograph: screen a chest X-ray"),
    (dict(BodyPartExamined="HAND"), "not a chest X-ray (body part: HAND)"),
    (dict(ViewPosition="LL"), "lateral view: screen a frontal (front-to-back) chest X-ray"),
    (dict(ViewPosition="LATERAL"), "lateral view: screen a frontal (front-to-back) chest X-ray"),
    (dict(PatientAge="045Y"), "patient aged 45 years: this screen is made for children aged 1 to 5"),
    (dict(PatientAge="004M"), "patient aged 4 months: this screen is made for children aged 1 to 5"),
    (dict(PatientAge="010W"), "patient aged 10 weeks: this screen is made for children aged 1 to 5"),
    (dict(PatientAge="005D"), "patient aged 5 days: this screen is made for children aged 1 to 5"),
    (dict(PatientAge="006Y"), "patient aged 6 years: this screen is made for children aged 1 to 5"),
    (dict(PatientBirthDate="19800615", StudyDate="20250614"),
     "patient aged 44 years: this screen is made for children aged 1 to 5"),
    (dict(PatientBirthDate="20250101", ContentDate="20250520"),
     "patient aged 4 months: this screen is made for children aged 1 to 5"),
]
ACCEPTED = [dict(), dict(Modality="CR", BodyPartExamined="CHEST", ViewPosition="PA", PatientAge="003Y"),
            dict(BodyPartExamined="Chest PA"), dict(BodyPartExamined="THORAX"), dict(BodyPartExamined="Tórax"),
            dict(BodyPartExamined="PECHO"), dict(BodyPartExamined="LUNG"), dict(BodyPartExamined=""),
            dict(ViewPosition="AP"), dict(PatientAge="012M"), dict(PatientAge="071M"), dict(PatientAge="005Y"),
            dict(PatientAge="45 years"), dict(PatientAge="999Y"),  # malformed or placeholder: ignored
            dict(PatientBirthDate="20210301", StudyDate="20250101"),
            dict(PatientBirthDate="2021", StudyDate="20250101"),  # malformed date: ignored
            dict(PatientAge="003Y", PatientBirthDate="19800101", StudyDate="20250101")]  # the age tag wins


@pytest.mark.parametrize("tags,reason", REFUSALS)
def test_tags_refuse_with_a_reason(tags, reason):
    assert dicom.tag_refusal(dataset(xray_like(), 8, **tags)) == reason


@pytest.mark.parametrize("tags", ACCEPTED)
def test_tags_that_say_a_frontal_chest_of_a_young_child_or_nothing_refuse_nothing(tags):
    assert dicom.tag_refusal(dataset(xray_like(), 8, **tags)) is None


@pytest.mark.parametrize("tags,reason", [REFUSALS[0], REFUSALS[4], REFUSALS[5], REFUSALS[7], REFUSALS[12]])
def test_a_tagged_file_is_rejected_before_inference(screener, tmp_path, monkeypatch, tags, reason):
    p = write_as(tmp_path / "t.dcm", xray_like(), U.ExplicitVRLittleEndian, **tags)
    monkeypatch.setattr(screener.model, "run", lambda *a, **k: pytest.fail("the model ran on a refused file"))
    s = screener.classify(p)
    assert (s.status, s.error, s.label, s.pneumonia_probability) == ("rejected", reason, None, None)


def test_tags_never_make_a_refused_image_pass(screener, tmp_path):
    """A blank image with perfect tags is refused by the image checks, as without them."""
    flat = np.full((300, 260), 128, np.uint8)
    tags = dict(Modality="CR", BodyPartExamined="CHEST", ViewPosition="PA", PatientAge="003Y")
    s = screener.classify(write_as(tmp_path / "f.dcm", flat, U.ExplicitVRLittleEndian, **tags))
    Image.fromarray(flat).save(tmp_path / "f.png")
    assert s.status == "rejected" and s.error == screener.classify(tmp_path / "f.png").error


def test_no_tag_value_is_written_to_rows_audit_log_or_heatmaps(tmp_path):
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled model")
    d = tmp_path / "in"
    d.mkdir()
    write_as(d / "adult.dcm", xray_like(), U.ExplicitVRLittleEndian, PatientAge="045Y",
             PatientBirthDate="19800101", StudyDate="20250101", InstitutionName="St Example Clinic")
    write_as(d / "child.dcm", child_scan(0, "PNEUMONIA"), U.JPEGLSLossless, PatientAge="003Y")
    out, log, maps = tmp_path / "rows.jsonl", tmp_path / "audit.jsonl", tmp_path / "maps"
    r = CliRunner().invoke(cli, ["classify", str(d), "--json", "--output", str(out), "--audit-log", str(log),
                                 "--heatmap", str(maps)])
    assert r.exit_code == 3, r.output  # one refused
    written = r.output + out.read_text() + log.read_text()
    heatmaps = [p for p in maps.rglob("*") if p.is_file()]
    assert heatmaps  # the child's scan was screened (PNEUMONIA) and its heatmap written
    written += "".join(p.read_bytes().decode("latin-1") for p in heatmaps)
    assert "patient aged 45 years" in written
    for value in ("Doe", "Jane", PATIENT_ID, "19800101", "20250101", "Example"):
        assert value not in written, value


def test_cli_refusal_text_and_exit_code(tmp_path):
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled model")
    p = write_as(tmp_path / "lat.dcm", xray_like(), U.ExplicitVRLittleEndian, ViewPosition="LL")
    r = CliRunner().invoke(cli, ["classify", str(p), "--json"])
    assert r.exit_code == 3
    row = json.loads(next(line for line in r.output.splitlines() if line.startswith("{")))
    assert row["status"] == "rejected"
    assert row["error"] == "lateral view: screen a frontal (front-to-back) chest X-ray"


# -- files without preamble or file meta (ACR-NEMA style) ----------------------------------------------

@pytest.mark.parametrize("implicit", [True, False])
def test_a_bare_dataset_is_found_in_a_folder_and_screened(screener, tmp_path, implicit):
    d = tmp_path / "export"
    d.mkdir()
    ds = dataset(child_scan().astype(np.uint16) * 16, 12, Modality="CR", SpecificCharacterSet="ISO_IR 100")
    bare(d / "IMG0001", ds, implicit)
    rng = np.random.default_rng(0)
    (d / "random.bin").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (d / "zeros.bin").write_bytes(bytes(4096))
    (d / "notes.txt").write_text("film 1 of 2\n")
    no_pixels = Dataset()
    no_pixels.SpecificCharacterSet, no_pixels.Modality, no_pixels.PatientName = "ISO_IR 100", "CR", NAME
    bare(d / "header_only", no_pixels, implicit)  # a data set, but no image: not screened
    skipped = Skipped()
    assert [p.name for p in find_inputs(d, skipped)] == ["IMG0001"]
    assert skipped == {"not_image": 4}
    s = screener.classify(d / "IMG0001")
    assert s.status == "ok", s.error
    ds.save_as(tmp_path / "same.dcm", enforce_file_format=True)  # the same data set, with preamble and file meta
    ref = screener.classify(tmp_path / "same.dcm")
    assert s.pneumonia_probability == ref.pneumonia_probability


def test_a_bare_dataset_with_tags_is_refused_by_them(screener, tmp_path):
    ds = dataset(xray_like(), 8, BodyPartExamined="KNEE")
    s = screener.classify(bare(tmp_path / "knee", ds))
    assert (s.status, s.error) == ("rejected", "not a chest X-ray (body part: KNEE)")


def test_dataset_sniffing_takes_no_other_format_for_dicom(tmp_path):
    rng = np.random.default_rng(3)
    heads = [rng.integers(0, 256, 512, dtype=np.uint8).tobytes() for _ in range(2000)]
    heads += [bytes(512), b"\x89PNG\r\n\x1a\n" + bytes(504), b"\xff\xd8\xff\xe0" + bytes(508), b"II*\x00" + bytes(508),
              b"%PDF-1.7\n" + bytes(503), b"PK\x03\x04" + bytes(508)]
    assert not any(dicom.looks_like_dataset(h) for h in heads)
    # a group 0x0008 start alone is not enough: the elements must parse
    assert not dicom.looks_like_dataset(b"\x08\x00\x05\x00" + rng.integers(0, 256, 508, dtype=np.uint8).tobytes())
