"""`edge-xray serve`: a page on the device for the health worker, a printable referral slip, and a JSON API.

    from edge_xray import load_model
    from edge_xray.serve import create_app
    app = create_app(load_model(), audit_log="audit.jsonl")   # a Flask (WSGI) app

Flask does the routing, templates and multipart parsing (through Werkzeug) and waitress serves it:
both are pure Python (no compiler, install anywhere Python runs, a Raspberry Pi included), well kept,
and need nothing from the network. Every asset (templates, CSS, script) ships in this package
(edge_app/web/); the page uses the system's fonts.

Safety:
- Bound to 127.0.0.1 by default. Then only requests whose Host is this device are answered (a web
  page elsewhere cannot reach the server through DNS rebinding). Any other --host needs an access
  code (given, or generated and printed at start), checked on every request: the header
  X-Access-Code, or a cookie set by the page's code form. Repeated wrong codes lock the address out.
- Uploads: at most MAX_UPLOAD_MB per request and MAX_FILES files; they are written only into a
  temporary folder made at start (private to this user), in a sub-folder per request that is removed
  when the request ends; the folder itself is removed at exit. Uploaded file names are shown, never
  used as paths.
- Screenings go through the same library call as `edge-xray classify`: the same rows, the same
  one-line reasons for bad files, and one audit entry per screening when an audit log is given.
- Results are kept in memory only, per server process (the last MAX_RESULTS), with no names.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import io
import itertools
import json
import secrets
import shutil
import signal
import tempfile
import threading
import time
import unicodedata
import weakref
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Request, Response, abort, redirect, render_template, request, url_for
from PIL import Image, ImageDraw, ImageOps

from . import __version__
from .audit import AuditLog
from .errors import UsageError
from .heatmap import font, wrap_text
from .output import CSV_HEADER, csv_row, human_line
from .preprocess import IMAGE_SUFFIXES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")  # the hosts that need no access code
MAX_UPLOAD_MB = 64  # per request
MAX_FILES = 20  # scans per request
MAX_RESULTS = 200  # results kept in memory per server process; older ones are forgotten
THREADS = 4  # waitress worker threads; screenings themselves run one at a time
THUMB_SIDE = 320  # pixels
SPOOL_BYTES = 1024 * 1024  # uploads up to this size stay in memory while the request is parsed
ACCESS_HEADER = "X-Access-Code"
ACCESS_COOKIE = "edge_xray_access"
CODE_DIGITS = 8  # of a generated access code
MIN_CODE_LENGTH = 4
MAX_WRONG_CODES = 10  # per client address within LOCKOUT_SECONDS; then refused until the window passes
LOCKOUT_SECONDS = 60
SLIP_DPI = 150
SLIP_SIZE = (1240, 1754)  # A4 at SLIP_DPI
WEB = Path(__file__).resolve().parent / "web"

# The large plain words of each answer, and their colour (a CSS class and an RGB for the PNG slip)
ANSWERS = {
    "today": ("REFER TODAY", (176, 0, 32)),
    "refer": ("REFER", (168, 72, 0)),
    "normal": ("No pneumonia found", (27, 110, 32)),
    "none": ("Not screened", (85, 85, 85)),
}
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


# --- small helpers ------------------------------------------------------------------------------
def is_local(host: str) -> bool:
    return host.strip("[]").lower() in LOCAL_HOSTS


def access_code(host: str, pin: str | None = None) -> str | None:
    """The access code a server on HOST needs: PIN when given; else None on this device's own
    addresses, and a new random one (CODE_DIGITS digits) on any other."""
    if pin is not None:
        pin = str(pin)
        if len(pin) < MIN_CODE_LENGTH or not pin.isprintable() or any(c.isspace() for c in pin):
            raise UsageError(f"--pin must be at least {MIN_CODE_LENGTH} characters, without spaces")
        return pin
    if is_local(host):
        return None
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def upload_name(filename: str | None) -> str:
    """An uploaded file's name as given, made safe to show and store: its last path part, no control
    characters, no leading characters a spreadsheet would take for a formula, at most 200 characters.
    Shown in rows and pages only; never used as a path."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in unicodedata.normalize("NFC", name) if unicodedata.category(c)[0] != "C")
    name = name.strip().lstrip("=+-@").strip()
    return name[:200] or "upload"


def answer(s) -> str:
    """The key (in ANSWERS) of a screening's answer."""
    if s.status != "ok":
        return "none"
    if s.label != "PNEUMONIA":
        return "normal"
    return "today" if (s.advice or "").startswith(ANSWERS["today"][0] + ":") else "refer"  # the decision's advice decides


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


