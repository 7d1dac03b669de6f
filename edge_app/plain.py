"""Plain words for the health worker, in the page's language: the answer, the likelihood in words
and numbers, why a file was not screened and what to do next, a batch's summary, and local time.

The answer comes from the row's `urgency` (owned by edge_app/decision.py), never from its advice text.
Why a file was not screened is put in one of a few plain kinds (REFUSALS, matched on the English
reason); the reason itself is still shown, translated, under "Technical details".
"""

from __future__ import annotations

import datetime as dt

from .decision import ANSWER_WORDS, NOT_SCREENED, URGENCY_NONE, URGENCY_REFER, URGENCY_TODAY, likelihood
from .i18n import N_, gettext, translate

ORDER = (URGENCY_TODAY, URGENCY_REFER, URGENCY_NONE, None)  # the cards after a batch, most urgent first
CSS = {URGENCY_TODAY: "today", URGENCY_REFER: "refer", URGENCY_NONE: "normal", None: "none"}
RGB = {URGENCY_TODAY: (176, 0, 32), URGENCY_REFER: (168, 72, 0), URGENCY_NONE: (27, 110, 32), None: (85, 85, 85)}
SUMMARY = {URGENCY_TODAY: N_("{n} of {total}: refer today"),
           URGENCY_REFER: N_("{n} of {total}: refer within 2 days"),
           URGENCY_NONE: N_("{n} of {total}: no pneumonia found"),
           None: N_("{n} of {total}: not screened")}
# Why a file was not screened: (words found in the English reason, or a status; what it is; what to do)
REFUSALS = (
    ("rotated or flipped", N_("the X-ray appears rotated or flipped"),
     N_("turn the image upright on the X-ray unit or viewer, export it again and upload that file")),
    ("lateral view", N_("this is a side (lateral) view"),
     N_("upload the frontal (front-to-back) chest X-ray of the same child")),
    ("children aged 1 to 5", N_("this screen is made for children aged 1 to 5"),
     N_("do not use this screen for this patient: a clinician reads the X-ray")),
    ("rejected", N_("this file is not a chest X-ray"),
     N_("check that you chose the child's chest X-ray, then upload it again")),
    ("error", N_("this file could not be read as an image"),
     N_("export the X-ray again as PNG, JPEG or DICOM and upload that file")),
)


def urgency(s) -> str | None:
    """The row's urgency, None when it was not screened."""
    return s.urgency if s.ok else None


def css(s) -> str:
    return CSS[urgency(s)]


def words(s, lang) -> str:
    """The large words: REFER TODAY, REFER WITHIN 2 DAYS, No pneumonia found, Not screened."""
    u = urgency(s)
    return gettext(NOT_SCREENED if u is None else ANSWER_WORDS[u], lang)


def percent(p: float) -> str:
    """P as a whole percentage, never rounded to a certainty: "97 %", "> 99 %", "< 1 %" (no-break
    spaces: a line never ends inside one)."""
    if p > 0.99:
        return "> 99\u00a0%"
    if p < 0.01:
        return "< 1\u00a0%"
    return f"{round(100 * p)}\u00a0%"


def chance(s, lang) -> str:
    """P(pneumonia) in words and numbers: "very likely pneumonia (97 %)"."""
    return f"{gettext(likelihood(s.label, s.pneumonia_probability), lang)} ({percent(s.pneumonia_probability)})"


def kind(s, lang) -> str | None:
    """The pneumonia type: "likely bacterial (83 %)"; None for a normal or unscreened row."""
    if not s.ok or not s.pneumonia_type:
        return None
    return gettext("likely {type} ({percent})", lang).format(type=gettext(s.pneumonia_type, lang),
                                                                percent=percent(s.type_probability or 0.0))


def refusal(s, lang) -> dict | None:
    """For a row not screened: {"what": "Not screened: this file is not a chest X-ray", "todo": what to
    do, "reason": the technical reason (translated)}; None for a screened row."""
    if s.ok:
        return None
    reason = s.error or ""
    what, todo = next((w, t) for key, w, t in REFUSALS if key in reason or key == s.status or key == "error")
    return {"what": f"{gettext(NOT_SCREENED, lang)}: {gettext(what, lang)}",
            "todo": gettext(todo, lang), "reason": translate(reason, lang),
            "note": translate(s.note, lang)}


def summary(screenings, lang) -> list:
    """A batch in one line per urgency, the most urgent first: ["3 of 10: refer today", ...]."""
    total = len(screenings)
    counts = {u: sum(1 for s in screenings if urgency(s) == u) for u in ORDER}
    return [gettext(SUMMARY[u], lang).format(n=counts[u], total=total) for u in ORDER if counts[u]]


def by_urgency(entries) -> list:
    """ENTRIES (with a `screening`), the most urgent first, in their own order within an urgency."""
    return sorted(entries, key=lambda e: ORDER.index(urgency(e.screening)))


def offset(t: dt.datetime) -> str:
    """The UTC offset of an aware local time: "UTC+02:00", "UTC-03:30", "UTC"."""
    minutes = round(t.utcoffset().total_seconds() / 60)
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def local(t: dt.datetime) -> dt.datetime:
    """T (aware) in the device's time zone."""
    return t.astimezone()


def local_time(t: dt.datetime, with_date: bool = True) -> str:
    """T in the device's time zone with its offset: "2026-03-02 14:05 (UTC+02:00)"."""
    t = local(t)
    return f"{t:%Y-%m-%d %H:%M} ({offset(t)})" if with_date else f"{t:%H:%M:%S}"


def local_zone(now: dt.datetime | None = None) -> str:
    """The device's time zone for a heading: "CAT, UTC+02:00"."""
    t = local(now or dt.datetime.now(dt.timezone.utc))
    name = t.tzname() or ""
    return offset(t) if not name or name.startswith(("UTC", "+", "-")) else f"{name}, {offset(t)}"


def day_bounds(day: dt.date) -> tuple:
    """The local midnight starting DAY and the next one, as aware datetimes."""
    start = dt.datetime.combine(day, dt.time()).astimezone()
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time()).astimezone()
    return start, end
