"""`edge-xray serve`: the endpoints with Flask's test client, and the page in a real headless browser.

The browser tests need Debian's `chromium` and `chromium-driver` (installed by .ci/run); they are
skipped when they are absent, except under CI (CI=true) where that is a failure. With
EDGE_XRAY_SCREENSHOT=FILE the batch test also saves the screenshot of the page that docs/screen.md
describes.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import FULLRES, need_data

flask = pytest.importorskip("flask", reason="the serve command needs the edge extra (flask, waitress)")

from edge_xray import load_model  # noqa: E402
from edge_xray.cli import cli  # noqa: E402
from edge_xray.decision import ANSWER_WORDS, NOT_SCREENED  # noqa: E402
from edge_xray.screen import FIELDS  # noqa: E402
from edge_xray.serve import (  # noqa: E402
    ACCESS_COOKIE,
    ACCESS_HEADER,
    CODE_DIGITS,
    MAX_WRONG_CODES,
    access_code,
    create_app,
    upload_name,
)
from edge_xray.slip import SLIP_SIZE  # noqa: E402
from edge_xray.web_access import safe_next  # noqa: E402

BACTERIAL = "PNEUMONIA/person1077_bacteria_3017.jpeg"  # a full-resolution scan the bundled model refers today
NORMAL = "NORMAL/IM-0129-0001.jpeg"
FR = {"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}


@pytest.fixture(scope="module")
def screener():
    return load_model()


@pytest.fixture()
def scan():
    need_data()
    return FULLRES / BACTERIAL


@pytest.fixture()
def made(screener, tmp_path):
    """A factory of apps on the bundled model (the worklist in tmp_path/data unless given), each
    closed (its upload folder removed) at the end."""
    apps = []

    def make(**kw):
        kw.setdefault("data_dir", tmp_path / "data")
        app = create_app(screener, **kw)
        app.testing = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["edge_xray"].close()
        assert not app.extensions["edge_xray"].root.exists()


def post_file(client, url, path: Path, name: str | None = None, data=None, **kw):
    with open(path, "rb") as f:
        return client.post(url, data={"file": (io.BytesIO(f.read()), name or path.name), **(data or {})},
                           content_type="multipart/form-data", **kw)


def cli_rows(*paths, lang=None) -> list[dict]:
    """`edge-xray classify PATHS --json`, one row per input."""
    r = CliRunner().invoke(cli, ["classify", *map(str, paths), "--json", *(["--lang", lang] if lang else [])])
    assert r.exit_code in (0, 3), r.output
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def bad_files(d: Path) -> list[Path]:
    """Files the command line refuses, each for a different reason."""
    d.mkdir(exist_ok=True)
    (d / "notes.png").write_text("not an image\n")
    (d / "empty.jpeg").write_bytes(b"")
    (d / "garbage.dcm").write_bytes(os.urandom(600))
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(d / "tiny.png")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8)).save(buf, "JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[:400])
    rgb = np.zeros((300, 300, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 220, np.linspace(0, 255, 300)[None, :]
    Image.fromarray(rgb).save(d / "photo.png")  # readable, but a colour picture: rejected
    return sorted(d.iterdir())


def text_of(page) -> str:
    return html.unescape(page.get_data(as_text=True))


# --- the JSON API -------------------------------------------------------------------------------
def test_health_names_the_model(made, screener):
    r = made().test_client().get("/api/health")
    assert r.status_code == 200
    body = r.get_json()
    assert body["model"] == {"name": screener.card.name, "version": screener.card.version,
                             "sha256": screener.model.sha256}
    assert body["site_sha256"] is None and body["threshold"] == screener.threshold


def test_site_shows_in_health_rows_and_footer(screener, scan, tmp_path):
    from edge_xray.screen import Screener
    from edge_xray.site import Site

    site = Site("site.json", 0.3, "ab" * 32, {})
    app = create_app(Screener(screener.model, site=site), data_dir=tmp_path)
    try:
        client = app.test_client()
        assert client.get("/api/health").get_json()["site_sha256"] == "ab" * 32
        row = post_file(client, "/api/classify", scan).get_json()
        assert row["site_sha256"] == "ab" * 32 and row["threshold"] == 0.3
        assert "site abababababab" in client.get("/").get_data(as_text=True)
    finally:
        app.extensions["edge_xray"].close()


def test_api_classify_gives_the_cli_row(made, scan, tmp_path):
    audit = tmp_path / "audit.jsonl"
    r = post_file(made(audit_log=audit).test_client(), "/api/classify", scan)
    assert r.status_code == 200 and r.mimetype == "application/json"
    row = json.loads(r.data)
    (expected,) = cli_rows(scan)
    assert list(row) == list(expected) == list(FIELDS)  # the same fields, in the same order
    assert row["path"] == scan.name
    assert {**row, "path": None} == {**expected, "path": None}
    assert row["status"] == "ok" and row["label"] == "PNEUMONIA" and row["urgency"] == "today"
    entries = [json.loads(x) for x in audit.read_text().splitlines()]
    assert len(entries) == 1 and entries[0]["input_sha256"] == row["input_sha256"]


def test_api_refuses_bad_files_with_the_cli_reasons(made, tmp_path):
    files = bad_files(tmp_path / "bad")
    expected = {Path(r["path"]).name: r for r in cli_rows(*files)}
    client = made().test_client()
    for f in files:
        row = post_file(client, "/api/classify", f).get_json()
        want = expected[f.name]
        assert row["status"] == want["status"] != "ok", f.name
        assert row["error"] == want["error"] and row["advice"] == want["advice"], f.name
        assert {**row, "path": None} == {**want, "path": None}, f.name
        assert row["urgency"] is None
    statuses = {r["status"] for r in expected.values()}
    assert statuses == {"error", "rejected"}


def test_api_advice_follows_the_language_as_the_cli_does(made, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    (cli_fr,) = cli_rows(bad, lang="fr")
    row = post_file(made().test_client(), "/api/classify", bad, headers=FR).get_json()
    assert list(row) == list(FIELDS)  # the field names stay
    assert row["advice"] == cli_fr["advice"] == "Non analysé : pas un fichier image (format inconnu ou corrompu)"
    assert row["error"] == "not an image file (unknown or corrupt format)"  # the machine's reason stays English


@pytest.mark.slow  # pydicom's import and a full-resolution DICOM: about 2 s
def test_dicom_upload_is_screened_as_on_the_command_line(made, scan, tmp_path):
    pytest.importorskip("pydicom")
    from test_field import write_dicom

    pixels = np.asarray(Image.open(scan).convert("L"), np.uint16) * 16
    dcm = write_dicom(tmp_path / "scan.dcm", pixels)
    (expected,) = cli_rows(dcm)
    client = made().test_client()
    row = post_file(client, "/api/classify", dcm).get_json()
    assert expected["status"] == "ok" and {**row, "path": None} == {**expected, "path": None}
    page = text_of(screen_on_page(client, [dcm]))
    assert ANSWER_WORDS[expected["urgency"]] in page and "/result/2/thumbnail.png" in page
    assert "Test^Child" not in page and "ID-0001" not in page  # no DICOM tags shown


def test_api_needs_one_file(made):
    client = made().test_client()
    r = client.post("/api/classify", data={})
    assert r.status_code == 400 and r.get_json() == {"error": "send one scan in the multipart field 'file'"}
    two = {"file": [(io.BytesIO(b"a"), "a.png"), (io.BytesIO(b"b"), "b.png")]}
    r = client.post("/api/classify", data=two, content_type="multipart/form-data")
    assert r.status_code == 400 and r.get_json() == {"error": "one scan per request"}


def test_uploads_too_large_or_too_many_get_the_page_or_json(made, tmp_path):
    client = made(max_upload_mb=1, max_files=2).test_client()
    big = {"file": (io.BytesIO(os.urandom(1024 * 1024 + 10)), "big.png")}
    r = client.post("/api/classify", data=big, content_type="multipart/form-data")
    assert r.status_code == 413 and r.mimetype == "application/json"
    assert r.get_json() == {"error": "Upload too large: at most 1 MB and 2 files at once. Choose fewer or smaller files."}
    big = {"file": (io.BytesIO(os.urandom(1024 * 1024 + 10)), "big.png")}
    r = client.post("/screen", data=big, content_type="multipart/form-data", headers=FR)
    page = text_of(r)
    assert r.status_code == 413 and r.mimetype == "text/html"
    assert "Envoi trop volumineux : 1 Mo et 2 fichiers au plus" in page  # the page's own message
    assert 'id="upload"' in page and 'class="message" role="alert"' in page  # the page itself: a way on
    three = {"file": [(io.BytesIO(b"x"), f"{i}.png") for i in range(3)]}
    r = client.post("/screen", data=three, content_type="multipart/form-data")
    assert r.status_code == 413 and "Too many files: at most 2 at once." in text_of(r)


def test_uploaded_names_are_never_paths(made, scan, tmp_path):
    app = made()
    root = app.extensions["edge_xray"].root
    row = post_file(app.test_client(), "/api/classify", scan, name="../../evil/\x07=scan.jpeg").get_json()
    assert row["path"] == "scan.jpeg" and row["status"] == "ok"
    assert list(root.iterdir()) == []  # the request's folder is gone
    assert upload_name("C:\\scans\\a.png") == "a.png" and upload_name("") == "upload"
    assert upload_name("=HYPERLINK(1).png") == "HYPERLINK(1).png"


def test_stale_uploads_are_removed_at_start(made, tmp_path):
    uploads = tmp_path / "data" / "uploads"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = uploads / f"{dead.pid}-abcd1234" / "tmpx"  # a server killed mid-request (kill -9, power cut)
    stale.mkdir(parents=True)
    (stale / "upload-1.jpeg").write_bytes(b"scan")
    alive = uploads / f"{os.getppid()}-live0000"  # a server that is still running
    alive.mkdir()
    app = made()
    assert not stale.parent.exists() and alive.is_dir()
    assert app.extensions["edge_xray"].stale_uploads == 1
    assert app.extensions["edge_xray"].root.parent == uploads


# --- the worklist through the API -------------------------------------------------------------------
def test_results_survive_a_restart_and_are_found_by_visit_number(made, scan, tmp_path):
    a = made()
    client = a.test_client()
    for visit in ("A-1", "B-2", None):
        r = post_file(client, "/api/classify", scan, data={"visit_id": visit} if visit else {})
        assert r.status_code == 200
    a.extensions["edge_xray"].close()  # the server stops (its worklist closed)
    client = made().test_client()  # and starts again on the same data folder
    rows = client.get("/api/results").get_json()
    assert [r["visit_id"] for r in rows] == [None, "B-2", "A-1"]  # newest first
    assert all(list(r)[:len(FIELDS)] == list(FIELDS) and list(r)[len(FIELDS):] == ["visit_id", "screened_at"]
               for r in rows)
    assert rows[0]["urgency"] == "today" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d",
                                                           rows[0]["screened_at"])
    assert [r["visit_id"] for r in client.get("/api/results?visit_id=b-2").get_json()] == ["B-2"]
    assert len(client.get("/api/results?limit=2").get_json()) == 2
    assert client.get("/api/results?since=2999-01-01").get_json() == []
    assert len(client.get("/api/results?since=2000-01-01T00:00:00Z").get_json()) == 3
    page = text_of(client.get("/?visit=A-1"))
    assert "A-1" in page and "B-2" not in page


@pytest.mark.parametrize("query, status", [
    ("limit=0", 400), ("limit=abc", 400), ("limit=²", 400), ("limit=201", 400), ("since=yesterday", 400),
    ("since=2026-02-30", 400), ("visit_id=%3Dcmd()", 400), ("visit_id=" + "9" * 40, 400), ("limit=5", 200),
])
def test_api_results_checks_its_query(made, query, status):
    r = made().test_client().get(f"/api/results?{query}")
    assert r.status_code == status and r.mimetype == "application/json"
    if status == 400:
        assert r.get_json()["error"].startswith("Not understood: ")


def test_visit_number_is_checked(made, scan):
    client = made().test_client()
    r = post_file(client, "/api/classify", scan, data={"visit_id": "John Smith, 12 Main St"})
    assert r.status_code == 400 and "visit number" in r.get_json()["error"]
    r = post_file(client, "/screen", scan, data={"visit_id": "=HYPERLINK()"}, headers=FR)
    assert r.status_code == 400 and "numéro de visite : 32 lettres" in text_of(r)
    assert client.get("/api/results").get_json() == []  # nothing screened or stored


# --- access -------------------------------------------------------------------------------------
def test_access_code_policy():
    assert access_code("127.0.0.1") is None and access_code("localhost") is None and access_code("::1") is None
    code = access_code("0.0.0.0")
    assert code.isdigit() and len(code) == CODE_DIGITS
    assert access_code("192.168.1.20", "4711x") == "4711x"
    from edge_xray.errors import UsageError

    with pytest.raises(UsageError):
        access_code("0.0.0.0", "12")


def test_cli_refuses_a_bad_pin_before_serving(tmp_path):
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--pin", "12"])
    assert r.exit_code == 2 and "--pin" in r.output
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"], env={"EDGE_XRAY_PIN": "1 2"})
    assert r.exit_code == 2 and "--pin" in r.output  # the environment's code is checked too
    short = tmp_path / "code.txt"
    short.write_text("12\n")
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--pin-file", str(short)])
    assert r.exit_code == 2 and "access code file" in r.output
    r = CliRunner().invoke(cli, ["serve", "--pin-file", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "cannot read the access code file" in r.output


def test_missing_or_wrong_access_code_is_refused(made):
    client = made(pin=access_code("0.0.0.0")).test_client()
    code = client.application.extensions["edge_xray"].pin
    r = client.get("/api/health")
    assert r.status_code == 401 and ACCESS_HEADER in r.get_json()["error"]
    assert client.get("/api/health", headers={ACCESS_HEADER: "00000000x"}).status_code == 403
    assert client.get("/api/health", headers={ACCESS_HEADER: code}).status_code == 200
    for path in ("/", "/static/app.css", "/results.csv", "/result/1/slip", "/api/results"):  # every request
        assert client.get(path).status_code == 401, path
    page = client.get("/")
    assert b'name="code"' in page.data  # the code form
    assert client.post("/login", data={"code": "nope"}).status_code == 403
    r = client.post("/login", data={"code": code, "next": "/"})
    assert r.status_code == 303 and ACCESS_COOKIE in r.headers["Set-Cookie"]
    assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
    assert client.get("/").status_code == 200  # the cookie is enough now


def test_code_form_returns_only_to_this_server(made):
    for target in ("/%09/evil.example", "/\t/evil.example", "//evil.example", "/\\evil.example", "http://evil.example",
                   "/\n/evil.example", "/\u3000/evil.example", "javascript:alert(1)", ""):
        assert safe_next(target) == "/", repr(target)
    assert safe_next("/?show=1,2") == "/?show=1,2" and safe_next("/result/3/slip") == "/result/3/slip"
    client = made(pin="24681357").test_client()
    page = client.get("/login?next=/%09/host")
    assert page.status_code == 200 and 'name="next" value="/"' in page.get_data(as_text=True)
    r = client.post("/login", data={"code": "24681357", "next": "/\t/evil.example"})
    assert r.status_code == 303 and r.headers["Location"] == "/"
    r = client.post("/login", data={"code": "24681357", "next": "/?show=1"})
    assert r.status_code == 303 and r.headers["Location"] == "/?show=1"


def test_repeated_wrong_codes_lock_out(made):
    client = made(pin="24681357").test_client()
    for _ in range(MAX_WRONG_CODES):
        assert client.get("/api/health", headers={ACCESS_HEADER: "1111"}).status_code == 403
    assert client.get("/api/health", headers={ACCESS_HEADER: "24681357"}).status_code == 429


def test_without_a_code_only_this_device_is_answered(made):
    client = made().test_client()
    assert client.get("/api/health", headers={"Host": "localhost:8080"}).status_code == 200
    assert client.get("/api/health", headers={"Host": "[::1]:8080"}).status_code == 200
    assert client.get("/api/health", headers={"Host": "127.0.0.1"}).status_code == 200
    r = client.get("/api/health", headers={"Host": "attacker.example:8080"})
    assert r.status_code == 403 and "this device" in r.get_json()["error"]
    # a form on another web site, posting to this server through the device's browser
    assert client.post("/clear", headers={"Origin": "http://attacker.example"}).status_code == 403
    assert client.post("/clear", headers={"Origin": "http://localhost"}).status_code == 303


# --- the page, the list, the slip ------------------------------------------------------------------
def screen_on_page(client, files, visit=None, headers=None):
    data = {"file": [(io.BytesIO(Path(f).read_bytes()), Path(f).name) for f in files]}
    if visit:
        data["visit_id"] = visit
    r = client.post("/screen", data=data, content_type="multipart/form-data", headers=headers or {})
    assert r.status_code == 303
    return client.get(r.headers["Location"], headers=headers or {})


def test_page_shows_the_batch_most_urgent_first_in_plain_words(made, screener, tmp_path):
    need_data()
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    files = [bad, FULLRES / NORMAL, FULLRES / BACTERIAL]
    app = made(audit_log=tmp_path / "audit.jsonl")
    page = text_of(screen_on_page(app.test_client(), files, visit="V-77"))
    expected = [screener.classify(f) for f in files]
    words = re.findall(r'<p class="answer">([^<]*)</p>', page)
    assert words == ["REFER TODAY", "No pneumonia found", NOT_SCREENED]  # most urgent first
    assert [s.urgency for s in expected] == [None, "none", "today"]
    assert re.findall(r'<li>([^<]*)</li>', page) == ["1 of 3: refer today", "1 of 3: no pneumonia found",
                                                     "1 of 3: not screened"]
    p = expected[2].pneumonia_probability
    assert f"very likely pneumonia ({'> 99' if p > 0.99 else round(100 * p)}\u00a0%)" in page
    assert "Not screened: this file could not be read as an image" in page
    assert "What to do:</strong> export the X-ray again as PNG, JPEG or DICOM" in page
    assert '<details class="technical">' in page and "not an image file (unknown or corrupt format)" in page
    assert "ERROR -" not in page and "REJECTED -" not in page and "p(pneumonia)" not in page
    assert page.count("Visit V-77") == 3 and page.count('class="slip-link"') == 2  # no slip when not screened
    assert f"version {screener.card.version}" in page and screener.model.sha256[:12] in page  # the footer
    assert "/result/3/heatmap.jpg" in page and "Show heatmap" in page
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 3  # every screening is audited
    assert list(app.extensions["edge_xray"].root.iterdir()) == []
    client = app.test_client()
    thumb = Image.open(io.BytesIO(client.get("/result/3/thumbnail.png").data))
    assert max(thumb.size) <= 320 and thumb.mode == "L"
    heat = client.get("/result/3/heatmap.jpg")
    assert heat.status_code == 200 and heat.data.startswith(b"\xff\xd8\xff")
    assert client.get("/result/1/thumbnail.png").status_code == 404  # nothing decoded
    assert client.get("/result/1/slip").status_code == 404 and client.get("/result/1/slip.png").status_code == 404
    assert "default-src 'none'" in client.get("/").headers["Content-Security-Policy"]


def test_page_follows_accept_language_the_switch_and_lang(made, scan):
    client = made().test_client()
    page = text_of(screen_on_page(client, [scan], headers=FR))
    assert '<html lang="fr">' in page and "RÉFÉRER AUJOURD'HUI" in page and "Dépistage de la pneumonie" in page
    assert "RÉFÉRER AUJOURD'HUI : signes de pneumonie, probablement bactérienne" in page
    pt = client.get("/?lang=pt", headers=FR)  # the switch: ?lang= wins, and is remembered
    assert '<html lang="pt">' in text_of(pt) and "edge_xray_lang=pt" in pt.headers["Set-Cookie"]
    assert '<html lang="pt">' in text_of(client.get("/", headers=FR))
    assert 'href="/?show=1&amp;lang=es"' in client.get("/?show=1").get_data(as_text=True)  # the switch keeps the page
    assert '<html lang="es">' in text_of(client.get("/?show=1&lang=es"))
    client.get("/?lang=en")
    assert '<html lang="en">' in text_of(client.get("/", headers=FR))
    fresh = made().test_client()
    assert '<html lang="en">' in text_of(fresh.get("/?lang=xx", headers={"Accept-Language": "de, sw;q=0.5"}))
    assert '<html lang="es">' in text_of(fresh.get("/", headers={"Accept-Language": "de, es-MX;q=0.8, fr;q=0.5"}))


@pytest.mark.parametrize("query", ["show=²", "show=1,,2", "show=-1", "show=1e3", "from=2026-13-01", "to=02/03/2026",
                                   "from=2026-03-02&to=2026-03-01", "visit=%00", "from=２０２６-01-01"])
def test_malformed_query_values_are_400_never_500(made, query):
    client = made().test_client()
    r = client.get(f"/?{query}")
    assert r.status_code == 400 and r.mimetype == "text/html" and "Not understood" in text_of(r)
    if query.startswith(("from", "to", "visit")):
        assert client.get(f"/results.csv?{query}").status_code == 400


def test_local_time_with_its_offset(made, scan, monkeypatch):
    monkeypatch.setenv("TZ", "Africa/Maputo")  # UTC+02:00, no summer time
    time.tzset()
    try:
        client = made().test_client()
        page = text_of(screen_on_page(client, [scan]))
        assert "(UTC+02:00)" in page and "(UTC)" not in page
        slip = text_of(client.get("/result/1/slip"))
        date = re.search(r'<dd class="date">([^<]*)</dd>', slip).group(1)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d \(UTC\+02:00\)", date)
        row = client.get("/api/results").get_json()[0]
        assert row["screened_at"].endswith("+02:00")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_normal_results_without_a_heatmap(made, monkeypatch):
    """The heatmap module may draw overlays for PNEUMONIA results only: then NORMAL results have none."""
    need_data()
    import edge_xray.heatmap

    real = edge_xray.heatmap.draw_overlay

    def pneumonia_only(card, im, features, result, *a, **kw):
        return None if result["label"] == "NORMAL" else real(card, im, features, result, *a, **kw)

    monkeypatch.setattr(edge_xray.heatmap, "draw_overlay", pneumonia_only)
    client = made().test_client()
    page = text_of(screen_on_page(client, [FULLRES / NORMAL, FULLRES / BACTERIAL]))
    assert page.count('class="heatmap-btn"') == 1 and "No heatmap: drawn for pneumonia results only" in page
    assert client.get("/result/1/heatmap.jpg").status_code == 404
    assert client.get("/result/2/heatmap.jpg").status_code == 200
    assert "no heatmap for this result" in client.get("/result/1/slip").get_data(as_text=True)
    assert client.get("/result/1/slip.png").status_code == 200


def test_csv_download_has_the_cli_columns_and_covers_a_day_or_range(made, tmp_path):
    need_data()
    files = [FULLRES / BACTERIAL, FULLRES / NORMAL]
    client = made().test_client()
    screen_on_page(client, files, visit="K-9")
    r = client.get("/results.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv" and "attachment" in r.headers["Content-Disposition"]
    out = tmp_path / "cli.csv"
    assert CliRunner().invoke(cli, ["classify", *map(str, files), "--output", str(out)]).exit_code == 0
    ours = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    theirs = list(csv.reader(out.open(newline="")))
    assert ours[0] == theirs[0] + ["visit_id", "screened_at"] == list(FIELDS) + ["visit_id", "screened_at"]
    i, n = FIELDS.index("path"), len(FIELDS)
    assert sorted(row[:i] + row[i + 1:n] for row in ours[1:]) == sorted(row[:i] + row[i + 1:] for row in theirs[1:])
    assert {row[n] for row in ours[1:]} == {"K-9"}
    day = ours[1][n + 1][:10]
    assert len(list(csv.reader(io.StringIO(client.get(f"/results.csv?from={day}&to={day}").get_data(as_text=True))))) == 3
    r = client.get("/results.csv?from=2001-01-01&to=2001-01-31")
    assert r.status_code == 200 and len(r.get_data(as_text=True).splitlines()) == 1  # the header only
    assert 'filename="edge-xray-results-2001-01-01-2001-01-31.csv"' in r.headers["Content-Disposition"]


def test_clearing_the_list_asks_first(made, scan):
    client = made().test_client()
    screen_on_page(client, [scan])
    page = text_of(client.get("/"))
    assert 'href="/clear"' in page and 'action="/clear"' not in page  # a link to the question, not a button
    ask = text_of(client.get("/clear"))
    assert "This deletes all 1 results stored on this device" in ask and 'name="confirm" value="yes"' in ask
    r = client.post("/clear")  # no confirmation: back to the question, nothing deleted
    assert r.status_code == 303 and r.headers["Location"] == "/clear"
    assert len(client.get("/api/results").get_json()) == 1
    r = client.post("/clear", data={"confirm": "yes"})
    assert r.status_code == 303 and client.get("/api/results").get_json() == []


def test_referral_slip(made, screener, tmp_path):
    need_data()
    audit = tmp_path / "audit.jsonl"
    client = made(audit_log=audit).test_client()
    screen_on_page(client, [FULLRES / BACTERIAL], visit="R-5")
    slip = text_of(client.get("/result/1/slip"))
    s = screener.classify(FULLRES / BACTERIAL)
    line = audit.read_text().splitlines()[0]
    assert s.advice in slip and "REFER TODAY" in slip and "R-5" in slip
    assert "Health worker's signature" in slip and '<span class="line"></span>' in slip
    assert "Child's name" in slip
    assert hashlib.sha256(line.encode()).hexdigest() in slip  # the audit entry's hash
    assert screener.card.version in slip and "/result/1/heatmap.jpg" in slip
    png = client.get("/result/1/slip.png")
    im = Image.open(io.BytesIO(png.data))
    assert png.status_code == 200 and im.size == SLIP_SIZE
    red = np.asarray(im.convert("RGB"))[:, :, 0] > 150  # the REFER TODAY band is drawn in its colour
    assert (red & (np.asarray(im.convert("RGB"))[:, :, 1] < 30)).sum() > 50_000
    pdf = client.get("/result/1/slip.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert client.get("/result/9/slip").status_code == 404
    fr = text_of(client.get("/result/1/slip?lang=fr"))
    assert "Signature de l'agent de santé" in fr and "<h1>Dépistage de la pneumonie : fiche de référence</h1>" in fr


def test_slip_image_keeps_the_accents_or_drops_them_readably():
    from edge_xray.slip import font, unaccented

    assert unaccented("référence Nº 12 · niño, N° 3") == "reference No 12 · nino, No 3"
    f, accents = font(30)
    if accents:  # a system font (DejaVu on Debian and Raspberry Pi OS): every letter of the catalogue drawn
        assert all(f.getmask(c).getbbox() for c in "éèêàçãõñúíóâô")


def test_slip_without_audit_log_shows_the_scan_hash(made, scan):
    client = made().test_client()
    screen_on_page(client, [scan])
    slip = client.get("/result/1/slip").get_data(as_text=True)
    assert "no audit log" in slip and hashlib.sha256(scan.read_bytes()).hexdigest() in slip


def test_favicon_and_focus_ring_ship_with_the_page(made):
    client = made().test_client()
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.mimetype == "image/png" and Image.open(io.BytesIO(icon.data)).size == (32, 32)
    page = client.get("/").get_data(as_text=True)
    assert 'rel="icon"' in page and not re.search(r'(src|href)="(https?:)?//', page)  # nothing from elsewhere
    css = client.get("/static/app.css").get_data(as_text=True)
    ring = re.search(r"([^{}]*):focus-visible[^{]*\{[^}]*outline: 4px solid var\(--focus\)", css)
    assert ring and "#file:focus + .drop" in css  # the drop zone shows the file input's focus


# --- a real server and a real browser ----------------------------------------------------------
def start_server(*args, timeout=30.0):
    """`edge-xray serve --port 0 ARGS` -> (process, base URL, access code or None, seconds from start to
    the first good /api/health)."""
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "edge_xray.cli", "serve", "--port", "0", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while not lines or not lines[-1].startswith("stop with"):
        line = p.stdout.readline()
        if not line:
            p.kill()
            pytest.fail(f"serve did not start: {''.join(lines)}{p.stderr.read()}")
        lines.append(line)
    url = re.search(r"http://\S+/", lines[0]).group(0)
    code = next((m.group(1) for x in lines if (m := re.match(r"access code: (\d+)", x))), None)
    headers = {ACCESS_HEADER: code} if code else {}
    while time.monotonic() - t0 < timeout:
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "api/health", headers=headers), timeout=2) as r:
                if r.status == 200:
                    return p, url, code, time.monotonic() - t0
        except OSError:
            time.sleep(0.02)
    p.kill()
    pytest.fail("serve did not answer /api/health")


def stop_server(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()


def chromium():
    """A headless Chromium driven by Selenium (Debian's chromium and chromium-driver)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (Path("/usr/bin/chromedriver").exists() and "/usr/bin/chromedriver")
    missing = "chromium" if not binary else "chromium-driver" if not driver else None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing = "selenium (the dev extra)"
    if missing:
        msg = f"{missing} is not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1000,1300", "--lang=en-US"):
        opts.add_argument(flag)
    return webdriver, opts, Service(executable_path=driver)


