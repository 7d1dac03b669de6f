"""`edge-xray serve`: a page on the device for the health worker, a worklist kept on the device, a
printable referral slip, and a JSON API.

    from edge_xray import load_model
    from edge_xray.serve import create_app
    app = create_app(load_model(), data_dir="worklist/", audit_log="audit.jsonl")   # a Flask (WSGI) app

Flask does the routing, templates and multipart parsing (through Werkzeug) and waitress serves it:
both are pure Python, well kept, and need nothing from the network. Every asset (templates, CSS,
script, icon) ships in this package (edge_app/web/); the page uses the system's fonts.

The parts, one concern each: web_access.py (who may use the server), worklist.py (the results kept
on the device), plain.py and i18n.py (the words, in the clinic's language), slip.py (the referral
slip), web_views.py (what each address answers); this module holds the server's state, the list of
routes and the runner.

Uploads: at most MAX_UPLOAD_MB per request and MAX_FILES files, written only into a private folder
of this server under DATA_DIR/uploads, a sub-folder per request removed when the request ends; the
server's folder is removed at stop, and folders left by a server that died (kill -9, power cut) are
removed at the next start. Uploaded file names are shown, never used as paths.
"""

from __future__ import annotations

import dataclasses
import io
import os
import secrets
import shutil
import signal
import tempfile
import threading
import unicodedata
import weakref
from pathlib import Path

from flask import Flask, Request

from . import __version__, web_views as v
from .audit import AuditLog
from .errors import UsageError
from .heatmap import jpeg_bytes
from .i18n import default_language
from .preprocess import IMAGE_SUFFIXES
from .web_access import (  # noqa: F401 - the names tests and callers know from here
    ACCESS_COOKIE, ACCESS_HEADER, CODE_DIGITS, LOCKOUT_SECONDS, MAX_WRONG_CODES, Access, access_code, is_local,
    read_pin_file)
from .worklist import RETENTION_DAYS, Worklist, default_data_dir

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
MAX_UPLOAD_MB = 64  # per request
MAX_FILES = 20  # scans per request
THREADS = 4  # waitress worker threads; screenings themselves run one at a time
THUMB_SIDE = 320  # pixels
SPOOL_BYTES = 1024 * 1024  # uploads up to this size stay in memory while the request is parsed
UPLOADS = "uploads"  # DATA_DIR/uploads/PID-TOKEN: one server's temporary uploads
# waitress: enough connections that idle ones (keep-alive, or opened and left) cannot starve the page,
# and idle ones closed soon. Bodies up to BODY_FACTOR x the upload limit reach the app, which answers
# its own 413 page or JSON; larger ones get waitress's plain 413 (the page checks sizes before sending).
CONNECTION_LIMIT = 500
CHANNEL_TIMEOUT = 15  # seconds a connection may stay idle
BODY_FACTOR = 2
ROUTES = (  # rule, view, methods; the endpoint is the view's name
    ("/", v.index, ("GET",)),
    ("/screen", v.screen, ("POST",)),
    ("/clear", v.clear_form, ("GET",)),
    ("/clear", v.clear, ("POST",)),
    ("/login", v.login_form, ("GET",)),
    ("/login", v.login, ("POST",)),
    ("/favicon.ico", v.favicon, ("GET",)),
    ("/result/<int:rid>/thumbnail.png", v.thumbnail, ("GET",)),
    ("/result/<int:rid>/heatmap.jpg", v.heatmap, ("GET",)),
    ("/result/<int:rid>/slip", v.slip, ("GET",)),
    ("/result/<int:rid>/slip.<any(png, pdf):kind>", v.slip_file, ("GET",)),
    ("/results.csv", v.results_csv, ("GET",)),
    ("/api/health", v.health, ("GET",)),
    ("/api/classify", v.api_classify, ("POST",)),
    ("/api/results", v.api_results, ("GET",)),
)
_OURS: set = set()  # the upload folders of the servers in this process


