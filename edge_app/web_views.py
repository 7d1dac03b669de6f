"""What each address of `edge-xray serve` answers (the routes are listed in edge_app/serve.py).

Every request: the access check (web_access), the language (`?lang=`, then the switch's cookie, then
Accept-Language, then the server's default), strict security headers. Query values are checked:
a malformed one is a 400 with a one-line reason, never a server error. The API answers JSON, errors
included; the page answers HTML, errors included (an over-size upload gets the page with its message).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import shutil
from functools import lru_cache
from pathlib import Path

from flask import Response, abort, current_app, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from .i18n import NAMES, N_, gettext, languages, localize, negotiate, normalize, translate
from .output import CSV_HEADER, csv_row
from .plain import by_urgency, chance, css, kind, local, local_time, local_zone, refusal, summary, words
from .slip import slip_file as slip_bytes, slip_lines
from .web_access import ACCESS_COOKIE, LOCKOUT_SECONDS, safe_next
from .worklist import LIST_LIMIT, check_visit_id

WEB = Path(__file__).resolve().parent / "web"
LANG_COOKIE = "edge_xray_lang"
PAGE_ROWS = 50  # rows of the list on the page (the CSV and a search give more)
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
ACCESS_PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
IDS = re.compile(r"[0-9]{1,12}(,[0-9]{1,12}){0,199}")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]{2,15}(Z|[+-][0-9]{2}:?[0-9]{2})?)?")
MESSAGES = {
    "choose": N_("Choose one or more scans first."),
    "too_many": N_("Too many files: at most {n} at once."),
    "too_large": N_("Upload too large: at most {mb} MB and {n} files at once. Choose fewer or smaller files."),
    "no_slip": N_("No referral slip: this file was not screened."),
    "not_found": N_("Not found: this result is not in the worklist (it may have been cleared or be older than "
                    "the retention)."),
    "failed": N_("The server failed on this request; see the server's console."),
    "bad_query": N_("Not understood: {detail}"),
    "enter_code": N_("Enter the access code shown on the device."),
}


# --- per request ----------------------------------------------------------------------------------
def state():
    return current_app.extensions["edge_xray"]


def _(text: str, **values) -> str:
    """TEXT in the request's language, with VALUES filled in (the templates' `_`)."""
    t = gettext(text, g.get("lang"))
    return t.format(**values) if values else t


def api() -> bool:
    return request.path.startswith("/api/")


def json_response(body, status: int = 200) -> Response:
    return Response(json.dumps(body), status, mimetype="application/json")


def choose_language() -> str:
    asked = request.args.get("lang")
    g.new_lang = normalize(asked) if asked else None
    return (g.new_lang or normalize(request.cookies.get(LANG_COOKIE))
            or negotiate(request.headers.get("Accept-Language"), state().lang))


def refuse(status: int, message: str):
    """An error answer: JSON {"error": ...} for the API (English), else a small page in the language."""
    if api():
        return json_response({"error": message}, status)
    code_form = status in (401, 403) and state().pin is not None
    back = safe_next(request.full_path.rstrip("?")) if request.method == "GET" else "/"
    body = render_template("access.html", message=translate(message, g.get("lang")), code_form=code_form, next=back)
    return Response(body, status, headers={"Content-Security-Policy": ACCESS_PAGE_POLICY})


def before():
    g.lang = choose_language()
    refused = state().access.refusal(request)
    return refuse(*refused) if refused else None


def headers(resp):
    resp.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"  # (no-referrer would make form posts "Origin: null")
    resp.headers["X-Frame-Options"] = "DENY"
    if request.endpoint not in ("static", "favicon"):
        resp.headers["Cache-Control"] = "no-store"
    if g.get("new_lang"):
        resp.set_cookie(LANG_COOKIE, g.new_lang, max_age=365 * 86400, samesite="Strict", httponly=True)
    return resp


def error_page(e: HTTPException):
    st = state()
    if e.code == 413:
        msg = gettext(MESSAGES["too_large"], "en" if api() else g.get("lang")).format(mb=st.max_upload_mb,
                                                                                       n=st.max_files)
        return json_response({"error": msg}, 413) if api() else page(message=msg, status=413)
    if e.code == 404:
        return refuse(404, MESSAGES["not_found"])
    if e.code == 400 and e.description and not e.description.startswith("The browser"):
        return refuse(400, e.description)
    if e.code >= 500:
        return refuse(500, MESSAGES["failed"])
    return refuse(e.code, f"{e.code} {e.name}")


def unexpected(e: Exception):
    current_app.logger.exception("request failed")
    return refuse(500, MESSAGES["failed"])


def lang_url(code: str) -> str:
    """This page in language CODE (its other query values kept)."""
    args = {**request.args.to_dict(), "lang": code}
    if request.method != "GET" or request.endpoint in (None, "static", "screen", "clear", "login"):
        return url_for("index", lang=code)
    return url_for(request.endpoint, **(request.view_args or {}), **args)


def context() -> dict:
    lang = g.get("lang", "en")
    return {"_": _, "lang": lang, "languages": [(x, NAMES.get(x, x)) for x in languages()], "info": state().info,
            "lang_url": lang_url}


def install(app):
    """The per-request hooks and error pages of APP."""
    app.before_request(before)
    app.after_request(headers)
    app.context_processor(context)
    app.register_error_handler(HTTPException, error_page)
    app.register_error_handler(Exception, unexpected)


# --- query values -----------------------------------------------------------------------------------
def bad(detail: str):
    abort(400, description=gettext(MESSAGES["bad_query"], "en").format(detail=detail))


def arg_ids(name: str = "show") -> list:
    raw = request.args.get(name, "")
    if raw and not IDS.fullmatch(raw):
        bad(f"{name} must be result numbers separated by commas")
    return [int(x) for x in raw.split(",")] if raw else []


def arg_visit(name: str) -> str | None:
    try:
        return check_visit_id(request.args.get(name))
    except ValueError as e:
        bad(str(e))


def arg_date(name: str) -> dt.date | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        if not DATE.fullmatch(raw):
            raise ValueError
        return dt.date.fromisoformat(raw)
    except ValueError:
        bad(f"{name} must be a date such as 2026-03-02")


def arg_since(name: str = "since") -> dt.datetime | None:
    """A date (from its local midnight) or a date and time (local unless an offset is given)."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        if not DATETIME.fullmatch(raw):
            raise ValueError
        t = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return t if t.tzinfo else t.astimezone()
    except ValueError:
        bad(f"{name} must be a date or a date and time such as 2026-03-02 or 2026-03-02T08:00+02:00")


