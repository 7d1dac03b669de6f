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


def start(exe: str):
    t0 = time.monotonic()
    data_dir = tempfile.mkdtemp(prefix="edge-xray-bench-")  # a worklist of its own, not the user's
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


def post(url: str, path: Path) -> float:
    """Seconds for one multipart POST of PATH in the field `file` (redirects not followed)."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n")
    body = head.encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):
            return None

    t0 = time.monotonic()
    try:
        urllib.request.build_opener(NoRedirect).open(req, timeout=60).read()
    except urllib.error.HTTPError as e:
        if e.code != 303:
            raise
    return time.monotonic() - t0


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
        post(url + "api/classify", a.scan)  # warm-up
        api = [post(url + "api/classify", a.scan) for _ in range(5)]
        page = [post(url + "screen", a.scan) for _ in range(5)]
    finally:
        stop(p)
    spread = {"median": round(statistics.median(starts), 2), "min": round(min(starts), 2), "max": round(max(starts), 2)}
    print(json.dumps({"start_to_health_s": {**spread, "runs": a.runs},
                      "api_classify_s": {"median": round(statistics.median(api), 3), "runs": 5},
                      "page_screen_s": {"median": round(statistics.median(page), 3), "runs": 5},
                      "scan": a.scan.name, "load_average": os.getloadavg()[0]}, indent=2))


if __name__ == "__main__":
    main()
