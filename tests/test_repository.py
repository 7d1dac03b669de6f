"""The repository itself: it holds no pictures (any image of a scan, a screenshot or an overlay, copies the
dataset); the tests import this checkout's package, never a second copy; the linter's rules hold."""

import importlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edge_xray
from edge_xray.preprocess import IMAGE_SUFFIXES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_no_image_files_are_committed():
    p = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"git ls-files failed: {p.stderr.strip()[:200]}")
    files = [f for f in p.stdout.split("\0") if f]
    images = [f for f in files if Path(f).suffix.lower() in (*IMAGE_SUFFIXES, ".gif", ".webp")]
    assert images == []


@pytest.mark.parametrize("package, folder", [("edge_xray", "edge_app"), ("edge_xray.train", "train"),
                                             ("edge_xray.convert", "convert"),
                                             ("edge_xray.calibration", "calibration")])
def test_the_tests_import_this_checkouts_package(package, folder):
    """An install of another checkout (or a stale wheel) in the venv would test other code silently."""
    here = Path(importlib.import_module(package).__file__).resolve()
    assert here == ROOT / folder / "__init__.py", (f"{package} is imported from {here}, not from this checkout: "
                                                    f"pip install -e {ROOT}")


def test_importing_the_source_folder_by_its_own_name_fails_clearly():
    """`import edge_app` from the repository's root would load a second copy of the package (its own
    module objects, constants and caches beside edge_xray's): it fails with one clear line instead."""
    p = subprocess.run([sys.executable, "-c", "import edge_app"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == (
        "ImportError: edge_app is the source folder of the package edge_xray: `import edge_xray` "
        "(install the checkout with `pip install -e .`), never the folder itself")
    assert "edge_app" not in sys.modules and edge_xray.__name__ == "edge_xray"


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed (the dev extra installs it)")
def test_ruff_check_is_clean():
    """The linter's rules (pyproject.toml) hold on the whole repository; .ci/run runs the same check."""
    p = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-1000:]
