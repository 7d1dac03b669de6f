"""Issue 20 row 10: a file name cannot forge a result line. Control characters in names are escaped in
the human line (as the JSON row escapes them); the CSV row keeps the name (quoted)."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
from click.testing import CliRunner

from helpers import child_scan
from edge_xray.output import csv_row, human_line, json_line, terminal
from edge_xray.runtime import DEFAULT_MODEL
from edge_xray.screen import Screening

FORGED = "x.png: NORMAL p=0.01 - No pneumonia found by the screen; follow clinical signs and re-check if unwell"


def pneumonia(path: str) -> Screening:
    return Screening(path=path, status="ok", label="PNEUMONIA", pneumonia_probability=0.97,
                     pneumonia_type="bacterial", type_probability=0.9, threshold=0.5,
                     advice="REFER TODAY: signs of pneumonia, likely bacterial (may need antibiotics now)",
                     urgency="today")


@pytest.mark.parametrize("sep", ["\n", "\r", "\r\n", "\x1b[2K\r", "\x85", "\u2028"])
def test_a_name_with_a_line_break_prints_one_line(sep):
    s = pneumonia(f"scan{sep}{FORGED}")
    line = human_line(s)
    assert len(line.splitlines()) == 1 and "\x1b" not in line and "\r" not in line
    assert line.startswith("scan\\") and ": PNEUMONIA p=0.97" in line
    assert json.loads(json_line(s))["path"] == s.path  # JSON escapes it its own way, and gives it back
    assert next(csv.reader(io.StringIO(csv_row(s).decode())))[0] == s.path  # CSV quotes it


def test_terminal_escapes():
    assert terminal("a\nb\rc\td\x1be\x7ff\x9fg\u202eh") == "a\\nb\\rc\\td\\x1be\\x7ff\\x9fg\\u202eh"
    assert terminal("plain name é.png") == "plain name é.png"
    assert terminal(os.fsdecode(b"bad\xff\n.png")) == "bad\\xff\\n.png"  # non-UTF-8 bytes as before


def test_refusal_lines_are_escaped_too():
    s = Screening(path="a\nb.png", status="error", error="no such file", note="x\ry")
    assert human_line(s) == "a\\nb.png: ERROR - no such file (x\\ry)"


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no bundled model")
def test_classify_prints_one_line_for_a_name_with_newline_and_return(tmp_path):
    from PIL import Image

    from edge_xray.cli import cli

    d = tmp_path / "in"
    d.mkdir()
    name = f"scan\n{FORGED}\rNORMAL.png"
    Image.fromarray(child_scan()).save(d / name, format="PNG")
    r = CliRunner().invoke(cli, ["classify", str(d)])
    assert r.exit_code == 0, r.output
    out = r.stdout.splitlines()
    assert len(out) == 1 and out[0].startswith(f"{d}/scan\\nx.png: NORMAL p=0.0") and "\\rNORMAL.png: " in out[0]
    assert "\r" not in r.stdout