def upload_name(filename: str | None) -> str:
    """An uploaded file's name as given, made safe to show and store: its last path part, no control
    characters, no leading characters a spreadsheet would take for a formula, at most 200 characters.
    Shown in rows and pages only; never used as a path."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in unicodedata.normalize("NFC", name) if unicodedata.category(c)[0] != "C")
    name = name.strip().lstrip("=+-@").strip()
    return name[:200] or "upload"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_uploads(folder: Path) -> int:
    """Remove the upload folders in FOLDER left by servers that are no longer running; how many."""
    n = 0
    for d in folder.glob("*-*") if folder.is_dir() else ():
        pid = d.name.split("-", 1)[0]
        if d.is_dir() and not d.is_symlink() and pid.isdigit() and str(d) not in _OURS and (
                int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


class State:
    """The screener, the audit log, the access code, the worklist and the upload folder of one app."""

    def __init__(self, screener, audit_log=None, pin=None, data_dir=None, retention_days=RETENTION_DAYS,
                 max_files=MAX_FILES, max_upload_mb=MAX_UPLOAD_MB, lang=None):
        self.screener = screener
        if audit_log is not None and not isinstance(audit_log, AuditLog):
            audit_log = AuditLog(audit_log, screener.model)
        self.audit = audit_log
        self.access = Access(pin)
        self.worklist = Worklist(data_dir or default_data_dir(), retention_days)
        self.max_files, self.max_upload_mb = max_files, max_upload_mb
        self.lang = lang or default_language()
        uploads = self.worklist.dir / UPLOADS
        uploads.mkdir(mode=0o700, exist_ok=True)
        self.stale_uploads = remove_stale_uploads(uploads)
        self.root = uploads / f"{os.getpid()}-{secrets.token_hex(4)}"
        self.root.mkdir(mode=0o700)
        _OURS.add(str(self.root))
        self._cleanup = weakref.finalize(self, _remove, str(self.root), self.worklist)
        self.lock = threading.Lock()  # one screening (interpreter, audit line) at a time
        self.uploads = 0

    @property
    def pin(self):
        return self.access.pin

    def close(self):
        """Remove the upload folder and close the worklist (also done at exit)."""
        self._cleanup()

    @property
    def info(self) -> dict:
        """What the footer, the slips and /api/health say about the model."""
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
        with self.lock:
            self.uploads += 1
            src = workdir / f"upload-{self.uploads}{suffix if suffix in IMAGE_SUFFIXES else ''}"
        upload.save(src)
        thumbnail = heatmap = digest = None
        with self.lock:
            scan, s = self.screener.read(src)  # an unreadable file: the command line's error row
            if scan is not None:
                s, _, overlay = self.screener.assess(scan, path=src, heatmap=images)
                heatmap = None if overlay is None else jpeg_bytes(overlay)
                if images:
                    thumb = scan.image.copy()
                    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
                    thumbnail = _png(thumb)
            s = dataclasses.replace(s, path=name)
            if self.audit is not None:
                digest = self.audit.write(s)
        return s, thumbnail, heatmap, digest


def _remove(root: str, worklist: Worklist):
    shutil.rmtree(root, ignore_errors=True)
    _OURS.discard(root)
    worklist.close()


def create_app(screener, *, audit_log=None, pin: str | None = None, data_dir=None,
               retention_days: int = RETENTION_DAYS, max_upload_mb: int = MAX_UPLOAD_MB, max_files: int = MAX_FILES,
               lang: str | None = None) -> Flask:
    """The web app (WSGI) for SCREENER (from edge_xray.load_model).

    AUDIT_LOG: an AuditLog or a file path; every screening is appended to it. PIN: the access code
    every request must carry (None: none, and only requests addressed to this device are answered).
    DATA_DIR: the folder of the worklist (default: the per-user data folder); RETENTION_DAYS: how long
    its entries are kept. LANG: the page's language when the browser asks for none we have.
    """
    state = State(screener, audit_log, pin, data_dir, retention_days, max_files, max_upload_mb, lang)

    class UploadRequest(Request):
        def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
            # uploads larger than SPOOL_BYTES go to a file in our upload folder, nowhere else
            return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="rb+", dir=state.root)

    app = Flask(__name__, template_folder=str(v.WEB / "templates"), static_folder=str(v.WEB / "static"),
                static_url_path="/static")
    app.request_class = UploadRequest
    app.config.update(MAX_CONTENT_LENGTH=int(max_upload_mb * 1024 * 1024), MAX_FORM_PARTS=max_files + 20,
                      SEND_FILE_MAX_AGE_DEFAULT=0)
    app.extensions["edge_xray"] = state
    for rule, view, methods in ROUTES:
        app.add_url_rule(rule, view_func=view, methods=list(methods))
    v.install(app)  # the access check, the language, security headers and error pages
    return app


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(model=None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, site=None, audit_log=None,
          pin: str | None = None, pin_file=None, data_dir=None, retention_days: int = RETENTION_DAYS,
          lang: str | None = None, allow_unverified: bool = False, echo=print, no_gate: bool = False):
    """Load MODEL (with SITE), start the app on HOST:PORT with waitress and serve until interrupted.
    PIN, or the first line of PIN_FILE: the access code. ECHO gets the lines to show at start."""
    from .screen import load_model

    if pin is None and pin_file is not None:
        pin = read_pin_file(pin_file)
    code = access_code(host, pin)
    screener = load_model(model, site=site, allow_unverified=allow_unverified, no_gate=no_gate)
    audit = AuditLog(audit_log, screener.model) if audit_log else None
    app = create_app(screener, audit_log=audit, pin=code, data_dir=data_dir, retention_days=retention_days, lang=lang)
    state = app.extensions["edge_xray"]
    try:
        server = _server(app, host, port)
        _announce(echo, state, host, server.effective_port, audit_log if audit else None, code, pin)
        _run(server)
    finally:
        state.close()
        if audit is not None:
            audit.close()


def _server(app, host, port):
    from waitress import create_server

    try:
        return create_server(app, host=host, port=port, threads=THREADS, ident="edge-xray",
                             connection_limit=CONNECTION_LIMIT, channel_timeout=CHANNEL_TIMEOUT, cleanup_interval=5,
                             max_request_body_size=BODY_FACTOR * app.config["MAX_CONTENT_LENGTH"] + 1024 * 1024)
    except OSError as e:
        raise UsageError(f"cannot listen on {host} port {port} ({e.strerror or e})") from None


def _announce(echo, state, host, port, audit_log, code, pin):
    shown = f"[{host}]" if ":" in host else host
    info = state.info
    echo(f"edge-xray serve: http://{shown}:{port}/  (model {info['name']} {info['version']}, "
         f"{'site ' + info['site_sha256'][:12] if info['site_sha256'] else 'no site file'}, "
         f"{'audit log ' + str(audit_log) if audit_log else 'no audit log'})")
    echo(f"worklist: {state.worklist.path} (kept {state.worklist.retention.days} days"
         f"{f'; removed {state.stale_uploads} upload folders left by a stopped server' if state.stale_uploads else ''})")
    if code is not None and pin is None:
        echo(f"access code: {code}  (needed by every browser or program that uses this server)")
    elif code is not None:
        echo("access code: the one given (--pin, $EDGE_XRAY_PIN or --pin-file)")
    echo("stop with Ctrl+C")


def _run(server):
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
