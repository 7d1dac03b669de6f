"""The message catalogue: every message translated into every language, the compiled files up to
date, every refusal reason the code can give found in it, and `classify --lang`."""

from __future__ import annotations

import ast
import gettext
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_xray import decision, i18n
from edge_xray.cli import cli
from edge_xray.i18n import localize, negotiate, normalize, translate
from edge_xray.screen import Screening

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge_app"
LOCALE = PACKAGE / "locale"
LANGUAGES = ("fr", "pt", "es")
PLACEHOLDER = re.compile(r"\{[A-Za-z_]\w*\}")
NOT_REASONS = {"inputs.py"}  # its REASONS word the skipped-files summary, not a refusal


def po_messages(lang: str) -> dict:
    """msgid -> (msgstr, fuzzy) of LANG's .po file, read with a small parser (no Babel needed)."""
    text = (LOCALE / lang / "LC_MESSAGES" / "edge_xray.po").read_text(encoding="utf-8")
    out = {}
    for block in text.split("\n\n"):
        fuzzy = "#, fuzzy" in block or ", fuzzy" in block
        m = re.search(r'^msgid ((?:".*"\n?)+)msgstr ((?:".*"\n?)+)', block, re.M)
        if m:
            unquote = lambda s: "".join(json.loads(x) for x in re.findall(r'"(?:[^"\\]|\\.)*"', s))  # noqa: E731
            out[unquote(m.group(1))] = (unquote(m.group(2)), fuzzy)
    out.pop("", None)
    return out


def pot_ids() -> set:
    text = (LOCALE / "edge_xray.pot").read_text(encoding="utf-8")
    return {json.loads(x) for x in re.findall(r'^msgid ("(?:[^"\\]|\\.)*")$', text, re.M)} - {""}


def test_every_message_has_every_translation():
    ids = pot_ids()
    assert len(ids) > 150
    for lang in LANGUAGES:
        po = po_messages(lang)
        assert set(po) == ids, f"{lang}: run pybabel update (docs/screen.md)"
        for msgid, (msgstr, fuzzy) in po.items():
            assert msgstr.strip() and not fuzzy, f"{lang}: not translated: {msgid!r}"
            assert sorted(PLACEHOLDER.findall(msgstr)) == sorted(PLACEHOLDER.findall(msgid)), (lang, msgid)


def test_compiled_catalogues_match_their_sources():
    """The .mo files the device reads are those of the .po files (pybabel compile was run)."""
    for lang in LANGUAGES:
        with open(LOCALE / lang / "LC_MESSAGES" / "edge_xray.mo", "rb") as f:
            mo = gettext.GNUTranslations(f)
        for msgid, (msgstr, _) in po_messages(lang).items():
            assert mo.gettext(msgid) == msgstr, (lang, msgid)
    assert i18n.languages() == ("en", "es", "fr", "pt")


def test_catalogue_template_is_up_to_date():
    """Every message the code marks (N_, _g, gettext, the templates' _) is in edge_xray.pot."""
    extract = pytest.importorskip("babel.messages.extract", reason="Babel (the dev extra) extracts messages")
    found = set()
    method_map = [("edge_app/**.py", "python"), ("edge_app/web/templates/**.html", "jinja2")]
    keywords = {**extract.DEFAULT_KEYWORDS, "N_": None, "_g": None}
    for _, _, message, *_ in extract.extract_from_dir(str(ROOT), method_map, keywords=keywords):
        found.add(message if isinstance(message, str) else message[0])
    assert found - pot_ids() == set(), "run pybabel extract and update (docs/screen.md)"


