"""The referral slip of one screened result: its lines (for the HTML page and the image alike) and an
A4 image drawn with Pillow (PNG or PDF download). Only screened rows have a slip; the date is the
device's local time with its UTC offset; every word is in the page's language."""

from __future__ import annotations

import io
import unicodedata
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .heatmap import font as builtin_font, wrap_text
from .i18n import N_, gettext as _g, translate
from .plain import RGB, chance, kind, local_time, urgency, words

SLIP_DPI = 150
SLIP_SIZE = (1240, 1754)  # A4 at SLIP_DPI
MARGIN = 90
# Fonts with the accents of every language of the catalogue, found among the system's fonts (Pillow
# looks in the usual folders: /usr/share/fonts on Linux, where Raspberry Pi OS and Debian install
# DejaVu). Without any, Pillow's own font, which has no accented letters: the slip then drops accents
# ("referência" -> "referencia") rather than print boxes.
FONT_FILES = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "NotoSans-Regular.ttf", "FreeSans.ttf", "Arial.ttf",
              "arial.ttf")
BLANKS = (N_("Child's name"), N_("Health worker's name"), N_("Health worker's signature"))


def slip_lines(e, info: dict, lang) -> dict:
    """What the slip of entry E says, in LANG."""
    s = e.screening
    detail = chance(s, lang) + (f" · {kind(s, lang)}" if kind(s, lang) else "")
    if e.audit_sha256:
        audit = (_g("Audit entry sha256", lang), e.audit_sha256)
    else:
        audit = (_g("Scan sha256 (no audit log on this device)", lang), s.input_sha256 or "")
    site = info["site_sha256"]
    model = _g("{name} version {version} (sha256 {sha}), threshold {threshold}, edge-xray {edge}", lang).format(
        name=info["name"], version=info["version"], sha=str(info["sha256"])[:12],
        threshold=f"{info['threshold']:.3f}", edge=info["edge_xray"])
    return {
        "title": _g("Pneumonia screening: referral slip", lang),
        "aid": _g("A screening aid, not a diagnosis. A clinician decides treatment.", lang),
        "facts": [(_g("Date", lang), local_time(e.screened_at)),
                  (_g("Visit number", lang), e.visit_id or "—"),
                  (_g("Site", lang), _g("site file sha256 {sha}", lang).format(sha=site[:12]) if site
                   else _g("no site file (the model card's threshold)", lang)),
                  (_g("Scan", lang), s.path)],
        "words": words(s, lang),
        "detail": detail,
        "advice": translate(s.advice or "", lang),
        "model": _g("Model: {model}", lang).format(model=model),
        "audit": audit,
        "blanks": [_g(b, lang) for b in BLANKS],
        "no_names": _g("The device stores no names.", lang),
        "pictures": (_g("Scan", lang), _g("Heatmap", lang)),
        "no_picture": (_g("no image", lang), _g("no heatmap for this result", lang)),
    }


@lru_cache(maxsize=16)
def font(size: int):
    """(a font at SIZE pixels with accented letters, True) or (Pillow's own font, False)."""
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, size), True
        except OSError:
            continue
    return builtin_font(size), False


def unaccented(text: str) -> str:
    """TEXT with its accents dropped (é -> e, ç -> c) and any other letter outside ASCII as "?", for a
    font that has only ASCII (the middle dot stays)."""
    out = []
    for c in text:
        c = {"°": "o", "—": "-", "…": "...", "\u00a0": " "}.get(c, c)
        if ord(c) < 128 or c == "·":
            out.append(c)
        else:
            plain = "".join(x for x in unicodedata.normalize("NFKD", c) if ord(x) < 128)
            out.append(plain or "?")
    return "".join(out)


def _lines(d, y, text, f, width, fill, step):
    for line in wrap_text(d, text, f, width):
        d.text((MARGIN, y), line, font=f, fill=fill)
        y += step
    return y


def _pictures(im, d, y, e, t, f_small):
    w = im.width
    box = ((w - 2 * MARGIN - 40) // 2, 520)
    x = MARGIN
    for png, note in zip((e.thumbnail, e.heatmap), t["no_picture"]):
        d.rectangle((x, y, x + box[0], y + box[1]), outline=(180, 180, 180))
        if png:
            pic = ImageOps.contain(Image.open(io.BytesIO(png)).convert("RGB"), (box[0] - 4, box[1] - 4))
            im.paste(pic, (x + (box[0] - pic.width) // 2, y + (box[1] - pic.height) // 2))
        else:
            d.text((x + 20, y + box[1] // 2 - 12), note, font=f_small, fill=(110, 110, 110))
        x += box[0] + 40
    return y + box[1] + 30


def render_slip(e, info: dict, lang) -> Image.Image:
    """The referral slip of entry E (with its thumbnail and heatmap) as an A4 image at SLIP_DPI."""
    w, h = SLIP_SIZE
    width = w - 2 * MARGIN
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    (f_title, accents), (f_big, _), (f_text, _), (f_small, _) = font(46), font(78), font(30), font(24)
    t = slip_lines(e, info, lang)
    if not accents:
        t = _unaccented(t)
    y = _lines(d, MARGIN, t["title"], f_title, width, "black", 60) + 6
    y = _lines(d, y, t["aid"], f_small, width, (60, 60, 60), 34) + 16
    for label, value in t["facts"]:
        y = _lines(d, y, f"{label}: {value}", f_text, width, "black", 44)
    y += 16
    colour = RGB[urgency(e.screening)]
    d.rectangle((MARGIN, y, w - MARGIN, y + 120), fill=colour)
    d.text((MARGIN + 30, y + 18), t["words"], font=f_big, fill="white")
    y = _lines(d, y + 140, t["detail"], f_text, width, "black", 42)
    y = _lines(d, y, t["advice"], f_text, width, colour, 42) + 20
    y = _pictures(im, d, y, e, t, f_small)
    y = _lines(d, y, t["model"], f_small, width, "black", 34)
    y = _lines(d, y, f"{t['audit'][0]}:", f_small, width, "black", 34)
    d.text((MARGIN, y), t["audit"][1], font=f_small, fill="black")
    y += 70
    x0 = MARGIN + 20 + max(d.textlength(f"{label}:", font=f_text) for label in t["blanks"])
    for label in t["blanks"]:
        d.text((MARGIN, y), f"{label}:", font=f_text, fill="black")
        d.line((x0, y + 34, w - MARGIN, y + 34), fill="black", width=2)
        y += 80
    d.text((MARGIN, h - MARGIN), t["no_names"], font=f_small, fill=(90, 90, 90))
    return im


def _unaccented(t):
    if isinstance(t, str):
        return unaccented(t)
    if isinstance(t, dict):
        return {k: _unaccented(v) for k, v in t.items()}
    return type(t)(_unaccented(v) for v in t) if isinstance(t, (list, tuple)) else t


def slip_file(e, info: dict, lang, kind_: str, version: str) -> bytes:
    """The slip as PNG or PDF bytes."""
    buf = io.BytesIO()
    im = render_slip(e, info, lang)
    if kind_ == "png":
        im.save(buf, "PNG", compress_level=6, dpi=(SLIP_DPI, SLIP_DPI))
    else:
        im.save(buf, "PDF", resolution=SLIP_DPI, title=t_title(lang), creator=f"edge-xray {version}")
    return buf.getvalue()


def t_title(lang) -> str:
    return _g("Pneumonia screening: referral slip", lang)