@dataclass
class Result:
    """One screening made through the page, kept in memory."""

    id: int
    time: dt.datetime  # UTC
    screening: object  # a Screening; `path` is the uploaded file's name
    thumbnail: bytes | None = None  # PNG of the decoded scan
    heatmap: bytes | None = None  # JPEG overlay (PNEUMONIA results, or as the heatmap module decides)
    audit_sha256: str | None = None  # of the audit line written for it (None: no audit log)

    @property
    def answer(self) -> str:
        return answer(self.screening)

    @property
    def words(self) -> str:
        return ANSWERS[self.answer][0]

    @property
    def reason(self) -> str | None:
        """For a refused or unreadable input, the CLI's one line about it."""
        return None if self.screening.ok else human_line(self.screening)


# --- the server's state ---------------------------------------------------------------------------
class State:
    """The screener, the audit log, the temporary folder and this process's results."""

    def __init__(self, screener, audit_log=None, pin=None, max_files=MAX_FILES, max_results=MAX_RESULTS):
        self.screener = screener
        if audit_log is not None and not isinstance(audit_log, AuditLog):
            audit_log = AuditLog(audit_log, screener.model)
        self.audit = audit_log
        self.pin = pin
        self.token = secrets.token_urlsafe(32)  # the cookie of a correct code; new at each start
        self.max_files = max_files
        self.max_results = max_results
        self.root = Path(tempfile.mkdtemp(prefix="edge-xray-serve-"))  # mode 0700
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.root), True)
        self.lock = threading.Lock()  # one screening (interpreter, audit line) at a time
        self.results_lock = threading.Lock()
        self.results: OrderedDict[int, Result] = OrderedDict()
        self.ids = itertools.count(1)
        self.uploads = itertools.count(1)
        self.wrong_codes: defaultdict[str, deque] = defaultdict(deque)

    def close(self):
        """Remove the temporary folder (also done at exit)."""
        self._cleanup()

    # information shown in the footer, on slips and by /api/health
    @property
    def info(self) -> dict:
        card, site = self.screener.card, self.screener.site
        return {"name": card.name, "version": card.version, "sha256": self.screener.model.sha256,
                "site_sha256": getattr(site, "sha256", None), "threshold": self.screener.threshold,
                "edge_xray": __version__, "audit_log": self.audit is not None}

    def workdir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root))

    def screen_upload(self, upload, workdir: Path, *, images: bool = True):
        """Screen one uploaded file (a werkzeug FileStorage) as `edge-xray classify` would screen it
        from disk: -> (Screening with `path` = the uploaded name, thumbnail PNG, heatmap JPEG, audit
        line sha256). IMAGES=False: no thumbnail and no heatmap (the JSON API's row)."""
        name = upload_name(upload.filename)
        suffix = Path(name).suffix.lower()  # kept: a .dcm suffix makes a file DICOM, as on the command line
        src = workdir / f"upload-{next(self.uploads)}{suffix if suffix in IMAGE_SUFFIXES else ''}"
        upload.save(src)
        heatmap_dir = workdir / "heatmaps" if images else None
        thumbnail = heatmap = digest = None
        with self.lock:
            scan, s = self.screener.read(src)  # an unreadable file: the command line's error row
            if scan is not None:
                s = self.screener.screen(scan, src, heatmap_dir=heatmap_dir)
                if images:
                    thumb = scan.image.copy()
                    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
                    thumbnail = _png(thumb)
            if s.heatmap:
                heatmap = Path(s.heatmap).read_bytes()
            s = dataclasses.replace(s, path=name, heatmap=None)  # the overlay file is gone with the request
            if self.audit is not None:
                digest = self.audit.write(s)
        return s, thumbnail, heatmap, digest

    def keep(self, s, thumbnail, heatmap, digest) -> Result:
        with self.results_lock:
            r = Result(next(self.ids), dt.datetime.now(dt.timezone.utc), s, thumbnail, heatmap, digest)
            self.results[r.id] = r
            while len(self.results) > self.max_results:
                self.results.popitem(last=False)
        return r

    def csv_bytes(self) -> bytes:
        """This session's results in the columns and format of `classify --output results.csv`, made in
        memory (results never go to disk)."""
        with self.results_lock:
            screenings = [r.screening for r in self.results.values()]
        return CSV_HEADER + b"".join(csv_row(s) for s in screenings)

    def check_code(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.pin.encode("utf-8"))

    def locked_out(self, address: str) -> bool:
        q = self.wrong_codes[address]
        while q and q[0] < time.monotonic() - LOCKOUT_SECONDS:
            q.popleft()
        return len(q) >= MAX_WRONG_CODES

    def wrong_code(self, address: str):
        self.wrong_codes[address].append(time.monotonic())


