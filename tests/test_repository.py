"""The repository holds no pictures: any image of a scan (a screenshot, an overlay) copies the dataset."""

import shutil
import subprocess
from pathlib import Path

import pytest

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
