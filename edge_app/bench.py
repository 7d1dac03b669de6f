"""`edge-xray bench`: the device check after setup. Prints figures; asserts nothing.

Any `.tflite` image classifier can be timed, with its card or without one (then its input is fed
as a grey scan mapped to [0, 1], which does not change the timing).

Beside the figures it names what decides them: the runtime and its version, whether the XNNPACK
delegate was applied, the CPU model and its int8 features (edge_app/platform_info.py)."""

from __future__ import annotations

import io
import os
import resource
import sys
import time

import numpy as np
from PIL import Image

from .platform_info import platform_report
from .preprocess import decode_bytes, prepare
from .runtime import Model

RUNS = 200
WARMUP = 20
FULLRES = (2000, 1700)  # a synthetic full-resolution scan, when no image is given


def _synthetic_scan() -> bytes:
    rng = np.random.default_rng(0)
    w, h = FULLRES
    yy, xx = np.mgrid[0:h, 0:w]
    body = 160 * np.exp(-(((xx - w / 2) / (0.35 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2))
    img = np.clip(body + rng.normal(0, 8, (h, w)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def latency_ms(m: Model, runs: int) -> list[float]:
    x = np.random.default_rng(0).random((m.size, m.size), dtype=np.float32)
    for _ in range(WARMUP):
        m.run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        m.run(x)
        times.append((time.perf_counter() - t) * 1000)
    return times


def bench(model=None, threads: int | None = None, image=None, runs: int = RUNS) -> dict:
    m = Model(threads=threads) if model is None else Model.uncarded(model, threads=threads)
    times = latency_ms(m, runs)
    twin = None
    if m.card.get("float_model") and (m.path.parent / m.card["float_model"]).exists():
        twin = latency_ms(Model(m.path.parent / m.card["float_model"], threads=threads), runs)
    data = open(image, "rb").read() if image else _synthetic_scan()
    pre = []
    for _ in range(10):
        t = time.perf_counter()
        prepare(decode_bytes(data, m.size).image, m.size)
        pre.append((time.perf_counter() - t) * 1000)
    src = Image.open(io.BytesIO(data))
    return {
        "model": str(m.path),
        "model_format": m.card.get("format") or "tflite (no card)",
        "model_size_kb": round(os.path.getsize(m.path) / 1024, 1),
        **platform_report(m),  # runtime, its version, XNNPACK applied, CPU model and int8 features
        "threads": m.threads,
        "input": f"{m.size}x{m.size}x{m.channels}",
        "labels": list(m.labels),
        "model_ms_p50": round(float(np.percentile(times, 50)), 3),
        "model_ms_p95": round(float(np.percentile(times, 95)), 3),
        "runs": runs,
        **({"float_twin_ms_p50": round(float(np.percentile(twin, 50)), 3),
            "int8_speedup_over_float": round(float(np.percentile(twin, 50) / np.percentile(times, 50)), 2)}
           if twin else {}),
        "scan": image or f"synthetic {FULLRES[0]}x{FULLRES[1]} JPEG",
        "scan_size": list(src.size),
        "decode_preprocess_ms_p50": round(float(np.percentile(pre, 50)), 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "cpu_count": os.cpu_count(),
    }