def arg_limit(name: str = "limit", default: int = LIST_LIMIT) -> int:
    raw = request.args.get(name, "")
    if not raw:
        return default
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= LIST_LIMIT:
        bad(f"{name} must be a number from 1 to {LIST_LIMIT}")
    return int(raw)


def filters() -> dict:
    """The list's search: visit number and a day or range of days (local), from the query."""
    visit, first, last = arg_visit("visit"), arg_date("from"), arg_date("to")
    if first and last and last < first:
        bad("to is before from")
    since = dt.datetime.combine(first, dt.time()).astimezone() if first else None
    until = dt.datetime.combine(last + dt.timedelta(days=1), dt.time()).astimezone() if last else None
    return {"visit_id": visit, "since": since, "until": until}


# --- the page ---------------------------------------------------------------------------------------
def card(e) -> dict:
    """What the page shows of one stored entry, in the request's language."""
    s, lang = e.screening, g.lang
    return {"id": e.id, "css": css(s), "words": words(s, lang), "name": s.path, "visit": e.visit_id,
            "time": local_time(e.screened_at), "clock": f"{local(e.screened_at):%Y-%m-%d %H:%M}",
            "ok": s.ok, "status": s.status, "chance": chance(s, lang) if s.ok else None, "kind": kind(s, lang),
            "advice": translate(s.advice, lang) if s.ok else None, "refusal": refusal(s, lang),
            "thumbnail": e.has_thumbnail, "heatmap": e.has_heatmap, "heatmap_error": s.heatmap_error,
            "normal": s.ok and s.label == "NORMAL", "note": translate(s.note, lang),
            "turned": s.orientation_corrected or 0}


def page(shown=(), found=None, message=None, status=200):
    st = state()
    wl = st.worklist
    batch = by_urgency(sorted(wl.find(ids=shown), key=lambda e: e.id)) if shown else []
    search = found or {"visit_id": None, "since": None, "until": None}
    rows = wl.find(**search, limit=PAGE_ROWS)
    searching = any(search.values())
    return render_template(
        "index.html", cards=[card(e) for e in batch], rows=[card(e) for e in rows], message=message,
        summary=summary([e.screening for e in batch], g.lang) if len(batch) > 1 else [],
        query={k: request.args.get(k, "") for k in ("visit", "from", "to")}, searching=searching,
        total=wl.count(), zone=local_zone(), retention=wl.retention.days, page_rows=PAGE_ROWS,
        max_files=st.max_files, max_upload_mb=st.max_upload_mb, today=f"{local(dt.datetime.now(dt.timezone.utc)):%Y-%m-%d}",
    ), status


def index():
    shown = arg_ids("show")
    return page(shown, filters())