# --- the referral slip ----------------------------------------------------------------------------
def slip_lines(r: Result, info: dict) -> dict:
    """What a referral slip says, for the HTML page and the PNG alike."""
    s = r.screening
    if s.ok and s.label == "PNEUMONIA":
        kind = f"; type: {s.pneumonia_type} ({s.type_probability:.2f})" if s.pneumonia_type else ""  # 2 labels: none
        detail = f"p(pneumonia) = {s.pneumonia_probability:.2f}{kind}"
    elif s.ok:
        detail = f"p(pneumonia) = {s.pneumonia_probability:.2f} (threshold {s.threshold:.2f})"
    else:
        detail = r.reason
    if r.audit_sha256:
        audit = ("Audit entry sha256", r.audit_sha256)
    else:
        audit = ("Scan sha256 (no audit log on this device)", s.input_sha256 or "none (the file could not be read)")
    site = info["site_sha256"]
    return {
        "date": r.time.strftime("%Y-%m-%d %H:%M UTC"),
        "site": f"site file sha256 {site[:12]}" if site else "no site file (the model card's threshold)",
        "words": r.words,
        "detail": detail,
        "advice": s.advice or "",
        "model": f"{info['name']} version {info['version']} (sha256 {str(info['sha256'])[:12]}), "
                 f"threshold {info['threshold']:.3f}, edge-xray {info['edge_xray']}",
        "audit": audit,
        "scan": s.path,
    }


