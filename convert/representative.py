"""The representative set of a conversion: a `calibrate` file, or a folder of images.

A folder holds one sub-folder per class (its names are the labels, in sorted order, as Keras's
`image_dataset_from_directory` gives them) or images directly (no labels). Up to COUNT images are
taken, stratified by class (round-robin over the classes, a seeded random order inside each), read
and prepared with the one preprocessing module at the model's size. The record that goes into the
card hashes the list of files and their contents (`files_sha256`), so the set can be checked later.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_xray.errors import InputError
from edge_xray.preprocess import IMAGE_SUFFIXES, ImageError, file_sha256, load_and_prepare

COUNT = 300  # images taken from a folder (the converter uses them all; the gate fit too)
SEED = 0


@dataclass
class Representative:
    """Prepared grey images (n, size, size) in [0, 1], their class indices (or None), and the record."""

    x: np.ndarray
    y: np.ndarray | None
    class_names: list = field(default_factory=list)
    record: dict = field(default_factory=dict)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + (".gif", ".webp")
                  and not p.name.startswith("."))


def class_folders(folder) -> list[str]:
    """The sorted names of FOLDER's sub-folders that hold images."""
    root = Path(folder)
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and _images(d))


def from_folder(folder, size: int, count: int = COUNT, seed: int = SEED) -> Representative:
    """Up to COUNT prepared images of FOLDER, stratified by class sub-folder (see the module)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{folder}: not a folder of images")
    names = class_folders(root)
    pools = [_images(root / n) for n in names] if names else [_images(root)]
    if not any(pools):
        raise InputError(f"{folder}: no images (give class sub-folders of PNG/JPEG/... files)")
    rng = np.random.default_rng(seed)
    pools = [[pool[i] for i in rng.permutation(len(pool))] for pool in pools]
    chosen: list[tuple[int, Path]] = []
    while len(chosen) < count and any(pools):
        for c, pool in enumerate(pools):
            if pool and len(chosen) < count:
                chosen.append((c, pool.pop()))
    xs, ys, digest, skipped = [], [], hashlib.sha256(), 0
    for c, p in sorted(chosen, key=lambda t: str(t[1])):
        try:
            xs.append(load_and_prepare(p, size))
        except ImageError:
            skipped += 1
            continue
        ys.append(c)
        digest.update(f"{p.relative_to(root).as_posix()} {file_sha256(p)}\n".encode())
    if not xs:
        raise InputError(f"{folder}: none of its images could be read")
    y = np.array(ys)
    per_label = ({n: int((y == c).sum()) for c, n in enumerate(names)} if names else {"(unlabelled)": len(ys)})
    record = {"source": "folder of images", "count": len(xs), "per_label": per_label, "seed": seed,
              "stratified": "by class sub-folder" if names else "none (no class sub-folders)",
              "files_sha256": digest.hexdigest(), "unreadable": skipped}
    return Representative(np.stack(xs), y if names else None, names, record)


def from_calibration(path, size: int) -> Representative:
    """A set written by `edge-xray calibrate` (Kermany labels: 0 normal, 1 bacterial, 2 viral)."""
    from edge_xray.calibration.calibrate import load_calibration

    x, manifest = load_calibration(path)
    if x.shape[1] != size:
        raise InputError(f"calibration set is {x.shape[1]} px but the model takes {size} px "
                         f"(make one with `edge-xray calibrate --image-size {size}`)")
    labels = [{"NORMAL": 0, "BACTERIAL": 1, "VIRAL": 2}.get(f.get("label"), 0) for f in manifest.get("files", [])]
    y = np.array(labels) if len(labels) == len(x) else None
    record = {"source": "edge-xray calibrate", "npz_sha256": manifest["npz_sha256"], "count": manifest["count"],
              "per_label": manifest["per_label"], "seed": manifest["seed"]}
    return Representative(x[..., 0], y, ["NORMAL", "BACTERIAL", "VIRAL"], record)


def load(source, size: int) -> Representative:
    """A folder of images or a `calibrate` file (.npz, with its .json manifest)."""
    p = Path(source)
    return from_folder(p, size) if p.is_dir() else from_calibration(p, size)
