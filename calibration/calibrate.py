"""`edge-xray calibrate`: a deterministic, stratified, near-duplicate-free representative set.

Strata: label (normal, bacterial, viral) x brightness tercile x contrast tercile of the raw image.
Images are preprocessed with the edge module and stored as uint8 (the prepared values are k/255
exactly) in CALIB.npz; CALIB.json is the manifest: source files with their sha256, strata counts,
and the sha256 of the .npz.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_xray import LABELS
from edge_xray.preprocess import file_sha256
from edge_xray.errors import InputError
from edge_xray.train.rundir import file_key
from edge_xray.train.data import load_images, near_duplicate_pairs, prepare_all, scan_folder
from edge_xray.train.model import DEFAULT_SIZE as DEFAULT_IMAGE_SIZE

DEFAULT_SIZE = 300  # images
BINS = 3  # terciles of brightness and of contrast



def calibrate(data_dir, out, size: int = DEFAULT_SIZE, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE) -> dict:
    """Write OUT (.npz) and its manifest (.json); returns the manifest."""
    out = Path(out)
    if out.suffix != ".npz":
        out = out.with_suffix(".npz")
    if size < 3:
        raise InputError(f"--size must be at least 3 (got {size})")
    items = scan_folder(data_dir)
    items, raw, skipped = load_images(items, 224)
    labels = np.array([i.label for i in items])
    present = sorted(set(labels.tolist()))
    if len(items) == 0 or 0 not in present or len(present) < 2:
        raise InputError(f"{data_dir}: needs readable NORMAL and PNEUMONIA images")
    # near-duplicates: keep the first of each pair
    drop = {int(j) for _, j in near_duplicate_pairs(raw)}
    keep = np.array([i for i in range(len(items)) if i not in drop])
    bright = raw.reshape(len(raw), -1).mean(1)
    contrast = raw.reshape(len(raw), -1).std(1)
    rng = np.random.default_rng(seed)
    chosen = []
    per_label = {c: size // len(present) + (1 if k < size % len(present) else 0) for k, c in enumerate(present)}
    strata = {}
    for c in present:
        idx = keep[labels[keep] == c]
        b_edges = np.quantile(bright[idx], np.linspace(0, 1, BINS + 1)[1:-1])
        c_edges = np.quantile(contrast[idx], np.linspace(0, 1, BINS + 1)[1:-1])
        cell = np.digitize(bright[idx], b_edges) * BINS + np.digitize(contrast[idx], c_edges)
        # round-robin over the cells, in a seeded random order inside each
        pools = [list(rng.permutation(idx[cell == k])) for k in range(BINS * BINS)]
        want, picked = min(per_label[c], len(idx)), []
        while len(picked) < want:
            for pool in pools:
                if pool and len(picked) < want:
                    picked.append(int(pool.pop()))
        chosen.extend(picked)
        strata[LABELS[c]] = len(picked)
    chosen = sorted(chosen)
    x = np.rint(prepare_all(raw[chosen], image_size)[..., 0] * 255).astype(np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=x, labels=labels[chosen].astype(np.uint8))
    manifest = {
        "format": "edge-xray calibration set v1",
        "npz": out.name,
        "npz_sha256": file_sha256(out),
        "image_size": image_size,
        "count": len(chosen),
        "seed": seed,
        "strata": "label x brightness tercile x contrast tercile; near-duplicates removed",
        "per_label": strata,
        "near_duplicates_dropped": len(drop),
        "skipped_unreadable": skipped,
        "files": [
            {"file": file_key(items[i].path), "label": LABELS[labels[i]],
             "sha256": file_sha256(items[i].path)}
            for i in chosen
        ],
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_calibration(path) -> tuple[np.ndarray, dict]:
    """(float images (n, s, s, 1) in [0, 1], manifest), checked against the manifest's sha256."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    mpath = path.with_suffix(".json")
    if not path.exists() or not mpath.exists():
        raise InputError(f"calibration set not found: {path} (with {mpath.name} beside it)")
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError:
        raise InputError(f"{mpath.name}: not valid JSON") from None
    if file_sha256(path) != manifest.get("npz_sha256"):
        raise InputError(f"{path.name}: sha256 differs from its manifest")
    try:
        with np.load(path) as z:
            x = z["images"]
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path.name}: unreadable calibration set ({e})") from None
    if x.ndim != 3 or len(x) == 0:
        raise InputError(f"{path.name}: the calibration set holds no images")
    return (x.astype(np.float32) / 255.0)[..., None], manifest