# --- the refusal reasons in the code ---------------------------------------------------------------
def sample(node) -> str | None:
    """The text of a str constant, or of an f-string with "7" for every value in it."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "7" for v in node.values)
    return None


def code_reasons() -> dict:
    """Every reason text the package can give for a file it does not screen: the arguments of
    ImageError(...) and Screener._refused(...), the strings the gate's checks return, and module
    constants named *REASON or *REASONS."""
    found = {}
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            texts = []
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ImageError" and node.args:
                texts.append(sample(node.args[0]))
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "_refused" and len(node.args) > 2:
                texts.append(sample(node.args[2]))  # Screener._refused(path, status, reason)
            if path.name == "gate.py" and isinstance(node, ast.Return) and node.value is not None:
                texts.append(sample(node.value))
            if (isinstance(node, ast.Assign) and path.name not in NOT_REASONS and node in tree.body
                    and any(getattr(t, "id", "").endswith(("REASON", "REASONS")) for t in node.targets)):
                values = node.value.values if isinstance(node.value, ast.Dict) else getattr(node.value, "elts",
                                                                                             [node.value])
                texts.extend(sample(v) for v in values)
            for t in texts:
                if t and " " in t:
                    found[t] = path.name
    return found


def test_every_reason_in_the_code_is_in_the_catalogue():
    reasons = code_reasons()
    assert len(reasons) > 30 and "not an image file (unknown or corrupt format)" in reasons
    from edge_xray.gate import PLAIN

    texts = {**reasons, **{v: "gate.py" for v in PLAIN.values()},
             **{v.format(reason="image appears rotated or flipped"): "decision.py" for v in decision.ADVICE.values()},
             **{v: "decision.py" for v in decision.ANSWER_WORDS.values()}}
    for text, where in texts.items():
        for lang in LANGUAGES:
            assert translate(text, lang) != text, f"{where}: {text!r} is not in the {lang} catalogue"


@pytest.mark.parametrize("english, lang, expected", [
    ("Not screened: does not look like a chest X-ray: too much fine detail or sharp edges for a radiograph "
     "(text, texture, a photo or a screen?) (fine_detail +3.1 SD, limit 2.4)", "fr",
     "Non analysé : ne ressemble pas à une radiographie du thorax : trop de détails fins ou de contours nets "
     "pour une radiographie (texte, texture, photo ou écran ?) (fine_detail +3.1 SD, limit 2.4)"),
    ("patient aged 45 years: this screen is made for children aged 1 to 5", "es",
     "paciente de 45 años: este cribado está hecho para niños de 1 a 5 años"),
    ("not a chest X-ray (body part: HAND)", "pt", "não é uma radiografia do tórax (parte do corpo: HAND)"),
    ("CT image, not a radiograph: screen a chest X-ray", "fr",
     "image de scanner (CT), pas une radiographie : analysez une radiographie du thorax"),
    ("MR image, not a radiograph: screen a chest X-ray", "es",
     "imagen MR, no una radiografía: haga el cribado de una radiografía de tórax"),
    ("image too small (20x30 pixels, need at least 64 on each side)", "pt",
     "imagem demasiado pequena (20x30 píxeis, são precisos pelo menos 64 de cada lado)"),
    ("Not screened: lateral view: screen a frontal (front-to-back) chest X-ray", "es",
     "No cribado: proyección lateral: haga el cribado de una radiografía de tórax frontal"),
    ("something no catalogue has", "fr", "something no catalogue has"),
    ("Not screened: image appears rotated or flipped", "en", "Not screened: image appears rotated or flipped"),
    ("Not screened: image appears rotated or flipped", "xx", "Not screened: image appears rotated or flipped"),
])
def test_translate_matches_patterns_and_their_values(english, lang, expected):
    assert translate(english, lang) == expected


def test_language_choice():
    assert negotiate("fr-CA,fr;q=0.9,en;q=0.8") == "fr"
    assert negotiate("de, es-MX;q=0.8, pt;q=0.9") == "pt"  # q-values, not order
    assert negotiate("de, sw") == "en" and negotiate(None, "es") == "es" and negotiate("fr;q=0") == "en"
    assert normalize("pt_BR.UTF-8") == "pt" and normalize("ES") == "es" and normalize("de") is None
    row = Screening(path="a.png", status="rejected", advice="Not screened: blank or nearly uniform image",
                    error="blank or nearly uniform image")
    fr = localize(row, "fr")
    assert fr.advice == "Non analysé : image vide ou presque uniforme" and fr.error == row.error
    assert localize(row, "fr", error=True).error == "image vide ou presque uniforme"
    assert localize(row, "en") is row


def test_classify_lang_translates_the_words_not_the_fields(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    r = CliRunner().invoke(cli, ["classify", str(bad), "--lang", "pt"])
    assert r.exit_code == 3
    assert r.stderr.splitlines()[0] == f"{bad}: ERROR - não é um ficheiro de imagem (formato desconhecido ou corrompido)"
    r = CliRunner().invoke(cli, ["classify", str(bad), "--json"], env={"EDGE_XRAY_LANG": "es"})
    row = json.loads(r.stdout.splitlines()[0])
    assert row["advice"] == "No cribado: no es un archivo de imagen (formato desconocido o dañado)"
    assert row["error"] == "not an image file (unknown or corrupt format)" and "urgency" in row
    r = CliRunner().invoke(cli, ["classify", str(bad), "--lang", "klingon"])
    assert r.exit_code == 2 and "--lang" in r.output


def test_classify_lang_translates_the_batch_summary(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_text("hello")
    r = CliRunner().invoke(cli, ["classify", str(tmp_path / "a.png"), "--lang", "fr"])
    assert r.exit_code == 3 and r.stderr.splitlines()[-1] == (
        "bilan : 0 analysées (0 à référer aujourd'hui, 0 à référer, 0 sans pneumonie trouvée), 0 refusées, 1 erreur")
    r = CliRunner().invoke(cli, ["classify", str(tmp_path), "--lang", "es"])
    assert r.stderr.splitlines()[-1] == (
        "resumen: 0 cribadas (0 referir hoy, 0 referir, 0 sin neumonía encontrada), 0 rechazadas, 2 errores")
    r = CliRunner().invoke(cli, ["classify", str(tmp_path)])  # English, word for word as before
    assert r.stderr.splitlines()[-1] == "summary: 0 screened (0 refer today, 0 refer, 0 no pneumonia found), 0 refused, 2 errors"


def test_catalogues_and_page_files_are_package_data():
    """setup.cfg ships the compiled catalogues and the page's files (a wheel without them would serve
    English only, or nothing)."""
    from setuptools.config.setupcfg import read_configuration

    globs = read_configuration(str(ROOT / "setup.cfg"))["options"]["package_data"]["edge_xray"]
    shipped = {p.relative_to(PACKAGE).as_posix() for g in globs for p in PACKAGE.glob(g)}
    for lang in LANGUAGES:
        assert f"locale/{lang}/LC_MESSAGES/edge_xray.mo" in shipped
    for f in ("web/templates/index.html", "web/templates/clear.html", "web/static/app.js", "models/edge-xray-int8.tflite"):
        assert f in shipped
