"""Issue 12: each row of the adversarial trial, replayed. One clear line, the documented exit code, no
traceback, no hang, the rest of the batch screened, memory within the bound."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import edge_xray
from conftest import FULLRES, need_data, xray_like
from edge_xray.cli import cli
from edge_xray.runtime import DEFAULT_MODEL, MODELS_DIR

ROOT = Path(__file__).resolve().parents[1]
bundled = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no bundled model")
WARNING = "is not a verified edge-xray model"


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


def real_scan():
    need_data()
    return sorted((FULLRES / "PNEUMONIA").glob("*.jpeg"))[0]


@pytest.fixture(scope="module")
def screener():
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled model")
    return edge_xray.load_model()


# -- row 1: names that are not UTF-8 ---------------------------------------------------------------

@bundled
def test_non_utf8_file_name_survives_into_csv_jsonl_and_audit_log(tmp_path):
    d = tmp_path / "scans"
    d.mkdir()
    bad = Path(os.fsdecode(os.fsencode(str(d)) + b"/scan\xff.png"))
    save_scan(bad)
    save_scan(d / "z-second.png", seed=1)
    for out in ("r.csv", "r.jsonl"):
        r = run("classify", d, "--output", tmp_path / out, "--audit-log", tmp_path / "audit.log", "--json")
        assert_clean(r)
        assert r.exit_code in (0, 3)
        text = (tmp_path / out).read_bytes().decode("utf-8")  # valid UTF-8
        rows = list(csv.DictReader(text.splitlines())) if out.endswith(".csv") else [json.loads(x) for x in text.splitlines()]
        assert [Path(x["path"]).name for x in rows] == ["scan\\xff.png", "z-second.png"]  # the batch went on
        assert all(x["status"] in ("ok", "rejected") for x in rows)
        assert [json.loads(x)["path"] for x in r.stdout.splitlines()] == [x["path"] for x in rows]
    log = (tmp_path / "audit.log").read_text("utf-8").splitlines()
    assert len(log) == 4 and all("input_sha256" in json.loads(x) for x in log)
    assert run("audit", "verify", tmp_path / "audit.log").exit_code == 0


def test_escape_is_documented_backslash_form():
    from edge_xray.output import escape

    assert escape(os.fsdecode(b"a\xffb\xc3\xa9.png")) == "a\\xffb\u00e9.png"  # bad byte escaped, UTF-8 kept
    assert escape("plain.png") == "plain.png"


# -- rows 2 and 3: an audit log in a missing folder, a full disk -------------------------------------

@bundled
def test_audit_log_in_missing_folder_is_a_usage_error(tmp_path):
    scan = save_scan(tmp_path / "a.png")
    r = run("classify", scan, "--audit-log", tmp_path / "nowhere" / "audit.log")
    assert_clean(r)
    assert r.exit_code == 2
    assert r.stderr == f"Error: cannot write the audit log {tmp_path / 'nowhere' / 'audit.log'}: No such file or directory\n"


@bundled
def test_output_in_missing_folder_is_a_usage_error(tmp_path):
    r = run("classify", save_scan(tmp_path / "a.png"), "--output", tmp_path / "nowhere" / "r.csv")
    assert_clean(r)
    assert r.exit_code == 2 and r.stderr.startswith("Error: cannot write ") and len(r.stderr.splitlines()) == 1


@bundled
@pytest.mark.parametrize("option", ["--output", "--audit-log"])
def test_output_or_audit_log_that_is_a_pipe_or_device_is_refused_without_hanging(tmp_path, option):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    (tmp_path / "full.csv").symlink_to("/dev/full")
    for target in (fifo, tmp_path / "full.csv"):
        with deadline(30):
            r = run("classify", save_scan(tmp_path / "a.png"), option, target,
                    *(["--overwrite"] if option == "--output" else []))
        assert_clean(r)
        assert r.exit_code == 2 and r.stderr.rstrip().endswith(f"{target}: not a regular file")


def full_disk_after(n):
    calls = {"n": 0}

    def sync(self):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(self.fd)

    return sync


@bundled
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_full_disk_stops_with_one_line_and_keeps_every_written_row(tmp_path, monkeypatch, suffix):
    from edge_xray.output import RowWriter

    scans = [save_scan(tmp_path / f"s{i}.png", seed=i) for i in range(3)]
    out = tmp_path / f"r{suffix}"
    header = 1 if suffix == ".csv" else 0
    monkeypatch.setattr(RowWriter, "_sync", full_disk_after(header + 1))  # the header and one row fit
    r = run("classify", *scans, "--output", out)
    assert_clean(r)
    assert r.exit_code == 1
    last = r.stderr.splitlines()[-1]
    assert last == (f"Error: cannot write a row to {out} (No space left on device): stopped after 1 rows, all kept; "
                    "continue with --resume")
    lines = out.read_bytes().decode().splitlines()
    assert len(lines) == header + 1 and out.read_bytes().endswith(b"\n")  # no half row
    monkeypatch.undo()
    r = run("classify", *scans, "--output", out, "--resume")  # and the batch can be finished
    assert r.exit_code in (0, 3) and len(out.read_text().splitlines()) == header + 3


@bundled
def test_full_disk_on_the_audit_log(tmp_path, monkeypatch):
    from edge_xray.audit import AuditLog

    scans = [save_scan(tmp_path / f"s{i}.png", seed=i) for i in range(3)]
    log = tmp_path / "audit.log"
    monkeypatch.setattr(AuditLog, "_sync", full_disk_after(2))
    r = run("classify", *scans, "--audit-log", log)
    assert_clean(r)
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1].startswith(f"Error: cannot write the audit log {log} (No space left on device)")
    assert len(log.read_text().splitlines()) == 2
    assert run("audit", "verify", log).exit_code == 0


# -- rows 4 and 5: memory bounded -------------------------------------------------------------------

MEMORY_PROBE = r"""
import atexit, resource, sys

