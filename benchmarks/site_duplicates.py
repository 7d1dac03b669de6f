"""How far apart the perceptual hashes of distinct scans and of copies of one scan lie: the measure
behind site.NEAR_DUPLICATE_BITS (`edge-xray site calibrate` counts scans this close as one).

    python benchmarks/site_duplicates.py [--data DATA_DIR] [--copies N]

DATA_DIR (default $EDGE_XRAY_DATA, else ../shared/data/chest_xray): the hash of every scan of its train/
split and the distances between every pair (pairs that close are checked pixel by pixel: a data set may
hold one scan twice). Then N scans of train/ (default 100) and every scan of fullres/ are copied as a site
might copy them (JPEG quality 95 and 50, PNG, resized to 1/2 and 1/4, resized and re-encoded) and the
largest distance between a scan and its copy is printed. The threshold must lie between the two.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edge_xray.preprocess import MIN_SIDE
from edge_xray.site import NEAR_DUPLICATE_BITS, file_hash, hamming

COPIES = (("JPEG 95", 95, 1), ("JPEG 50", 50, 1), ("PNG", None, 1), ("1/2", None, 2), ("1/4", None, 4),
          ("1/2 JPEG 75", 75, 2))


def scans(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".jpeg", ".jpg", ".png"))


def pixels(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p).convert("L"))


def pairs(files, hashes, limit: int):
    """(distance, a, b) of every pair at most LIMIT bits apart, and the histogram of all distances."""
    packed = np.array([np.frombuffer(h.to_bytes(32, "big"), np.uint8) for h in hashes])
    table = np.array([bin(i).count("1") for i in range(256)], np.int64)
    hist, close = np.zeros(257, np.int64), []
    for i in range(len(packed)):
        d = table[packed[i] ^ packed[i + 1:]].sum(-1)
        hist += np.bincount(d, minlength=257)
        close += [(int(d[j]), files[i], files[i + 1 + j]) for j in np.nonzero(d <= limit)[0]]
    return close, hist


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("EDGE_XRAY_DATA", "../shared/data/chest_xray"))
    ap.add_argument("--copies", type=int, default=100)
    a = ap.parse_args()
    data = Path(a.data)
    files = scans(data / "train")
    t0 = time.perf_counter()
    hashes = [file_hash(f) for f in files]
    print(f"{len(files)} scans of {data / 'train'} hashed in {time.perf_counter() - t0:.0f} s")
    close, hist = pairs(files, hashes, 2 * NEAR_DUPLICATE_BITS)
    same = [(d, x, y) for d, x, y in close if pixels(x).shape == pixels(y).shape and (pixels(x) == pixels(y)).all()]
    distinct = hist.copy()
    for d, _, _ in same:
        distinct[d] -= 1
    first = int(np.nonzero(distinct)[0][0])
    print(f"pairs of pixel-identical scans (one scan stored twice): {len(same)}, at distances "
          f"{sorted({d for d, _, _ in same})}; e.g. {same[0][1].name} = {same[0][2].name}" if same else
          "no pixel-identical pairs")
    print(f"distinct scans: smallest distance {first} bits; pairs at or below {NEAR_DUPLICATE_BITS}: "
          f"{int(distinct[:NEAR_DUPLICATE_BITS + 1].sum())} of {int(distinct.sum())}")
    rng = np.random.default_rng(0)
    worst, n = {}, 0
    with tempfile.TemporaryDirectory() as tmp:
        for f in itertools.chain(rng.choice(files, size=min(a.copies, len(files)), replace=False), scans(data / "fullres")):
            im = Image.open(f).convert("L")
            h, (w, ht), n = file_hash(f), im.size, n + 1
            for name, q, scale in COPIES:
                if min(w, ht) // scale < MIN_SIDE:
                    continue
                c = im if scale == 1 else im.resize((w // scale, ht // scale), Image.Resampling.LANCZOS)
                out = Path(tmp) / ("copy.jpg" if q else "copy.png")
                c.save(out, "JPEG" if q else "PNG", **({"quality": q} if q else {}))
                worst[name] = max(worst.get(name, 0), hamming(h, file_hash(out)))
    print(f"copies of {n} scans, largest distance to the original: {worst}")
    ok = first > NEAR_DUPLICATE_BITS >= max(worst.values())
    print(f"NEAR_DUPLICATE_BITS = {NEAR_DUPLICATE_BITS}: {'separates' if ok else 'does NOT separate'} them")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
