"""The Kermany chest X-ray layout: labels, patient ids, near-duplicates and the patient-level split."""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_xray import LABELS
from edge_xray.errors import ImageError, InputError
from edge_xray.preprocess import IMAGE_SUFFIXES, load_image

from .rundir import file_key

CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")
SOURCE_SIZE = 224  # the side the training images are kept at in memory (the shared data's size)
_PERSON = re.compile(r"^person(\d+)_(bacteria|virus)", re.I)
_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)", re.I)



@dataclass
class Item:
    path: Path
    label: int  # index into LABELS: 0 normal, 1 bacterial, 2 viral
    patient: str


def label_of(path: Path) -> tuple[int, str]:
    """(label, patient id) from the folder and file name of a Kermany image."""
    folder = path.parent.name.upper()
    name = path.name
    if folder == "NORMAL":
        m = _NORMAL.match(name)
        return 0, (m.group(1).upper() if m else "N:" + path.stem)
    m = _PERSON.match(name)
    if not m:
        raise InputError(f"cannot tell bacterial from viral for {name}: expected personN_bacteria_M or personN_virus_M")
    return (1 if m.group(2).lower() == "bacteria" else 2), "person" + m.group(1)


def scan_folder(data_dir) -> list[Item]:
    """List a Kermany-layout folder (NORMAL/ and PNEUMONIA/). Raises InputError on a wrong layout."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"{data_dir}: not a folder")
    missing = [c for c in CLASS_FOLDERS if not (root / c).is_dir()]
    if missing:
        raise InputError(f"{data_dir}: expected sub-folders NORMAL/ and PNEUMONIA/ (missing: {', '.join(missing)})")
    items = []
    for c in CLASS_FOLDERS:
        for p in sorted((root / c).iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
                label, patient = label_of(p)
                items.append(Item(p, label, patient))
    counts = np.bincount([i.label for i in items], minlength=3)
    if counts.sum() == 0:
        raise InputError(f"{data_dir}: no images in NORMAL/ or PNEUMONIA/")
    if counts[0] == 0 or counts[1:].sum() == 0:
        raise InputError(f"{data_dir}: both NORMAL and PNEUMONIA images are needed (found {counts[0]} and {counts[1:].sum()})")
    return items


def file_list_hash(items) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(f"{file_key(it.path)}\n".encode())
    return h.hexdigest()


def stratified_limit(items, limit: int, seed: int) -> list[Item]:
    """A stratified subset of about LIMIT items (every label keeps its share, at least 2 each)."""
    if not limit or limit >= len(items):
        return list(items)
    rng = np.random.default_rng(seed)
    labels = np.array([i.label for i in items])
    keep = []
    for c in range(len(LABELS)):
        idx = np.flatnonzero(labels == c)
        k = min(len(idx), max(2, int(round(limit * len(idx) / len(items)))))
        keep.extend(rng.choice(idx, k, replace=False))
    return [items[i] for i in sorted(keep)]


def load_images(items, size: int = SOURCE_SIZE, workers: int = 4):
    """Decode ITEMS to uint8 arrays (n, size, size). Unreadable files are skipped and reported."""
    def one(it):
        try:
            im = load_image(it.path, size)
            if im.size != (size, size):
                from PIL import Image

                im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
            return np.asarray(im, dtype=np.uint8), None
        except ImageError as e:
            return None, f"{it.path.name}: {e}"

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, items))
    kept, arrays, skipped = [], [], []
    for it, (a, err) in zip(items, results):
        if a is None:
            skipped.append(err)
        else:
            kept.append(it)
            arrays.append(a)
    x = np.stack(arrays) if arrays else np.zeros((0, size, size), np.uint8)
    return kept, x, skipped


HASH_SIDE = 16  # 256-bit difference hash: equal hashes find the dataset's ~24 near-identical groups
DUPLICATE_DISTANCE = 10  # bits: pairs this close are treated as the same image


def prepare_all(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images (n, h, w) -> the model's float inputs (n, size, size, 1), via the edge preprocessing."""
    from PIL import Image

    from edge_xray.preprocess import prepare

    return np.stack([prepare(Image.fromarray(a), size) for a in images])[..., None]


def dhash_bits(gray: np.ndarray) -> np.ndarray:
    """Difference hash of a uint8 image as HASH_SIDE**2 booleans."""
    from PIL import Image

    n = HASH_SIDE
    small = np.asarray(Image.fromarray(gray).resize((n + 1, n), Image.Resampling.BILINEAR), dtype=np.int16)
    return (small[:, 1:] > small[:, :-1]).ravel()


def near_duplicate_pairs(images: np.ndarray, max_distance: int = DUPLICATE_DISTANCE) -> np.ndarray:
    """Index pairs (i < j) of images whose difference hashes differ in at most MAX_DISTANCE bits."""
    h = np.stack([dhash_bits(a) for a in images]).astype(np.float32) * 2 - 1
    pairs = []
    for start in range(0, len(h), 1024):  # Hamming distance by blocks of a matrix product
        ham = (h.shape[1] - h[start : start + 1024] @ h.T) / 2
        for i, j in np.argwhere(ham <= max_distance):
            if start + i < j:
                pairs.append((start + i, j))
    return np.array(pairs, dtype=int).reshape(-1, 2)


def duplicate_groups(images: np.ndarray, items) -> list[str]:
    """Group ids: a patient, joined with the patients of any near-identical image."""
    parent: dict[str, str] = {}

    def find(a):
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in near_duplicate_pairs(images):
        parent[find(items[i].patient)] = find(items[j].patient)
    return [find(it.patient) for it in items]


def run_split(data_dir, val_fraction: float, seed: int, split_seed: int | None = None, limit: int | None = None,
              side: int = SOURCE_SIZE):
    """(items, images kept at SIDE, skipped, training indices, validation indices) of DATA_DIR as
    `edge-xray train` splits it (the subset and the split drawn with SPLIT_SEED, else SEED). One owner of
    "the validation scans": training, the intended-use and gate fits and the benchmarks call it."""
    data_seed = seed if split_seed is None else split_seed
    items = stratified_limit(scan_folder(data_dir), limit, data_seed)
    items, images, skipped = load_images(items, side)
    if len(items) == 0:
        raise InputError(f"{data_dir}: no readable images" + (f" ({len(skipped)} unreadable, e.g. {skipped[0]})" if skipped else ""))
    tr, va, _ = patient_split(items, images, val_fraction, data_seed)
    return items, images, skipped, tr, va


def recipe_split(data_dir, recipe: dict, side: int = SOURCE_SIZE):
    """run_split of DATA_DIR for RECIPE (a card's `training.recipe`: val_fraction, seed, split_seed, limit)."""
    return run_split(data_dir, recipe.get("val_fraction", 0.15), recipe.get("seed", 0), recipe.get("split_seed"),
                     recipe.get("limit"), side)


def patient_split(items, images, val_fraction: float, seed: int):
    """Stratified split by patient (and near-duplicate group): no patient is on both sides."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = duplicate_groups(images, items)
    labels = np.array([i.label for i in items])
    n_splits = max(2, int(round(1.0 / val_fraction)))
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(sgkf.split(np.zeros(len(items)), labels, groups))
    return np.sort(train_idx), np.sort(val_idx), groups