def report():  # VmHWM: this process's own peak RSS since exec (ru_maxrss would count the parent's at fork)
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
    r = resource.getrusage(resource.RUSAGE_SELF)
    print(f"PEAK {int(hwm) / 1024} {r.ru_utime + r.ru_stime}", flush=True)

atexit.register(report)
from edge_xray.cli import cli
cli(["classify", *sys.argv[1:], "--json"], prog_name="edge-xray")
"""


def peak_rss_mb_and_rows(paths, timeout=180):
    """Screen PATHS with the bundled model in a fresh process: (its own peak RSS in MB, CPU s, rows)."""
    p = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *map(str, paths)], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    rows = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    peak = [x.split() for x in p.stdout.splitlines() if x.startswith("PEAK ")][0]
    return float(peak[1]), float(peak[2]), rows


@pytest.mark.slow
@bundled
def test_16bit_png_of_zeros_at_the_pixel_limit_stays_in_bounds(tmp_path):
    p = tmp_path / "zeros16.png"
    Image.new("I;16", (9400, 9400)).save(p)
    mb, cpu, rows = peak_rss_mb_and_rows([p])
    assert rows[0]["status"] == "rejected" and rows[0]["error"] == "blank or nearly uniform image"
    assert mb <= 300, f"peak {mb:.0f} MB"
    assert cpu <= 6, f"{cpu:.1f} s CPU"  # the bound is 3 s on an idle machine; CI machines are shared


@pytest.mark.slow
@bundled
def test_huge_16bit_dicom_then_a_good_scan_is_screened_in_bounds(tmp_path):
    pytest.importorskip("pydicom")
    from test_field import write_dicom

    good = real_scan()
    side = 9400
    y = np.linspace(-1, 1, side, dtype=np.float32)
    pixels = (np.add.outer(y ** 2, y ** 2) * 1500 + 500).astype(np.uint16)
    big = write_dicom(tmp_path / "big.dcm", pixels)
    del pixels
    mb, cpu, rows = peak_rss_mb_and_rows([big, good])
    assert [r["status"] for r in rows][1] == "ok"  # the good scan after it is still screened
    assert rows[0]["status"] in ("ok", "rejected", "error") and rows[0]["input_sha256"]
    assert mb <= 300, f"peak {mb:.0f} MB"
    assert cpu <= 6, f"{cpu:.1f} s CPU"


def test_strip_decoder_is_exact_and_the_reduced_path_agrees(tmp_path, monkeypatch):
    """The strip decoder (what a large PNG goes through) gives exactly Pillow's whole decode, for 16-bit
    grey, 8-bit RGB and palette PNGs whose rows use every PNG filter; the reduced path prepares nearly
    the same model input."""
    from edge_xray import largeimage, preprocess

    rng = np.random.default_rng(0)
    g16 = (xray_like((700, 520)).astype(np.uint16) * 16 + rng.integers(0, 16, (520, 700))).astype(np.uint16)
    rgb = np.stack([xray_like((700, 520), s) for s in range(3)], -1)
    images = {"g16.png": Image.fromarray(g16), "rgb.png": Image.fromarray(rgb, "RGB"),
              "pal.png": Image.fromarray(rgb, "RGB").quantize(64)}
    for name, im in images.items():
        im.save(tmp_path / name)
        data = (tmp_path / name).read_bytes()
        strips = list(largeimage.png_strips(data, 50))
        assert len(strips) == 11
        whole = Image.open(tmp_path / name)
        got = np.concatenate([np.asarray(s) for s in strips])
        assert got.dtype == np.asarray(whole).dtype and np.array_equal(got, np.asarray(whole)), name
        full = preprocess.load_scan(tmp_path / name)
        monkeypatch.setattr(preprocess, "LARGE_PIXELS", 1000)  # take the large-image path
        monkeypatch.setattr(largeimage, "REDUCED_SIDE", 350)  # box factor 2
        reduced = preprocess.load_scan(tmp_path / name)
        monkeypatch.undo()
        assert reduced.image.size == (350, 260)
        assert np.abs(preprocess.prepare(reduced.image, 128) - preprocess.prepare(full.image, 128)).mean() < 0.02
        assert abs(reduced.chroma - full.chroma) < 1.0


def test_memory_error_for_one_input_becomes_its_error_row(screener, tmp_path, monkeypatch):
    from edge_xray import screen

    a, b = save_scan(tmp_path / "a.png"), save_scan(tmp_path / "b.png", seed=1)
    real = screen.load_scan

    def load(path, size=None):
        if Path(path).name == "a.png":
            raise MemoryError()
        return real(path, size)

    monkeypatch.setattr(screen, "load_scan", load)
    rows = list(screener.classify_many([a, b]))
    assert rows[0].status == "error" and rows[0].error == "not enough memory to decode this image on this device"
    assert rows[1].status in ("ok", "rejected") and rows[1].input_sha256


def test_image_too_large_to_decode_whole_is_refused_before_decoding(tmp_path):
    from edge_xray.errors import ImageError
    from edge_xray.preprocess import load_scan

    from edge_xray.largeimage import raw_view

    p = tmp_path / "raw16.tif"
    ramp = np.tile(np.arange(6000, dtype=np.uint16), (6000, 1))
    Image.fromarray(ramp).save(p)  # 72 MB uncompressed: viewed in place, not decoded
    assert raw_view(Image.open(p), p.read_bytes()) is not None
    scan = load_scan(p)
    assert scan.image.size == (2000, 2000) and np.asarray(scan.image)[0, ::400].tolist() == [0, 51, 102, 153, 204]
    p2 = tmp_path / "rgb.tif"
    Image.new("RGB", (9000, 9000)).save(p2, compression="tiff_deflate")  # 243 MB decoded: over the budget
    with pytest.raises(ImageError, match=r"^image too large to decode on this device \(9000x9000 RGB"):
        load_scan(p2)


# -- row 6: a pipe or a device as input -------------------------------------------------------------

@bundled
@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_pipe_or_device_is_refused_before_reading(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "pipe.png"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    good = save_scan(tmp_path / "good.png")
    with deadline(30):
        r = run("classify", path, good, "--audit-log", tmp_path / "audit.log", "--json")
    assert_clean(r)
    assert r.exit_code == 3
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert rows[0]["error"] == "not a regular file (a pipe, device or socket)" and rows[0]["input_sha256"] is None
    assert rows[1]["input_sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    audit = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    assert [a["input_sha256"] for a in audit] == [None, rows[1]["input_sha256"]]


@bundled
def test_fifo_inside_a_folder_is_skipped_and_counted(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "pipe.png")
    save_scan(d / "a.png")
    with deadline(30):
        r = run("classify", d, "--json")
    assert_clean(r)
    assert len(r.stdout.splitlines()) == 1
    assert r.stderr.splitlines()[-2] == "skipped 1 file: 1 not a regular file"


# -- row 7: trusted models --------------------------------------------------------------------------

def test_trust_list_matches_the_bundled_model_files():
    from edge_xray.trust import BUNDLED_SHA256, file_sha256

    shipped = {p.name: file_sha256(p) for p in sorted(MODELS_DIR.glob("*.tflite"))}
    assert shipped == BUNDLED_SHA256, ("edge_app/trust.py does not list the bundled models: put "
                                        f"{shipped} into BUNDLED_SHA256")


@pytest.fixture()
def foreign_model(tmp_path):
    """The bundled network with a card that is valid but not ours: checksums recomputed, as in the trial."""
    if not DEFAULT_MODEL.exists():
        pytest.skip("no bundled model")
    from edge_xray.card import ModelCard

    flatbuffer, card = ModelCard.read(DEFAULT_MODEL)
    ModelCard.write(tmp_path / "foreign.tflite", flatbuffer, dict(card.to_dict(), version="9.9-foreign"))
    return tmp_path / "foreign.tflite"


def test_foreign_model_with_a_copied_card_exits_4(foreign_model, tmp_path):
    scan = save_scan(tmp_path / "a.png")
    r = run("classify", scan, "--model", foreign_model)
    assert_clean(r)
    assert r.exit_code == 4
    assert r.stderr == ("Error: foreign.tflite is not a model shipped with edge-xray (sha256 not in the package's "
                        "list): give --allow-unverified-model to run it anyway\n")
    with pytest.raises(edge_xray.ModelError, match="is not a model shipped with edge-xray"):
        edge_xray.load_model(foreign_model)


def test_unverified_model_runs_only_when_allowed_and_is_marked(foreign_model, tmp_path):
    scan = save_scan(tmp_path / "a.png")
    log = tmp_path / "audit.log"
    r = run("classify", scan, "--model", foreign_model, "--allow-unverified-model", "--json", "--audit-log", log,
            "--output", tmp_path / "r.csv")
    assert_clean(r)
    assert r.exit_code in (0, 3)
    assert r.stderr.splitlines()[0] == ("warning: foreign.tflite is not a verified edge-xray model; its results are "
                                        "marked model_verified: false")
    assert json.loads(r.stdout.splitlines()[0])["model_verified"] is False
    assert json.loads(log.read_text().splitlines()[0])["model_verified"] is False
    assert list(csv.DictReader((tmp_path / "r.csv").open()))[0]["model_verified"] == "False"
    env = run("classify", scan, "--model", foreign_model, env={"EDGE_XRAY_ALLOW_UNVERIFIED_MODEL": "1"})
    assert env.exit_code in (0, 3) and WARNING in env.stderr  # the site setting
    api = edge_xray.load_model(foreign_model, allow_unverified=True)
    assert api.classify(scan).model_verified is False


def test_site_commands_and_info_know_an_unverified_model(foreign_model, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    save_scan(d / "a.png")
    r = run("site", "check", d, "--model", foreign_model)
    assert r.exit_code == 4 and "is not a model shipped with edge-xray" in r.stderr
    assert json.loads(run("info", "--model", foreign_model, "--json").stdout)["model_verified"] is False
    assert json.loads(run("info", "--json").stdout)["model_verified"] is True


@bundled
def test_bundled_model_and_a_byte_identical_copy_are_verified(tmp_path):
    import shutil

    assert edge_xray.load_model().classify(save_scan(tmp_path / "a.png")).model_verified is True
    shutil.copy(DEFAULT_MODEL, tmp_path / "copy.tflite")
    assert edge_xray.load_model(tmp_path / "copy.tflite").model_verified is True


# -- row 8: 16-bit data without a display window ----------------------------------------------------

def test_12bit_scan_with_one_hot_pixel_is_not_blank(tmp_path):
    from edge_xray.gate import image_reason
    from edge_xray.preprocess import load_image, prepare

    g8 = xray_like()
    g16 = g8.astype(np.uint16) * 16
    g16[5, 5] = 65535  # one hot pixel
    Image.fromarray(g16).save(tmp_path / "a16.png")
    im = load_image(tmp_path / "a16.png")
    assert image_reason(im) is None
    a, b = prepare(im, 128), prepare(Image.fromarray(g8), 128)
    assert np.abs(a - b).mean() < 0.01  # prepared input within 1 %


def test_12bit_dicom_without_window_with_one_hot_pixel_is_not_blank(tmp_path):
    pytest.importorskip("pydicom")
    from test_field import write_dicom

    from edge_xray.gate import image_reason
    from edge_xray.preprocess import load_image, prepare

    g8 = xray_like()
    g16 = g8.astype(np.uint16) * 16
    g16[5, 5] = 65535
    im = load_image(write_dicom(tmp_path / "a.dcm", g16))
    assert image_reason(im) is None
    assert np.abs(prepare(im, 128) - prepare(Image.fromarray(g8), 128)).mean() < 0.01


def test_robust_window_ignores_far_outliers_only():
    from edge_xray.levels import robust_window

    a = np.tile(np.arange(4096, dtype=np.uint16), (64, 1))
    assert robust_window(a) == (0.0, 4095.0)  # nothing far away: the full range
    a[0, 0] = 65535
    lo, hi = robust_window(a)
    assert lo == 0.0 and 4095 < hi < 8000


# -- row 9: an output file that exists --------------------------------------------------------------

@bundled
def test_existing_output_is_refused_unless_resume_or_overwrite(tmp_path):
    scans = [save_scan(tmp_path / f"s{i}.png", seed=i) for i in range(3)]
    out = tmp_path / "r.csv"
    out.write_text("precious\n")
    r = run("classify", scans[0], "--output", out)
    assert_clean(r)
    assert r.exit_code == 2
    assert r.stderr == f"Error: {out} exists: give --resume to continue it or --overwrite to replace it\n"
    assert out.read_text() == "precious\n"
    r = run("classify", scans[0], "--output", out, "--overwrite")
    assert r.exit_code in (0, 3) and len(out.read_text().splitlines()) == 2
    r = run("classify", *scans, "--output", out, "--resume")
    assert r.exit_code in (0, 3)
    assert "resumed: 1 inputs already in" in r.stderr
    assert [row["path"] for row in csv.DictReader(out.open())] == [str(s) for s in scans]


@bundled
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_after_a_power_cut_drops_the_half_written_row(tmp_path, suffix):
    scans = [save_scan(tmp_path / f"s{i}.png", seed=i) for i in range(3)]
    out = tmp_path / f"r{suffix}"
    assert run("classify", *scans[:2], "--output", out).exit_code in (0, 3)
    data = out.read_bytes()
    cut = data[: data.rfind(b"\n", 0, len(data) - 1) + 1] + data[data.rfind(b"\n", 0, len(data) - 1) + 1:][:20]
    out.write_bytes(cut)  # the second row half written
    r = run("classify", *scans, "--output", out, "--resume", "--json")
    assert_clean(r)
    assert [json.loads(x)["path"] for x in r.stdout.splitlines()] == [str(scans[1]), str(scans[2])]
    text = out.read_text()
    rows = list(csv.DictReader(text.splitlines())) if suffix == ".csv" else [json.loads(x) for x in text.splitlines()]
    assert [row["path"] for row in rows] == [str(s) for s in scans]


@bundled
def test_an_input_that_is_also_the_output_is_refused(tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("x\n")
    r = run("classify", out, "--output", out, "--overwrite")
    assert_clean(r)
    assert r.exit_code == 2 and f"{out} is an input and also the file to write" in r.stderr
    assert out.read_text() == "x\n"


# -- row 10: what clinics export --------------------------------------------------------------------

def write_gif_webp_and_dicom(d: Path):
    from test_field import write_dicom

    g = xray_like()
    Image.fromarray(g).save(d / "a.gif")
    Image.fromarray(g).save(d / "b.webp", lossless=True)
    write_dicom(d / "IM000001", g.astype(np.uint16) * 16)  # no suffix: found by its DICM preamble


@bundled
def test_folder_is_scanned_by_content_with_a_skip_summary(tmp_path):
    pytest.importorskip("pydicom")
    d = tmp_path / "export"
    (d / "sub").mkdir(parents=True)
    write_gif_webp_and_dicom(d)
    (d / "README.txt").write_text("not an image")
    (d / "sub" / "loop").symlink_to(d, target_is_directory=True)  # a symlink loop
    other = tmp_path / "elsewhere"
    other.mkdir()
    save_scan(other / "linked.png")
    (d / "linked").symlink_to(other, target_is_directory=True)  # a symlinked folder: followed once
    r = run("classify", d, "--json")
    assert_clean(r)
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [Path(x["path"]).name for x in rows] == ["IM000001", "a.gif", "b.webp", "linked.png"]
    assert all(x["status"] in ("ok", "rejected") for x in rows), rows
    assert r.stderr.splitlines()[-2] == "skipped 2 files: 1 symlink loop, 1 not an image"


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


# -- row 11: colour ---------------------------------------------------------------------------------

def test_tinted_image_as_png_and_rgb_dicom_gets_the_same_decision(screener, tmp_path):
    pytest.importorskip("pydicom")

    g = xray_like().astype(np.float32)
    rgb = np.clip(np.stack([g * 1.0, g * 0.8, g * 0.55], -1), 0, 255).astype(np.uint8)  # sepia-tinted
    Image.fromarray(rgb, "RGB").save(tmp_path / "t.png")
    p = dicom_file(tmp_path / "t.dcm", rgb)
    a, b = screener.classify(tmp_path / "t.png"), screener.classify(p)
    assert a.status == b.status == "rejected" and a.error == b.error == "colour image: not a radiograph (X-rays are grey)"


# -- row 12: multi-page and multi-frame files -------------------------------------------------------

def test_multipage_tiff_with_a_black_first_page_says_so(screener, tmp_path):
    pages = [Image.new("L", (400, 360)), Image.fromarray(xray_like()), Image.fromarray(xray_like(seed=1))]
    pages[0].save(tmp_path / "m.tif", save_all=True, append_images=pages[1:])
    s = screener.classify(tmp_path / "m.tif")
    assert s.status == "rejected" and s.error == "blank or nearly uniform image"
    assert s.note == "first of 3 pages screened"
    from edge_xray.output import human_line

    assert human_line(s).endswith("(first of 3 pages screened)")


def test_multiframe_dicom_screens_the_first_frame_and_says_so(screener, tmp_path):
    pytest.importorskip("pydicom")
    g = xray_like().astype(np.uint16) * 16
    dicom_file(tmp_path / "f.dcm", g, frames=3)
    s = screener.classify(tmp_path / "f.dcm")
    assert s.note == "first of 3 frames screened" and s.input_sha256


# -- row 13: heatmap folder not writable ------------------------------------------------------------

@bundled
def test_heatmap_folder_not_writable_is_reported_and_the_result_stands(tmp_path):
    scan = real_scan()
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should go")
    r = run("classify", scan, "--heatmap", blocker / "maps")
    assert_clean(r)
    assert r.exit_code == 0  # documented: heatmap failures do not change the exit code
    assert r.stdout.startswith(f"{scan}: ")
    err = r.stderr.splitlines()
    assert err[0].startswith(f"{scan}: heatmap not written - cannot write heatmap (")
    assert err[-2] == "heatmaps: 1 not written (the results stand)"


# -- row 14: --output x.json ------------------------------------------------------------------------

@bundled
def test_output_json_suffix_is_refused(tmp_path):
    r = run("classify", save_scan(tmp_path / "a.png"), "--output", tmp_path / "x.json")
    assert_clean(r)
    assert r.exit_code == 2 and r.stderr == "Error: --output must end in .csv or .jsonl (got x.json)\n"
    assert not (tmp_path / "x.json").exists()


# -- the tamper-evident audit log -------------------------------------------------------------------

class FakeModel:
    sha256 = "0" * 64
    card = {"version": "test"}


def write_entries(path, n, tag):
    from edge_xray.audit import AuditLog
    from edge_xray.screen import Screening

    log = AuditLog(path, FakeModel())
    for i in range(n):
        log.write(Screening(path=f"{tag}{i}", status="error", error=f"{tag} {i}"))
    log.close()


def test_audit_chain_verifies_and_names_the_first_broken_line(tmp_path):
    from edge_xray.audit import GENESIS, line_sha256

    log = tmp_path / "audit.log"
    write_entries(log, 4, "a")
    lines = log.read_bytes().splitlines()
    assert json.loads(lines[0])["prev_sha256"] == GENESIS == hashlib.sha256(b"").hexdigest()
    assert json.loads(lines[2])["prev_sha256"] == line_sha256(lines[1])
    r = run("audit", "verify", log)
    assert r.exit_code == 0 and r.stdout.startswith(f"{log}: OK, 4 entries, chain intact; last entry sha256 ")
    changed = lines[:]
    changed[1] = changed[1].replace(b'"error"', b'"ok"', 1)
    log.write_bytes(b"\n".join(changed) + b"\n")
    r = run("audit", "verify", log)
    assert r.exit_code == 3
    assert r.stderr == (f"Error: {log}: line 3 is broken: its prev_sha256 does not match line 2 "
                        "(a line was changed, inserted or removed)\n")
    log.write_bytes(b"\n".join(lines[:1] + lines[2:]) + b"\n")  # a line removed
    assert run("audit", "verify", log).exit_code == 3


def test_two_processes_appending_to_one_log_keep_the_chain(tmp_path):
    log = tmp_path / "audit.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=write_entries, args=(log, 40, tag)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    from edge_xray.audit import verify

    assert verify(log)["entries"] == 80


# -- more of the same: corrupt inputs on the new paths refuse cleanly -------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["png16", "rgb_png", "dicom", "raw_tiff"])
def test_mutated_files_on_the_large_and_dicom_paths_refuse_cleanly(tmp_path, monkeypatch, kind):
    """Random byte flips and cuts in files that take the strip, in-place and DICOM paths: a Scan or an
    ImageError, nothing else."""
    from edge_xray import preprocess
    from edge_xray.errors import ImageError

    g = xray_like((300, 260))
    p = tmp_path / "base"
    if kind == "png16":
        Image.fromarray(g.astype(np.uint16) * 200).save(p, format="PNG")
    elif kind == "rgb_png":
        Image.fromarray(np.stack([g, g, g], -1), "RGB").save(p, format="PNG")
    elif kind == "raw_tiff":
        Image.fromarray(g.astype(np.uint16) * 200).save(p, format="TIFF")
    else:
        pytest.importorskip("pydicom")
        dicom_file(p, g.astype(np.uint16) * 16, frames=2)
    base = p.read_bytes()
    monkeypatch.setattr(preprocess, "LARGE_PIXELS", 1000)  # every image takes the large-image path
    rng = np.random.default_rng(1)
    suffix = ".dcm" if kind == "dicom" else ".img"
    for i in range(60):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        if i % 4 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        q = tmp_path / f"m{i}{suffix}"
        q.write_bytes(bytes(data))
        try:
            preprocess.load_scan(q, 128)
        except ImageError as e:
            assert "\n" not in str(e)
