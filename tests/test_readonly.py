"""Commands on a read-only file system with no writable temporary folder (issue 20, row 9).

A Raspberry Pi is often run from an SD card mounted read-only. Every command there used to end in a
traceback ("No usable temporary directory"): the runtime captured the TFLite runtime's C-level stderr
through a temporary file. Here real commands run in a private mount namespace (`unshare --mount`) where
/ (and /tmp, /var/tmp when they are mounts of their own) is bind-remounted read-only and TMPDIR points at
a folder that cannot be written. Root ignores permission bits, so a chmod would prove nothing: the test
needs root and unshare, and skips cleanly where they are not permitted.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from conftest import xray_like

READ_ONLY = r"""
set -e
mount --make-rprivate /
for d in / /tmp /var/tmp "$PWD"; do
    if [ "$d" = / ] || mountpoint -q "$d"; then mount -o bind "$d" "$d" && mount -o remount,bind,ro "$d"; fi
done
exec "$@"
"""
CLI = "import sys; from edge_xray.cli import cli; sys.argv[0] = 'edge-xray'; cli()"
TEMPFILE_PROBE = "import tempfile; tempfile.TemporaryFile()"


def in_read_only(args, cwd):
    env = dict(os.environ, TMPDIR=str(cwd / "no-such-folder"), HOME=str(cwd), PYTHONDONTWRITEBYTECODE="")
    return subprocess.run(["unshare", "--mount", "sh", "-c", READ_ONLY, "sh", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.fixture()
def read_only_dir(tmp_path):
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None or shutil.which("mountpoint") is None:
        pytest.skip("needs Linux with unshare and mountpoint")
    if os.geteuid() != 0:
        pytest.skip("needs root (a mount namespace with a read-only remount)")
    probe = in_read_only([sys.executable, "-c", TEMPFILE_PROBE], tmp_path)
    if "Read-only file system" not in probe.stderr and "No usable temporary directory" not in probe.stderr:
        pytest.skip(f"could not make a read-only file system here: {probe.stderr.strip()[-200:]}")
    return tmp_path


@pytest.mark.slow
def test_commands_work_on_a_read_only_file_system(read_only_dir):
    scan = read_only_dir / "scan.png"
    Image.fromarray(xray_like((300, 260), seed=3)).save(scan)
    before = sorted(p.name for p in read_only_dir.iterdir())
    r = in_read_only([sys.executable, "-c", CLI, "info"], read_only_dir)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "threshold" in r.stdout
    r = in_read_only([sys.executable, "-c", CLI, "classify", str(scan), "--json"], read_only_dir)
    assert "Traceback" not in r.stderr and r.returncode in (0, 3), r.stderr  # screened, or refused by the gate
    row = json.loads(r.stdout.splitlines()[0])
    assert row["path"].endswith("scan.png") and row["status"] in ("ok", "rejected")
    r = in_read_only([sys.executable, "-c", CLI, "bench", "--runs", "10"], read_only_dir)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    # a write the user asked for fails with one clear line, not a traceback
    r = in_read_only([sys.executable, "-c", CLI, "classify", str(scan), "--output", str(read_only_dir / "rows.csv")],
                     read_only_dir)
    assert "Traceback" not in r.stderr and r.returncode != 0
    # so do the page's worklist and a device key, which need a writable folder
    for args in (["serve", "--port", "0"], ["key", "init"]):
        r = in_read_only([sys.executable, "-c", CLI, *args], read_only_dir)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1].endswith("Read-only file system"), r.stderr
    assert sorted(p.name for p in read_only_dir.iterdir()) == before  # nothing was written


def test_stderr_capture_needs_no_temporary_folder(monkeypatch):
    """The capture of the runtime's C-level stderr works with no usable temporary folder."""
    import tempfile

    from edge_xray import runtime

    def no_tmp(*a, **k):
        raise FileNotFoundError(2, "No usable temporary directory found")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_tmp)
    monkeypatch.setattr(tempfile, "mkstemp", no_tmp)
    try:
        with runtime._filtered_stderr() as seen:
            os.write(2, (runtime.XNNPACK_INFO + "\n").encode())
    except OSError as e:  # pragma: no cover - the failure this test is for
        pytest.fail(f"stderr capture needs a temporary folder: {e}")
    assert seen is None or runtime.XNNPACK_INFO in seen
