"""`edge-xray serve` under load and at its limits: idle connections, over-size uploads, worklist size.

    python benchmarks/serve_limits.py [--exe .venv/bin/edge-xray] [--idle 200] [--scan FILE]

On one server (`--port 0`, a temporary --data-dir) it measures:
- the seconds GET /api/health takes while IDLE connections are open and left idle (none send a byte);
- what an upload over the limit gets back (status and type) from the page and from the API, at 70 MB
  (over the 64 MB limit) and at 200 MB (over what waitress lets through to the app);
- the bytes the worklist grows by per screening made through the page (row, thumbnail and heatmap).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from serve import DEFAULT_SCAN, post, start, stop  # benchmarks/serve.py: one way to start a server and post


def health_seconds(url: str) -> float:
    t0 = time.monotonic()
    with urllib.request.urlopen(url + "api/health", timeout=30) as r:
        r.read()
    return time.monotonic() - t0


def idle_figures(url: str, n: int) -> dict:
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(n)]
    try:
        time.sleep(0.5)
        times = [health_seconds(url) for _ in range(5)]
    finally:
        for s in socks:
            s.close()
    return {"idle_connections": n, "health_s_median": round(statistics.median(times), 3),
            "health_s_max": round(max(times), 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exe", default=shutil.which("edge-xray") or "edge-xray")
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--scan", type=Path, default=DEFAULT_SCAN)
    a = ap.parse_args()
    data_dir = tempfile.mkdtemp(prefix="edge-xray-bench-")
    p, url, _ = start(a.exe, data_dir)
    out = {}
    try:
        out["idle"] = idle_figures(url, a.idle)
        for mb in (70, 200):
            blob = os.urandom(1024 * 1024) * mb
            for path in ("screen", "api/classify"):
                status, kind, secs = post(url + path, "big.png", blob)
                out[f"upload_{mb}MB_{path}"] = {"status": status, "type": kind, "s": round(secs, 2)}
        db = Path(data_dir) / "worklist.sqlite3"
        scan = a.scan.read_bytes()
        post(url + "screen", a.scan.name, scan)
        before = sum(f.stat().st_size for f in Path(data_dir).glob("worklist.sqlite3*"))
        for _ in range(10):
            post(url + "screen", a.scan.name, scan)
        after = sum(f.stat().st_size for f in Path(data_dir).glob("worklist.sqlite3*"))
        out["worklist_bytes_per_screening"] = round((after - before) / 10)
        out["worklist_file"] = db.name
    finally:
        stop(p)
        shutil.rmtree(data_dir, ignore_errors=True)
    out["scan"] = a.scan.name
    out["load_average"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
