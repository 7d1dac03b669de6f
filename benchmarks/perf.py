"""The performance table of this machine: what docs/model-card.md (Speed) quotes.

    python benchmarks/perf.py [--fullres FULLRES_DIR] [--runs N] [--repeats N] [--model FILE]

Prints, as a Markdown table: the CPU (model, int8 features), the runtime and its version, XNNPACK;
model latency p50/p95 of the int8 model and its float32 twin at 1 and 2 threads; the int8 latency
under any other installed runtime (tflite-runtime); decode + preprocess of the full-resolution scans;
cold start and peak memory of `edge-xray classify SCAN` (a fresh process, wall time); folder
throughput of `edge-xray classify FOLDER` over the full-resolution scans, with and without
`--heatmap DIR`, at 1 and 2 threads. The commands run are the installed `edge-xray` beside this
Python. Prints figures, asserts nothing. On a shared machine the figures move with the load: the
load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_xray.bench import latency_ms
from edge_xray.platform_info import cpu_info, features_line, platform_report, runtime_version
from edge_xray.inputs import list_images
from edge_xray.preprocess import load_image, prepare
from edge_xray.runtime import RUNTIME_ENV, RUNTIMES, Model

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGE_XRAY_DATA", ROOT.parent / "shared" / "data" / "chest_xray"))
THREADS = (1, 2)
RUNS = 1000  # model invocations per latency figure
REPEATS = 3  # process runs per cold-start and throughput figure
EDGE_XRAY = Path(sys.executable).parent / "edge-xray"


def pct(xs, q) -> float:
    return float(np.percentile(xs, q))


def span(xs, fmt="{:.2f}") -> str:
    """median (min-max) of repeated measurements."""
    lo, hi, mid = min(xs), max(xs), statistics.median(xs)
    return fmt.format(mid) + (f" ({fmt.format(lo)}-{fmt.format(hi)})" if len(xs) > 1 else "")


def run_cli(args: list[str], cwd: str) -> dict:
    """Run `edge-xray ARGS` to the end: wall time, peak RSS of the process, the times rows came out."""
    t0 = time.perf_counter()
    p = subprocess.Popen([str(EDGE_XRAY), *args], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    rows = []
    for line in p.stdout:  # click.echo flushes each row as it is known
        rows.append(time.perf_counter() - t0)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):
        sys.exit(f"edge-xray {' '.join(args)} failed ({code}): {err.strip()}")
    return {"wall": wall, "rows": rows, "peak_rss_mb": usage.ru_maxrss / 1024, "stderr": err}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fullres", default=str(DATA / "fullres"), help="a folder of full-resolution scans")
    ap.add_argument("--model", default=None)
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--repeats", type=int, default=REPEATS)
    args = ap.parse_args()
    scans = list_images([args.fullres])
    if not scans:
        sys.exit(f"no scans in {args.fullres} (give --fullres or set EDGE_XRAY_DATA)")
    if not EDGE_XRAY.exists():
        sys.exit(f"no edge-xray command beside {sys.executable}: pip install the package first")

    load0 = os.getloadavg()
    m = Model(args.model, threads=1)
    plat = platform_report(m)
    cpu = cpu_info()
    rows = []  # (what, figure, how)

    # model latency
    twin_path = m.path.parent / m.card["float_model"] if m.card.get("float_model") else None
    for threads in THREADS:
        for name, path in (("int8", m.path), ("float32 twin", twin_path)):
            if path is None or not Path(path).exists():
                continue
            t = latency_ms(Model(path, threads=threads), args.runs)
            rows.append((f"model latency, {name}, {threads} thread{'s' if threads > 1 else ''}",
                         f"p50 {pct(t, 50):.2f} ms, p95 {pct(t, 95):.2f} ms, min {min(t):.2f} ms",
                         f"{args.runs} runs after 20 warm-up"))

    # the other runtimes installed, each in its own process (two TFLite builds in one process conflict)
    for other in RUNTIMES:
        if other == plat["runtime"] or other == "tensorflow" or not runtime_version(other):
            continue
        env = {**os.environ, RUNTIME_ENV: other}
        out = subprocess.run([str(EDGE_XRAY), "bench", "--threads", "1", "--runs", str(min(args.runs, 300)),
                              "--json"] + (["--model", args.model] if args.model else []),
                             env=env, capture_output=True, text=True)
        if out.returncode == 0:
            b = json.loads(out.stdout)
            rows.append((f"model latency, int8, 1 thread, {other} {runtime_version(other)}",
                         f"p50 {b['model_ms_p50']:.2f} ms, p95 {b['model_ms_p95']:.2f} ms",
                         f"`{RUNTIME_ENV}={other} edge-xray bench --threads 1`"))

    # decode + preprocess of every full-resolution scan (files read once before, so from the page cache)
    for f in scans:
        prepare(load_image(f, m.size), m.size)
    pre, pixels = [], []
    for f in scans:
        t0 = time.perf_counter()
        im = load_image(f, m.size)
        prepare(im, m.size)
        pre.append((time.perf_counter() - t0) * 1000)
    with_sizes = [load_image(f).size for f in scans[:: max(1, len(scans) // 10)]]
    pixels = statistics.median(w * h for w, h in with_sizes) / 1e6
    rows.append((f"decode + preprocess, {len(scans)} full-resolution scans",
                 f"p50 {pct(pre, 50):.1f} ms, p95 {pct(pre, 95):.1f} ms", f"median image {pixels:.1f} Mpixel"))

    with tempfile.TemporaryDirectory() as tmp:
        # cold start: a fresh process classifying one scan
        one = str(scans[len(scans) // 2])
        runs = [run_cli(["classify", one, "--json"], tmp) for _ in range(args.repeats + 1)]
        rows.append(("cold `edge-xray classify SCAN` (process start to exit)",
                     span([r["wall"] for r in runs], "{:.2f}") + " s",
                     f"median (range) of {len(runs)} runs"))
        rows.append(("peak memory of that process", span([r["peak_rss_mb"] for r in runs], "{:.0f}") + " MB",
                     "max RSS (wait4)"))
        # folder throughput
        for heat in (False, True):
            for threads in THREADS:
                steady, overall = [], []
                for i in range(args.repeats):
                    extra = ["--heatmap", str(Path(tmp) / f"heat{i}")] if heat else []
                    r = run_cli(["classify", args.fullres, "--json", "--threads", str(threads), *extra], tmp)
                    n = len(r["rows"])
                    steady.append((n - 1) / (r["rows"][-1] - r["rows"][0]))
                    overall.append(n / r["wall"])
                rows.append((f"folder of {n} scans, {threads} thread{'s' if threads > 1 else ''}"
                             f"{', --heatmap DIR' if heat else ''}",
                             f"{span(steady, '{:.3g}')} scans/s",
                             f"steady (first to last row); {span(overall, '{:.3g}')} scans/s with start-up"))
    load1 = os.getloadavg()

    print(f"machine: {cpu['cpu_model']}, {cpu['architecture']}, {os.cpu_count()} cores; "
          f"int8 features: {features_line(cpu['int8_features'])}")
    print(f"runtime: {plat['runtime']} {plat['runtime_version']}, XNNPACK applied: {plat['xnnpack']}; "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    print(f"model: {m.path.name} ({m.card.get('format', '?')}, {os.path.getsize(m.path) / 1024:.0f} KB), "
          f"input {m.size}x{m.size}; scans: {args.fullres}")
    print(f"load average (1 min) before {load0[0]:.2f}, after {load1[0]:.2f}; niceness {os.nice(0)}")
    print()
    print("| what | figure | how |")
    print("|---|---|---|")
    for what, fig, how in rows:
        print(f"| {what} | {fig} | {how} |")


if __name__ == "__main__":
    main()