def screen_files(files, visit, images: bool) -> list:
    """Screen uploaded FILES, store each in the worklist with VISIT; their entries."""
    st = state()
    workdir = st.workdir()
    try:
        return [st.worklist.add(s, visit_id=visit, thumbnail=th, heatmap=hm, audit_sha256=dg)
                for s, th, hm, dg in (st.screen_upload(f, workdir, images=images) for f in files)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def screen():
    st = state()
    try:
        visit = check_visit_id(request.form.get("visit_id"))
    except ValueError as e:
        return page(message=translate(str(e), g.lang), status=400)
    files = [f for f in request.files.getlist("file") if f.filename]
    if not files:
        return page(message=_(MESSAGES["choose"]), status=400)
    if len(files) > st.max_files:
        return page(message=_(MESSAGES["too_many"], n=st.max_files), status=413)
    ids = [e.id for e in screen_files(files, visit, images=True)]
    return redirect(url_for("index", show=",".join(map(str, ids))) + "#results", 303)


def clear_form():
    return render_template("clear.html", total=state().worklist.count())


def clear():
    if request.form.get("confirm") != "yes":
        return redirect(url_for("clear_form"), 303)
    state().worklist.clear()
    return redirect(url_for("index"), 303)


def login_form():
    if state().pin is None:
        return redirect(url_for("index"), 303)
    body = render_template("access.html", message=_(MESSAGES["enter_code"]), code_form=True,
                           next=safe_next(request.args.get("next")))
    return Response(body, 200, headers={"Content-Security-Policy": ACCESS_PAGE_POLICY})


def login():
    access = state().access
    address = request.remote_addr or "?"
    if access.pin is None:
        return redirect(url_for("index"), 303)
    if access.locked_out(address):
        return refuse(429, f"too many wrong access codes: wait {LOCKOUT_SECONDS} seconds")
    if not access.check_code(request.form.get("code", "").strip()):
        access.wrong_code(address)
        return refuse(403, "wrong access code")
    resp = redirect(safe_next(request.form.get("next")), 303)
    resp.set_cookie(ACCESS_COOKIE, access.token, httponly=True, samesite="Strict")
    return resp


@lru_cache(maxsize=1)
def favicon_png() -> bytes:
    """The page's icon, drawn here (no image file in the repository, nothing fetched): a white cross
    on the page's blue, 32 x 32."""
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((0, 0, 31, 31), 6, fill=(11, 79, 138, 255))
    d.rectangle((13, 6, 18, 25), fill="white")
    d.rectangle((6, 13, 25, 18), fill="white")
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def favicon():
    return Response(favicon_png(), mimetype="image/png", headers={"Cache-Control": "max-age=86400"})


# --- one result -------------------------------------------------------------------------------------
def entry(rid: int):
    e = state().worklist.get(rid)
    if e is None:
        abort(404)
    return e


def image_response(data):
    if not data:
        abort(404)
    return Response(data, mimetype="image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png")


def thumbnail(rid):
    return image_response(entry(rid).thumbnail)


def heatmap(rid):
    return image_response(entry(rid).heatmap)


def screened(rid: int):
    e = entry(rid)
    if not e.screening.ok:
        abort(Response(refuse(404, MESSAGES["no_slip"]).get_data(), 404,
                       headers={"Content-Security-Policy": ACCESS_PAGE_POLICY}))
    return e


def slip(rid):
    e = screened(rid)
    return render_template("slip.html", r=card(e), t=slip_lines(e, state().info, g.lang))


def slip_file(rid, kind):
    from . import __version__

    e = screened(rid)
    name = f"referral-slip-{local(e.screened_at):%Y%m%d-%H%M}-{e.id}.{kind}"
    return Response(slip_bytes(e, state().info, g.lang, kind, __version__),
                    mimetype="image/png" if kind == "png" else "application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# --- downloads and the API ----------------------------------------------------------------------------
def _csv_extra(values) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(values)
    return buf.getvalue().encode("utf-8")


def results_csv():
    """The list's search (a visit number, a day or a range of days) in the columns of `classify
    --output results.csv`, then visit_id and screened_at (local time, with its offset)."""
    found = filters()
    entries = state().worklist.find(**found, limit=None)
    head = CSV_HEADER.rstrip(b"\r\n") + b"," + _csv_extra(["visit_id", "screened_at"])
    body = b"".join(csv_row(localize(e.screening, g.lang)).rstrip(b"\r\n") + b","
                    + _csv_extra([e.visit_id or "", local(e.screened_at).isoformat(timespec="seconds")])
                    for e in entries)
    span = "-".join(request.args.get(k) for k in ("from", "to") if request.args.get(k)) or "all"
    name = f"edge-xray-results-{span}.csv"
    return Response(head + body, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})


def health():
    info = state().info
    body = {"status": "ok", "model": {k: info[k] for k in ("name", "version", "sha256")},
            "site_sha256": info["site_sha256"], "threshold": info["threshold"], "edge_xray": info["edge_xray"]}
    return json_response(body)


def api_classify():
    try:
        visit = check_visit_id(request.form.get("visit_id"))
    except ValueError as e:
        return refuse(400, str(e))
    files = request.files.getlist("file")
    if not files or not files[0].filename:
        return refuse(400, "send one scan in the multipart field 'file'")
    if len(files) > 1:
        return refuse(400, "one scan per request")
    (e,) = screen_files(files, visit, images=False)
    return json_response(localize(e.screening, g.lang).to_dict())  # the classify --json row


def api_results():
    visit, since, limit = arg_visit("visit_id"), arg_since("since"), arg_limit("limit")
    entries = state().worklist.find(visit_id=visit, since=since, limit=limit)
    return json_response([{**e.to_dict(), "advice": translate(e.screening.advice, g.lang)} for e in entries])