@pytest.fixture()
def browser(tmp_path):
    webdriver, opts, service = chromium()
    opts.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(options=opts, service=service)
    yield driver
    driver.quit()


def wait(driver, seconds=60):
    """Each submit loads a new page: wait for it (the machine may be busy); an element of the page
    that is going away (stale) just means: not yet."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, ignored_exceptions=(StaleElementReferenceException,))


def upload(driver, url, files, visit=None):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver.get(url)
    if visit:
        driver.find_element(By.ID, "visit_id").send_keys(visit)
    driver.find_element(By.ID, "file").send_keys("\n".join(str(f) for f in files))
    driver.find_element(By.ID, "go").click()
    wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results .card")))


@pytest.mark.slow
def test_browser_batch_summary_order_slip_and_language(tmp_path, screener, browser):
    need_data()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    audit = tmp_path / "audit.jsonl"
    p, url, _, startup = start_server("--audit-log", str(audit), "--data-dir", str(tmp_path / "data"))
    print(f"serve answered /api/health {startup:.2f} s after start")
    assert startup < 10  # the docs' figure is measured by benchmarks/serve.py
    driver = browser
    try:
        bad = tmp_path / "notes.png"
        bad.write_text("not a scan")
        upload(driver, url, [FULLRES / NORMAL, bad, FULLRES / BACTERIAL, FULLRES / NORMAL], visit="V-1")
        words = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results .answer")]
        assert words == ["REFER TODAY", "No pneumonia found", "No pneumonia found", "Not screened"]  # urgent first
        summary = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results .summary li")]
        assert summary == ["1 of 4: refer today", "2 of 4: no pneumonia found", "1 of 4: not screened"]
        first = driver.find_element(By.CSS_SELECTOR, "#results .card")
        assert first.location["y"] < driver.find_elements(By.CSS_SELECTOR, "#results .card")[1].location["y"]
        colour = first.find_element(By.CSS_SELECTOR, ".answer").value_of_css_property("color")
        assert colour.replace(" ", "") in ("rgba(176,0,32,1)", "rgb(176,0,32)")
        unscreened = driver.find_element(By.CSS_SELECTOR, "#results .card.none")
        assert unscreened.find_element(By.CSS_SELECTOR, ".plain").text == \
            "Not screened: this file could not be read as an image"
        technical = unscreened.find_element(By.CSS_SELECTOR, ".technical .reason")
        assert not technical.is_displayed()  # folded away until asked for
        unscreened.find_element(By.CSS_SELECTOR, ".technical summary").click()
        assert technical.text == "not an image file (unknown or corrupt format)"
        assert not unscreened.find_elements(By.CSS_SELECTOR, ".slip-link")  # no slip when not screened
        first.find_element(By.CSS_SELECTOR, ".heatmap-btn").click()
        heat = first.find_element(By.CSS_SELECTOR, "img.heat")
        wait(driver).until(lambda d: heat.is_displayed() and d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", heat))
        shot = os.environ.get("EDGE_XRAY_SCREENSHOT")
        if shot:
            save_screenshot(driver, Path(shot))
        driver.set_window_size(390, 844)  # a phone: nothing wider than the screen
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        driver.set_window_size(1000, 1300)
        driver.find_element(By.CSS_SELECTOR, "a.lang[hreflang=fr]").click()  # the switch keeps the batch
        wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr")
        words = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results .answer")]
        assert words == ["RÉFÉRER AUJOURD'HUI", "Pas de pneumonie trouvée", "Pas de pneumonie trouvée", "Non analysé"]
        driver.find_element(By.CSS_SELECTOR, "#results .card .slip-link").click()
        wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".slip")))
        slip = driver.find_element(By.CSS_SELECTOR, ".slip").text
        assert "RÉFÉRER AUJOURD'HUI" in slip and "Signature de l'agent de santé" in slip and "V-1" in slip
        line = audit.read_text().splitlines()[2]  # the third upload, the scan to refer today
        assert hashlib.sha256(line.encode()).hexdigest() in slip
        assert all(driver.execute_script("return arguments[0].naturalWidth > 0", img)
                   for img in driver.find_elements(By.CSS_SELECTOR, ".slip-pics img"))
    finally:
        stop_server(p)


@pytest.mark.slow
def test_browser_restart_keeps_the_list(tmp_path, browser):
    need_data()
    from selenium.webdriver.common.by import By

    data = tmp_path / "data"
    p, url, _, _ = start_server("--data-dir", str(data))
    try:
        upload(browser, url, [FULLRES / BACTERIAL], visit="MORNING-7")
    finally:
        stop_server(p)
    assert not any((data / "uploads").iterdir())  # the upload folder went with the server
    p, url, _, _ = start_server("--data-dir", str(data), "--lang", "pt")
    try:
        browser.get(url + "?visit=morning-7")
        rows = browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr")
        assert len(rows) == 1 and "MORNING-7" in rows[0].text and "REFER" in rows[0].text  # the browser asks English
        rows[0].find_element(By.LINK_TEXT, "slip").click()
        wait(browser).until(lambda d: "MORNING-7" in d.find_element(By.CSS_SELECTOR, ".slip").text)
        assert browser.execute_script("return document.querySelector('.slip-pics img').naturalWidth > 0")
    finally:
        stop_server(p)


FOCUS_PROBE = """
var e = document.activeElement, shown = e.id === 'file' ? document.getElementById('drop') : e;
var s = getComputedStyle(shown);
return [e.tagName.toLowerCase(), e.id || e.className || e.textContent.trim().slice(0, 20), s.outlineStyle,
        parseFloat(s.outlineWidth), s.outlineColor, e.name || ''];
