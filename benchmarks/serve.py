"""`edge-xray serve` timings: start to the first good GET /api/health, and the time of a screening.

    python benchmarks/serve.py [--runs 10] [--exe .venv/bin/edge-xray] [--scan FILE]

Starts `edge-xray serve --port 0` RUNS times (stopped with SIGTERM each time) and reports the seconds
from starting the process to the first successful GET /api/health; then, on one more server, times
POST /api/classify (the JSON row) and POST /screen (the page: thumbnail and heatmap too) of SCAN.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("EDGE_XRAY_DATA", ROOT.parent / "shared" / "data" / "chest_xray"))
DEFAULT_SCAN = DEFAULT_DATA / "fullres" / "PNEUMONIA" / "person1077_bacteria_3017.jpeg"


def start(exe: str, data_dir: str | None = None):
    """(process, url, seconds from start to the first good GET /api/health) of `EXE serve --port 0`, with a
    worklist of its own (DATA_DIR, default a new temporary folder), never the user's."""
    t0 = time.monotonic()
    data_dir = data_dir or tempfile.mkdtemp(prefix="edge-xray-bench-")
    p = subprocess.Popen([exe, "serve", "--port", "0", "--data-dir", data_dir], stdout=subprocess.PIPE, text=True)
    url = re.search(r"http://\S+/", p.stdout.readline()).group(0)
    while True:
        try:
            with urllib.request.urlopen(url + "api/health", timeout=2) as r:
                if r.status == 200:
                    return p, url, time.monotonic() - t0
        except OSError:
            time.sleep(0.01)


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(30)


def post(url: str, name: str, body_bytes: bytes):
    """(status, content type, seconds) of a multipart POST of BODY_BYTES as the field `file` (redirects
    not followed: the page answers a screening with 303); status None when the server closed the
    connection instead of answering."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    body = head + body_bytes + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):
            return None

    t0 = time.monotonic()
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=120) as r:
            r.read()
            return r.status, r.headers.get_content_type(), time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get_content_type(), time.monotonic() - t0
    except (urllib.error.URLError, ConnectionError):  # the server closed the connection (an over-size body)
        return None, "connection closed", time.monotonic() - t0


def screen_seconds(url: str, path: Path) -> float:
    """Seconds to screen PATH by one POST (the API's 200 or the page's 303)."""
    status, _, secs = post(url, path.name, path.read_bytes())
    if status not in (200, 303):
        raise RuntimeError(f"{url}: HTTP {status}")
    return secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--exe", default=shutil.which("edge-xray") or "edge-xray")
    ap.add_argument("--scan", type=Path, default=DEFAULT_SCAN)
    a = ap.parse_args()
    starts = []
    for _ in range(a.runs):
        p, _, t = start(a.exe)
        starts.append(t)
        stop(p)
    p, url, _ = start(a.exe)
    try:
        screen_seconds(url + "api/classify", a.scan)  # warm-up
        api = [screen_seconds(url + "api/classify", a.scan) for _ in range(5)]
        page = [screen_seconds(url + "screen", a.scan) for _ in range(5)]
    finally:
        stop(p)
    spread = {"median": round(statistics.median(starts), 2), "min": round(min(starts), 2), "max": round(max(starts), 2)}
    print(json.dumps({"start_to_health_s": {**spread, "runs": a.runs},
                      "api_classify_s": {"median": round(statistics.median(api), 3), "runs": 5},
                      "page_screen_s": {"median": round(statistics.median(page), 3), "runs": 5},
                      "scan": a.scan.name, "load_average": os.getloadavg()[0]}, indent=2))


if __name__ == "__main__":
    main()