def render_slip(r: Result, info: dict) -> Image.Image:
    """The referral slip as an A4 image (SLIP_DPI), drawn with Pillow."""
    w, h = SLIP_SIZE
    m = 90
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    f_title, f_big, f_text, f_small = font(46), font(78), font(30), font(24)
    t = slip_lines(r, info)
    y = m
    d.text((m, y), "Pneumonia screening: referral slip", font=f_title, fill="black")
    y += 66
    d.text((m, y), "A screening aid, not a diagnosis. A clinician decides treatment.", font=f_small, fill=(60, 60, 60))
    y += 50
    for label, value in (("Date", t["date"]), ("Site", t["site"]), ("Scan", t["scan"])):
        d.text((m, y), f"{label}: {value}", font=f_text, fill="black")
        y += 44
    y += 16
    colour = ANSWERS[r.answer][1]
    d.rectangle((m, y, w - m, y + 120), fill=colour)
    d.text((m + 30, y + 18), t["words"], font=f_big, fill="white")
    y += 140
    for line in wrap_text(d, t["detail"], f_text, w - 2 * m):
        d.text((m, y), line, font=f_text, fill="black")
        y += 42
    for line in wrap_text(d, t["advice"], f_text, w - 2 * m):
        d.text((m, y), line, font=f_text, fill=colour)
        y += 42
    y += 20
    box = ((w - 2 * m - 40) // 2, 520)
    x = m
    for title, png in (("Scan", r.thumbnail), ("Heatmap", r.heatmap)):
        d.rectangle((x, y, x + box[0], y + box[1]), outline=(180, 180, 180))
        if png:
            pic = ImageOps.contain(Image.open(io.BytesIO(png)).convert("RGB"), (box[0] - 4, box[1] - 4))
            im.paste(pic, (x + (box[0] - pic.width) // 2, y + (box[1] - pic.height) // 2))
        else:
            note = "no image" if title == "Scan" else "no heatmap for this result"
            d.text((x + 20, y + box[1] // 2 - 12), note, font=f_small, fill=(110, 110, 110))
        x += box[0] + 40
    y += box[1] + 30
    for line in wrap_text(d, "Model: " + t["model"], f_small, w - 2 * m):
        d.text((m, y), line, font=f_small, fill="black")
        y += 34
    d.text((m, y), f"{t['audit'][0]}:", font=f_small, fill="black")
    y += 34
    d.text((m, y), t["audit"][1], font=f_small, fill="black")
    y += 70
    for label in ("Child's name", "Health worker's name", "Health worker's signature"):
        d.text((m, y), f"{label}:", font=f_text, fill="black")
        d.line((m + 420, y + 34, w - m, y + 34), fill="black", width=2)
        y += 80
    d.text((m, h - m), "The device stores no names.", font=f_small, fill=(90, 90, 90))
    return im


# --- the app --------------------------------------------------------------------------------------
def create_app(screener, *, audit_log=None, pin: str | None = None, max_upload_mb: int = MAX_UPLOAD_MB,
               max_files: int = MAX_FILES, max_results: int = MAX_RESULTS) -> Flask:
    """The web app (WSGI) for SCREENER (from edge_xray.load_model).

    AUDIT_LOG: an AuditLog or a file path; every screening is appended to it. PIN: the access code
    every request must carry (None: none, and only requests addressed to this device are answered).
    """
    state = State(screener, audit_log, pin, max_files, max_results)

    class UploadRequest(Request):
        def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
            # uploads larger than SPOOL_BYTES go to a file in our temporary folder, nowhere else
            return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="rb+", dir=state.root)

    app = Flask(__name__, template_folder=str(WEB / "templates"), static_folder=str(WEB / "static"),
                static_url_path="/static")
    app.request_class = UploadRequest
    app.config.update(MAX_CONTENT_LENGTH=int(max_upload_mb * 1024 * 1024), MAX_FORM_PARTS=max_files + 20,
                      SEND_FILE_MAX_AGE_DEFAULT=0)
    app.extensions["edge_xray"] = state

    def api() -> bool:
        return request.path.startswith("/api/")

    def refuse(status: int, message: str):
        if api():
            return Response(json.dumps({"error": message}), status, mimetype="application/json")
        code_form = status in (401, 403) and state.pin is not None
        back = request.full_path.rstrip("?") if request.method == "GET" else "/"  # where the code form returns
        return Response(render_template("access.html", message=message, code_form=code_form, next=back), status,
                        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                            "form-action 'self'; frame-ancestors 'none'"})

    @app.before_request
    def guard():
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and origin.rstrip("/") != request.host_url.rstrip("/"):
            return refuse(403, "refused: a request from another web site")  # cross-site form posts
        if state.pin is None:
            host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
            if not is_local(host):
                return refuse(403, "this server answers only on this device; to serve the network start it "
                                   "with --host (an access code is then needed)")
            return None
        if request.endpoint == "login":
            return None  # the login form checks the code itself
        cookie = request.cookies.get(ACCESS_COOKIE)
        if cookie and hmac.compare_digest(cookie.encode("utf-8", "replace"), state.token.encode()):
            return None
        address = request.remote_addr or "?"
        if state.locked_out(address):
            return refuse(429, f"too many wrong access codes: wait {LOCKOUT_SECONDS} seconds")
        given = request.headers.get(ACCESS_HEADER)
        if given is None:
            return refuse(401, "access code needed: enter the code shown on the device "
                               f"(programs: send it in the {ACCESS_HEADER} header)")
        if not state.check_code(given):
            state.wrong_code(address)
            return refuse(403, "wrong access code")
        return None

    @app.after_request
    def headers(resp):
        resp.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"  # (no-referrer would make form posts "Origin: null")
        resp.headers["X-Frame-Options"] = "DENY"
        if request.endpoint != "static":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(413)
    def too_large(e):
        return refuse(413, f"upload too large: at most {max_upload_mb} MB and {max_files} files per request")

    @app.errorhandler(404)
    def not_found(e):
        return refuse(404, f"not found (this server keeps the last {state.max_results} results of this "
                           "session, in memory only)")

    @app.errorhandler(500)
    def failed(e):
        return refuse(500, "the server failed on this request; see the server's console")

    @app.post("/login")
    def login():
        address = request.remote_addr or "?"
        if state.pin is None:
            return redirect(url_for("index"))
        if state.locked_out(address):
            return refuse(429, f"too many wrong access codes: wait {LOCKOUT_SECONDS} seconds")
        if not state.check_code(request.form.get("code", "").strip()):
            state.wrong_code(address)
            return refuse(403, "wrong access code")
        nxt = request.form.get("next") or "/"
        if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
            nxt = "/"
        resp = redirect(nxt, 303)
        resp.set_cookie(ACCESS_COOKIE, state.token, httponly=True, samesite="Strict")
        return resp

    def page(shown=(), message=None, status=200):
        with state.results_lock:
            results = list(state.results.values())
        by_id = {r.id: r for r in results}
        cards = [by_id[i] for i in shown if i in by_id]
        return render_template("index.html", cards=cards, results=results[::-1], info=state.info,
                               message=message, max_files=max_files, max_upload_mb=max_upload_mb,
                               max_results=state.max_results, answers=ANSWERS), status

    @app.get("/")
    def index():
        shown = [int(x) for x in request.args.get("show", "").split(",") if x.isdigit()]
        return page(shown)

    @app.post("/screen")
    def screen():
        files = [f for f in request.files.getlist("file") if f.filename]
        if not files:
            return page(message="Choose one or more scans first.", status=400)
        if len(files) > max_files:
            return page(message=f"Too many files: at most {max_files} at once.", status=413)
        workdir = state.workdir()
        try:
            ids = [state.keep(*state.screen_upload(f, workdir)).id for f in files]
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return redirect(url_for("index", show=",".join(map(str, ids))) + "#results", 303)

    @app.post("/clear")
    def clear():
        with state.results_lock:
            state.results.clear()
        return redirect(url_for("index"), 303)

    def result(rid: int) -> Result:
        with state.results_lock:
            r = state.results.get(rid)
        if r is None:
            abort(404)
        return r

    def image_response(data, name):
        if not data:
            return refuse(404, f"no {name} for this result")
        return Response(data, mimetype="image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png")

    @app.get("/result/<int:rid>/thumbnail.png")
    def thumbnail(rid):
        return image_response(result(rid).thumbnail, "thumbnail")

    @app.get("/result/<int:rid>/heatmap.jpg")
    def heatmap(rid):
        return image_response(result(rid).heatmap, "heatmap")

    @app.get("/result/<int:rid>/slip")
    def slip(rid):
        r = result(rid)
        return render_template("slip.html", r=r, t=slip_lines(r, state.info), info=state.info)

    @app.get("/result/<int:rid>/slip.<any(png, pdf):kind>")
    def slip_file(rid, kind):
        r = result(rid)
        im = render_slip(r, state.info)
        buf = io.BytesIO()
        if kind == "png":
            im.save(buf, "PNG", compress_level=6, dpi=(SLIP_DPI, SLIP_DPI))
        else:
            im.save(buf, "PDF", resolution=SLIP_DPI, title="Referral slip", creator=f"edge-xray {__version__}")
        name = f"referral-slip-{r.time:%Y%m%d-%H%M}-{r.id}.{kind}"
        return Response(buf.getvalue(), mimetype="image/png" if kind == "png" else "application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/results.csv")
    def results_csv():
        name = f"edge-xray-results-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M}.csv"
        return Response(state.csv_bytes(), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/api/health")
    def health():
        info = state.info
        body = {"status": "ok", "model": {k: info[k] for k in ("name", "version", "sha256")},
                "site_sha256": info["site_sha256"], "threshold": info["threshold"], "edge_xray": __version__}
        return Response(json.dumps(body), mimetype="application/json")

    @app.post("/api/classify")
    def api_classify():
        files = request.files.getlist("file")
        if not files or not files[0].filename:
            return refuse(400, "send one scan in the multipart field 'file'")
        if len(files) > 1:
            return refuse(400, "one scan per request")
        workdir = state.workdir()
        try:
            s = state.screen_upload(files[0], workdir, images=False)[0]
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return Response(json.dumps(s.to_dict()), mimetype="application/json")  # the classify --json row

    return app


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(model=None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, site=None, audit_log=None,
          pin: str | None = None, allow_unverified: bool = False, echo=print, no_gate: bool = False):
    """Load MODEL (with SITE), start the app on HOST:PORT with waitress and serve until interrupted.
    ECHO gets the lines to show at start (the address, and the access code when one is needed)."""
    from waitress import create_server

    from .screen import load_model

    code = access_code(host, pin)
    screener = load_model(model, site=site, allow_unverified=allow_unverified, no_gate=no_gate)
    audit = AuditLog(audit_log, screener.model) if audit_log else None
    app = create_app(screener, audit_log=audit, pin=code)
    state = app.extensions["edge_xray"]
    try:
        try:
            server = create_server(app, host=host, port=port, threads=THREADS, ident="edge-xray",
                                   max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1024 * 1024)
        except OSError as e:
            raise UsageError(f"cannot listen on {host} port {port} ({e.strerror or e})") from None
        shown = f"[{host}]" if ":" in host else host
        info = state.info
        echo(f"edge-xray serve: http://{shown}:{server.effective_port}/  (model {info['name']} {info['version']}, "
             f"{'site ' + info['site_sha256'][:12] if info['site_sha256'] else 'no site file'}, "
             f"{'audit log ' + str(audit_log) if audit else 'no audit log'})")
        if code is not None and pin is None:
            echo(f"access code: {code}  (needed by every browser or program that uses this server)")
        elif code is not None:
            echo("access code: the one given with --pin")
        echo("stop with Ctrl+C")
        previous = None
        if threading.current_thread() is threading.main_thread():  # a service manager's stop: clean up too
            previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    finally:
        state.close()
        if audit is not None:
            audit.close()
