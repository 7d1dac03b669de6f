"""The words the health worker reads, in the clinic's language: a gettext catalogue read at run time.

    from edge_xray.i18n import translate, localize
    translate("Not screened: image appears rotated or flipped", "fr")
    localize(screening, "pt")          # the row with its `advice` in Portuguese (field names unchanged)

The catalogue is gettext's: edge_app/locale/LANG/LC_MESSAGES/edge_xray.po (the text a translator
edits) compiled to edge_xray.mo (what the standard library's `gettext` reads here; Babel, a
development tool, extracts and compiles them: see docs/screen.md). A language is available when its
.mo file is there, so a clinic adds one by compiling a new catalogue into that folder.

Texts made by other modules (refusal reasons, advice) are translated here, at the output: the modules
that make them stay in English. A msgid with `{name}` placeholders is a pattern: it matches an English
text with any words or numbers in their place (a reason carrying a measurement, an age, a DICOM
value), and the translation gets the same values, each itself translated when the catalogue has it
(so "Not screened: {reason}" translates its reason too). The messages of other modules are listed for
extraction in edge_app/messages.py.
"""

from __future__ import annotations

import dataclasses
import gettext as _gettext
import os
import re
from functools import lru_cache
from pathlib import Path

DOMAIN = "edge_xray"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
SOURCE_LANGUAGE = "en"  # the language of the msgids
NAMES = {"en": "English", "fr": "Français", "pt": "Português", "es": "Español"}  # shown on the switch
ENV = "EDGE_XRAY_LANG"  # the command line's language when --lang is not given
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def N_(text: str) -> str:
    """Marks TEXT for extraction into the catalogue (pybabel extract -k N_); returns it unchanged."""
    return text


def languages() -> tuple:
    """The languages with a compiled catalogue, the source language first."""
    found = sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.mo"))
    return (SOURCE_LANGUAGE, *[x for x in found if x != SOURCE_LANGUAGE])


def normalize(lang) -> str | None:
    """An available language for a tag such as 'fr', 'pt-BR', 'es_ES.UTF-8'; None if there is none."""
    if not lang or not isinstance(lang, str):
        return None
    tag = lang.strip().split(".")[0].replace("_", "-").lower()
    available = languages()
    if tag in available:
        return tag
    base = tag.split("-")[0]
    return base if base in available else None


def negotiate(accept_language: str | None, default: str = SOURCE_LANGUAGE) -> str:
    """The best available language for an Accept-Language header (q-values honoured)."""
    choices = []
    for i, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        m = re.search(r"q=([0-9.]+)", params)
        if m:
            try:
                q = float(m.group(1))
            except ValueError:
                q = 0.0
        lang = normalize(tag)
        if lang and q > 0:
            choices.append((-q, i, lang))
    return min(choices)[2] if choices else default


def default_language() -> str:
    """$EDGE_XRAY_LANG when it names an available language, else English."""
    return normalize(os.environ.get(ENV)) or SOURCE_LANGUAGE


@lru_cache(maxsize=None)
def catalogue(lang: str) -> _gettext.NullTranslations:
    if lang == SOURCE_LANGUAGE:
        return _gettext.NullTranslations()
    return _gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[lang], fallback=True)


def gettext(text: str, lang: str | None) -> str:
    """TEXT (an exact msgid) in LANG; TEXT itself when the catalogue lacks it."""
    if not lang or lang == SOURCE_LANGUAGE or not text:
        return text
    return catalogue(lang).gettext(text)


@lru_cache(maxsize=None)
def patterns(lang: str) -> tuple:
    """(compiled regex, msgid, translation) of every msgid with placeholders in LANG's catalogue,
    the longest fixed text first (the most specific pattern wins)."""
    messages = getattr(catalogue(lang), "_catalog", {}) or {}
    found = []
    for msgid, msgstr in messages.items():
        if not isinstance(msgid, str) or not msgstr or not PLACEHOLDER.search(msgid):
            continue
        parts = PLACEHOLDER.split(msgid)  # text, name, text, name, ...
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+)" for i, p in enumerate(parts))
        try:
            found.append((re.compile(regex, re.S), msgid, msgstr, len(PLACEHOLDER.sub("", msgid))))
        except re.error:  # a name used twice: not a pattern
            continue
    found.sort(key=lambda x: -x[3])
    return tuple(x[:3] for x in found)


def translate(text: str | None, lang: str | None, _depth: int = 0) -> str | None:
    """TEXT (English, made anywhere in the package) in LANG: an exact catalogue entry, else the first
    pattern that matches it whole, its values translated in turn; else TEXT unchanged."""
    if not text or not lang or lang == SOURCE_LANGUAGE:
        return text
    exact = catalogue(lang).gettext(text)
    if exact != text or _depth > 3:
        return exact
    for regex, _msgid, msgstr in patterns(lang):
        m = regex.fullmatch(text)
        if m:
            values = {k: translate(v, lang, _depth + 1) for k, v in m.groupdict().items()}
            try:
                return msgstr.format(**values)
            except (KeyError, IndexError, ValueError):  # a translation naming other placeholders
                return text
    return text


def localize(s, lang: str | None, *, error: bool = False):
    """The Screening S with its `advice` (and with ERROR its `error`) in LANG; field names unchanged."""
    if not lang or lang == SOURCE_LANGUAGE:
        return s
    changes = {"advice": translate(s.advice, lang)}
    if error:
        changes["error"] = translate(s.error, lang)
    return dataclasses.replace(s, **changes)
