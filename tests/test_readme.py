"""The README's Python example runs as written, and its commands name real options."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT


def python_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.slow
def test_readme_python_api_example_runs_as_written(data_dir):
    blocks = python_blocks()
    assert blocks, "the README has a Python API example"
    p = subprocess.run([sys.executable, "-c", blocks[0]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    first = p.stdout.splitlines()[0].split()
    assert first[0] in ("NORMAL", "PNEUMONIA") and 0.0 <= float(first[1]) <= 1.0
    assert "'status': 'ok'" in p.stdout