"""


@pytest.mark.slow
def test_browser_keyboard_path_shows_the_focus(tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    p, url, _, _ = start_server("--data-dir", str(tmp_path / "data"))
    try:
        browser.get(url)
        seen = []
        for _ in range(16):
            ActionChains(browser).send_keys(Keys.TAB).perform()
            seen.append(browser.execute_script(FOCUS_PROBE))
        names = [x[1] for x in seen]
        assert names.index("visit_id") < names.index("file") < names.index("go")  # the order of the form
        assert {"visit", "from", "to"} <= {x[5] for x in seen}  # on to the worklist's search
        for tag, name, style, width, colour, _ in seen:
            if tag == "body":
                continue
            assert style == "solid" and width >= 3, (tag, name, style, width)  # a ring, every control
            assert colour.replace(" ", "") == "rgb(224,112,0)", (name, colour)  # never blue on blue
    finally:
        stop_server(p)


@pytest.mark.slow
def test_idle_connections_do_not_starve_the_screen(tmp_path):
    """200 connections opened and left idle (no request sent): /api/health still answers within 2 s."""
    p, url, _, _ = start_server("--data-dir", str(tmp_path / "data"))
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    idle = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection((host, int(port)), timeout=5))
        time.sleep(0.5)
        t0 = time.monotonic()
        with urllib.request.urlopen(url + "api/health", timeout=2) as r:
            assert r.status == 200
        took = time.monotonic() - t0
        print(f"/api/health with 200 idle connections open: {took:.3f} s")
        assert took < 2
    finally:
        for s in idle:
            s.close()
        stop_server(p)


def save_screenshot(driver, path: Path, max_bytes=150_000):
    """The page as docs/screen.md describes it: a palette PNG, under MAX_BYTES."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1000, min(max(height + 140, 900), 2000))  # the window's frame included
    driver.execute_script("window.scrollTo(0, 0)")
    im = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    for colours, side in ((128, 1000), (96, 1000), (64, 1000), (64, 900), (48, 800)):
        small = im if im.width <= side else im.resize((side, round(im.height * side / im.width)), Image.LANCZOS)
        small.quantize(colours, dither=Image.Dither.NONE).save(path, optimize=True)
        if path.stat().st_size < max_bytes:
            break
    driver.set_window_size(1000, 1300)


@pytest.mark.slow
def test_browser_needs_the_access_code_off_this_device(tmp_path, browser):
    """127.0.0.2 is a loopback address, but not one of the three that need no code."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    p, url, code, _ = start_server("--host", "127.0.0.2", "--data-dir", str(tmp_path / "data"))
    assert url.startswith("http://127.0.0.2:") and code and len(code) == CODE_DIGITS
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "api/health", timeout=30)
        assert e.value.code == 401
        driver = browser
        driver.get(url)
        assert "access code needed" in driver.find_element(By.TAG_NAME, "body").text
        driver.find_element(By.ID, "code").send_keys("00000000" if code != "00000000" else "11111111")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(driver).until(lambda d: "wrong access code" in d.find_element(By.TAG_NAME, "body").text)
        driver.find_element(By.ID, "code").send_keys(code)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        go = wait(driver).until(ec.presence_of_element_located((By.ID, "go")))
        assert go.text == "Screen"  # the page, after the code
        driver.get(url + "static/app.css")
        assert "--today" in driver.find_element(By.TAG_NAME, "body").text  # the cookie carries on
    finally:
        stop_server(p)
