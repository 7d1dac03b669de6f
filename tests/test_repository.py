"""The repository holds no pictures: any image of a scan (a screenshot, an overlay) copies the dataset."""

import shutil
import subprocess
from pathlib import Path

import pytest

from edge_xray.preprocess import IMAGE_SUFFIXES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_no_image_files_are_committed():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    images = [f for f in files if Path(f).suffix.lower() in (*IMAGE_SUFFIXES, ".gif", ".webp")]
    assert images == []
