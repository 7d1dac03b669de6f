"""`edge-xray train-intended-use`: a tiny network that tells a frontal chest X-ray of a young child
(what the screen is made for) from an adult chest X-ray, a lateral view, another body part and a
non-X-ray. It ends at a run folder; convert/auxiliary.py makes the int8 model and its card.

Classes (edge_xray.intended_use.LABELS): 0 the intended use, 1 adult frontal chest, 2 lateral chest,
3 another body part, 4 not an X-ray.

Data:
- Positives: a Kermany-layout folder (NORMAL/, PNEUMONIA/), split by patient exactly as the bundled
  screening model was (train/data.patient_split, split seed SPLIT_SEED, fraction VAL_FRACTION): the
  validation patients are unseen by both models, and only the training part is learnt from.
- Real negatives: one or more folders, each with some of adult_frontal/, lateral/ and other_body/ and
  a labels.csv (file, ..., patientid, ..., collection). Each kind is split by patient id (a file
  without one is its own patient):
  a patient is held out when crc32("kind/patient") falls in the last HELD_OUT_FRACTION of the range,
  so the split does not depend on the order or number of files. The held-out part is never learnt from.
  A whole collection can be held out too (hold_out_collections), to measure on a collection never seen.
- Generated non-X-rays: calibration/negatives.py's development ("fit") instances; its held-out
  instances are kept for the report.

Every view is augmented, whatever its class, with the same pieces, so that none of them is a
shortcut to a class: a quarter turn (0, 90, 180, 270 degrees: a turned child scan is still in use,
the orientation model turns it back afterwards), a mirror, small rotations, zoom, aspect, crops,
pasted text, letters, arrows and borders (adult figures from journals carry them; the child scans do
not), tone, noise, blur, JPEG and resolution changes (edge enhancement too, when P_SHARPEN > 0). Each batch holds as many negatives as positives
(KIND_SHARES among the negative kinds; within a kind, a collection of n files is drawn with weight
n ** COLLECTION_BALANCE, so that one large collection does not stand for the whole kind). Images go
through edge_xray.preprocess.prepare at IMAGE_SIZE, as on the device. Since the refusal threshold is set by the lowest-scoring child scans, a share of the
positive views (HARD_POSITIVES) is drawn from the training child scans the model scores lowest,
re-scored after each epoch (the first epoch of each phase draws them all alike; the validation scans
are never scored). Likewise a share of each real negative kind's views (HARD_NEGATIVES) is drawn from
the files of that kind the model finds most child-like (held-out files are never scored).

The run folder (RUN) holds: qat.h5 (the quantization-aware Keras model), calibration.npy (prepared
training views for the int8 converter), evaluation.npz (prepared inputs of the validation scans, upright,
turned and under each site look of train/augment.SITE_LOOKS, the full-resolution scans, every held-out
negative and its kind), config.json (everything the card
records: data, recipe, history, versions, command). Only numpy, Pillow and TensorFlow are used; no
import of convert/.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from edge_xray import __version__
from edge_xray.decision import softmax
from edge_xray.errors import InputError, UsageError
from edge_xray.intended_use import LABELS, MODEL_NAME

from . import augment as aug
from .data import SOURCE_SIZE, file_list_hash, load_images, run_split
from .rundir import write_auxiliary_run

IMAGE_SIZE = 96  # px: 64 px (the orientation model's size, one shared input) refused fewer adult films
ARCH = "xsw"  # "xs" with its last two blocks 192 wide, not 128: 66 k parameters, ~106 KB int8 ("xs": 39 k, 75 KB)
DROP_BLOCKS = 0  # the whole structure (the orientation model drops one block of "xs")
EPOCHS = 36
QAT_EPOCHS = 2
VIEWS_PER_EPOCH = 4096  # half positives, half negatives
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
QAT_LEARNING_RATE = 2e-4
LABEL_SMOOTHING = 0.05
FOCAL_GAMMA = 0.0  # > 0: focal loss (easy views weigh less)
HARD_POSITIVES = 0.25  # share of the positive views drawn from the child scans the model scores lowest
HARD_QUANTILE = 0.05  # those: the lowest 5 % of training scans by P(in use), re-scored each epoch
HARD_NEGATIVES = 0.25  # share of each real negative kind's views drawn from its files the model scores highest
HARD_NEGATIVE_QUANTILE = 0.1  # those: the top 10 % of the kind's learnt-from files by P(in use), re-scored each epoch
SPLIT_SEED = 1  # the bundled screening model's split: its validation patients stay unseen here too
VAL_FRACTION = 0.15
HELD_OUT_FRACTION = 0.3  # of each real negative kind's patients
NEGATIVE_KINDS = ("adult_frontal", "lateral", "other_body")  # folders of the negatives, classes 1, 2, 3
NEGATIVE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff", ".bmp")
NOT_XRAY = 4  # class of the generated non-X-rays
KIND_SHARES = {1: 0.45, 2: 0.2, 3: 0.22, NOT_XRAY: 0.13}  # of the negatives in a batch
# Within a kind, a collection of n files is drawn with weight n ** COLLECTION_BALANCE (1: every file
# alike, so the largest collection dominates; 0: every collection alike, however small)
COLLECTION_BALANCE = 0.5
CALIBRATION_VIEWS = 300
# Augmentation (all classes alike)
P_MIRROR = 0.5
# Share of views shown upright; the rest are turned 90, 180 or 270 degrees alike. 0.25: every quarter
# turn alike (the draw of rounds 5-7, kept exactly). Real scans are nearly all upright.
P_UPRIGHT = 0.25
ROTATION_DEG = 10.0
ZOOM = (0.85, 1.2)
ASPECT = (0.75, 1.33)
SHIFT = 0.08
P_CROP, CROP = 0.3, (0.7, 1.0)  # keep this fraction of each side (negatives)
P_CROP_POSITIVE = 0.3  # child scans (tight crops of a child's film look like an adult's film)
P_ANNOTATE = 0.4  # text, letters, arrows
P_BORDER = 0.25
P_JPEG, JPEG_QUALITY = 0.3, (20, 90)
# Edge enhancement (train/augment.random_edge_enhance; radius in px at 224) on every class alike. Measured
# in round 7 at 0.3 (evidence.md): fewer refusals under the sharp site look, lower lowest child scores; not kept
P_SHARPEN, SHARPEN_RADIUS, SHARPEN_PERCENT = 0.0, (1.0, 6.0), (40, 200)
GAMMA = (0.7, 1.45)
CONTRAST = (0.75, 1.25)
BLACK_LEVEL = (0, 30)


def _log(quiet, msg):
    if not quiet:
        print(msg, flush=True)


@dataclass
class Negative:
    path: Path
    label: int  # 1, 2 or 3
    kind: str  # folder name
    patient: str
    held_out: bool
    collection: str = ""  # labels.csv's `collection`, else the negatives folder's name
    age: float | None = None  # years, labels.csv's `age` where it states one


def is_held_out(kind: str, patient: str, fraction: float = HELD_OUT_FRACTION) -> bool:
    """Held-out patients of a negative kind: by a hash of kind and patient id (order-free)."""
    return zlib.crc32(f"{kind}/{patient}".encode()) % 1000 >= round(1000 * (1 - fraction))


def _years(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def negative_files(neg_dirs, hold_out_collections=()) -> list[Negative]:
    """The real negatives of NEG_DIRS (one folder or several; each with some of adult_frontal/, lateral/,
    other_body/, and a labels.csv), each with its kind, patient id, collection and part. Every file of a
    collection named in HOLD_OUT_COLLECTIONS is held out (a measure on collections never learnt from).
    Raises InputError for a wrong layout."""
    dirs = [neg_dirs] if isinstance(neg_dirs, (str, Path)) else list(neg_dirs)
    hold_out_collections = {hold_out_collections} if isinstance(hold_out_collections, str) else set(hold_out_collections)
    out = []
    for root in map(Path, dirs):
        if not root.is_dir():
            raise InputError(f"{root}: not a folder")
        if not any((root / k).is_dir() for k in NEGATIVE_KINDS):
            raise InputError(f"{root}: expected sub-folders {', '.join(k + '/' for k in NEGATIVE_KINDS)} (found none)")
        rows = {}
        if (root / "labels.csv").exists():
            with open(root / "labels.csv", newline="") as f:
                rows = {r["file"]: r for r in csv.DictReader(f) if r.get("file")}
        for label, kind in enumerate(NEGATIVE_KINDS, start=1):
            if not (root / kind).is_dir():
                continue
            for p in sorted((root / kind).iterdir()):
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in NEGATIVE_SUFFIXES:
                    row = rows.get(f"{kind}/{p.name}", {})
                    patient = (row.get("patientid") or "").strip() or "file:" + p.name
                    collection = (row.get("collection") or "").strip() or root.name
                    held = collection in hold_out_collections or is_held_out(kind, patient)
                    out.append(Negative(p, label, kind, patient, held, collection, _years(row.get("age"))))
    if not out:
        raise InputError(f"{', '.join(map(str, dirs))}: no images in {', '.join(NEGATIVE_KINDS)}")
    unknown = set(hold_out_collections) - {n.collection for n in out}
    if unknown:
        raise InputError(f"no negatives of collection {', '.join(sorted(unknown))}")
    return out


def generated_negatives(part: str) -> list[tuple[str, Image.Image]]:
    """(name, grey image) of calibration/negatives.py's generators, PART "fit" or "held-out"."""
    from edge_xray.calibration.negatives import negatives

    return [(name, im) for name, _, im in negatives(part)]


def squash(im: Image.Image, side: int) -> np.ndarray:
    """A grey image as a SIDE x SIDE uint8 array (aspect not kept, as the training scans were made)."""
    if im.size != (side, side):
        im = im.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(im, np.uint8)


# --- augmentation -------------------------------------------------------------------------------
def _font(size: int):
    from edge_xray.heatmap import font

    return font(size)


def annotate(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Paste what journal figures and clinic exports carry: text, side letters, arrows."""
    im = im.copy()
    d = ImageDraw.Draw(im)
    w, h = im.size
    for _ in range(int(rng.integers(1, 4))):
        what = rng.integers(3)
        fill = int(rng.choice([0, 255, rng.integers(0, 256)]))
        if what == 0:  # a word or a code
            n = int(rng.integers(1, 9))
            text = "".join(rng.choice(list("ABCDEFGHIJKLMNOPRSTUVWXYZ0123456789 -:/"), n))
            d.text((int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h - 8))), text, fill=fill,
                   font=_font(int(rng.integers(max(6, h // 20), max(8, h // 7)))))
        elif what == 1:  # a side letter in a corner
            x = int(rng.choice([rng.integers(0, w // 6), rng.integers(w * 3 // 4, w - 8)]))
            y = int(rng.choice([rng.integers(0, h // 6), rng.integers(h * 3 // 4, h - 8)]))
            d.text((x, y), str(rng.choice(list("RLAPB"))), fill=fill, font=_font(int(rng.integers(max(6, h // 16), max(8, h // 6)))))
        else:  # an arrow
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            ang = rng.uniform(0, 2 * math.pi)
            ln = rng.uniform(0.08, 0.25) * w
            x1, y1 = x0 + ln * math.cos(ang), y0 + ln * math.sin(ang)
            width = max(1, int(rng.integers(1, max(2, w // 40))))
            d.line((x0, y0, x1, y1), fill=fill, width=width)
            hd = max(3.0, ln * 0.3)
            pts = [(x1, y1)] + [(x1 - hd * math.cos(ang + s * 0.5), y1 - hd * math.sin(ang + s * 0.5)) for s in (-1, 1)]
            d.polygon(pts, fill=fill)
    return im


def border(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A frame (white, black or grey) on some or all sides, as figures and screenshots have."""
    w, h = im.size
    fill = int(rng.choice([0, 255, rng.integers(0, 256)]))
    sides = [int(rng.uniform(0.02, 0.12) * w) if rng.random() < 0.7 else 0 for _ in range(4)]
    return ImageOps.expand(im, tuple(sides), fill=fill).resize((w, h), Image.Resampling.BILINEAR)


def crop(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    cw, ch = int(w * rng.uniform(*CROP)), int(h * rng.uniform(*CROP))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return im.crop((x, y, x + cw, y + ch))


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("L")


def view(gray: np.ndarray, size: int = IMAGE_SIZE, rng: np.random.Generator | None = None,
         k: int = 0, p_crop: float = P_CROP) -> np.ndarray:
    """The model's input for uint8 image GRAY (augmented, turned a random number of quarter turns,
    when RNG is given; else turned K quarter turns clockwise)."""
    from edge_xray.orientation import rotate_clockwise
    from edge_xray.preprocess import prepare

    im = Image.fromarray(gray)
    if rng is not None:
        k = quarter_turns(rng)
        if rng.random() < p_crop:
            im = crop(im, rng)
        if P_SHARPEN > 0 and rng.random() < P_SHARPEN:  # no draw when off: round 6's views stay as they were
            im = aug.random_edge_enhance(im, rng, SHARPEN_RADIUS, SHARPEN_PERCENT)
        if rng.random() < P_BORDER:
            im = border(im, rng)
        if rng.random() < P_ANNOTATE:
            im = annotate(im, rng)
        im = aug.field_view(im, rng, rotation_deg=ROTATION_DEG, zoom=ZOOM, aspect=ASPECT, shift=SHIFT,
                            p_mirror=P_MIRROR, gamma=GAMMA, contrast=CONTRAST, black_level=BLACK_LEVEL)
        if rng.random() < P_JPEG:
            im = jpeg(im, int(rng.integers(*JPEG_QUALITY)))
    return prepare(rotate_clockwise(im, 90 * k), size)


def quarter_turns(rng: np.random.Generator, p_upright: float | None = None) -> int:
    """A view's quarter turns clockwise: 0 with probability P_UPRIGHT (or P_UPRIGHT given), else 1, 2 or 3 alike."""
    p_upright = P_UPRIGHT if p_upright is None else p_upright
    if p_upright == 0.25:
        return int(rng.integers(4))  # one draw, as in rounds 5-7
    return 0 if rng.random() < p_upright else int(rng.integers(1, 4))


def prepared(images, size: int = IMAGE_SIZE, k: int = 0) -> np.ndarray:
    """Un-augmented inputs (n, size, size, 1) of uint8 images, each turned K quarter turns."""
    if len(images) == 0:
        return np.zeros((0, size, size, 1), np.float32)
    return np.stack([view(a, size, k=k) for a in images])[..., None].astype(np.float32)


# --- training ------------------------------------------------------------------------------------
def collection_weights(collections, balance: float = COLLECTION_BALANCE) -> np.ndarray:
    """Sampling weight of each negative within its kind: a collection of n files weighs n ** BALANCE in
    all (each of its files n ** (BALANCE - 1))."""
    collections = np.asarray(collections)
    _, inverse, counts = np.unique(collections, return_inverse=True, return_counts=True)
    return counts[inverse].astype(np.float64) ** (balance - 1.0)


def hardest_negatives(p_in_use: np.ndarray, labels: np.ndarray, quantile: float = HARD_NEGATIVE_QUANTILE) -> dict:
    """{class: indices} of the real negatives (classes 1 to 3) whose P(in use) is in the top QUANTILE of
    their class; a class without files is left out (generated non-X-rays are never drawn this way)."""
    out = {}
    for c in range(1, NOT_XRAY):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            out[c] = idx[p_in_use[idx] >= np.quantile(p_in_use[idx], 1 - quantile)]
    return out


def _batches(pos, neg, neg_labels, size, batch_size, views, seed, epoch, hard=None, neg_weights=None,
             hard_neg=None):
    """One epoch of VIEWS augmented views, half positives, half negatives (KIND_SHARES; within a kind,
    by NEG_WEIGHTS, else alike), shuffled."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng([seed, epoch])
    n_neg = views // 2
    n_pos = views - n_neg
    n_hard = int(round(HARD_POSITIVES * n_pos)) if hard is not None and len(hard) else 0
    picks = np.concatenate([rng.integers(0, len(pos), n_pos - n_hard), rng.choice(hard, n_hard)]) if n_hard else \
        rng.integers(0, len(pos), n_pos)
    src, lab = [("p", int(i)) for i in picks], [0] * n_pos
    shares = {c: s for c, s in KIND_SHARES.items() if (neg_labels == c).any()}
    total = sum(shares.values())
    for c, s in shares.items():
        idx = np.flatnonzero(neg_labels == c)
        m = int(round(n_neg * s / total))
        w = None if neg_weights is None else neg_weights[idx] / neg_weights[idx].sum()
        hn = hard_neg.get(c) if hard_neg else None
        n_hn = int(round(HARD_NEGATIVES * m)) if hn is not None and len(hn) else 0
        src += [("n", int(i)) for i in rng.choice(idx, m - n_hn, p=w)]
        src += [("n", int(i)) for i in rng.choice(hn, n_hn)] if n_hn else []
        lab += [c] * m
    order = rng.permutation(len(src))
    order = order[: len(order) // batch_size * batch_size]
    seeds = rng.integers(0, 2**31, len(src))
    lab = np.asarray(lab)

    def one(j):
        part, i = src[j]
        if part == "p":
            return view(pos[i], size, np.random.default_rng(seeds[j]), p_crop=P_CROP_POSITIVE)
        return view(neg[i], size, np.random.default_rng(seeds[j]))

    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
        for b in range(0, len(order), batch_size):
            sel = order[b : b + batch_size]
            xs = list(pool.map(one, sel))
            yield np.stack(xs)[..., None].astype(np.float32), lab[sel]


def _fit(model, pos, neg, neg_labels, size, epochs, lr, batch_size, views, seed, val, quiet, phase, start=0,
         neg_weights=None, pos_x=None, neg_x=None):
    """Train MODEL for EPOCHS; POS_X and NEG_X (un-augmented inputs of POS and NEG, prepared once by the
    caller) are scored after each epoch to draw the hard positives and negatives (when their shares are
    above 0)."""
    tf, keras = tf_keras()
    n = len(LABELS)
    total = max(1, epochs * (views // batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(lr, total, alpha=0.02)
    loss = (keras.losses.CategoricalFocalCrossentropy(gamma=FOCAL_GAMMA, alpha=1.0, from_logits=True,
                                                      label_smoothing=LABEL_SMOOTHING) if FOCAL_GAMMA > 0 else
            keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=LABEL_SMOOTHING))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
    history, hard, hard_neg = [], None, None
    pos_x = pos_x if HARD_POSITIVES > 0 else None
    neg_x = neg_x if HARD_NEGATIVES > 0 else None
    for e in range(epochs):
        t0 = time.time()
        losses = [float(model.train_on_batch(x, np.eye(n, dtype=np.float32)[y]))
                  for x, y in _batches(pos, neg, neg_labels, size, batch_size, views, seed, start + e, hard,
                                       neg_weights, hard_neg)]
        if pos_x is not None and e + 1 < epochs:  # the training child scans it now scores lowest (never validation)
            p_in = softmax(model.predict(pos_x, batch_size=256, verbose=0))[:, 0]
            hard = np.flatnonzero(p_in <= np.quantile(p_in, HARD_QUANTILE))
        if neg_x is not None and e + 1 < epochs:  # per real negative kind, the files it finds most child-like
            hard_neg = hardest_negatives(softmax(model.predict(neg_x, batch_size=256, verbose=0))[:, 0], neg_labels)
        pred = model.predict(val[0], batch_size=256, verbose=0).argmax(1)
        pos_kept = float((pred[val[1] == 0] == 0).mean()) if (val[1] == 0).any() else None
        neg_refused = float((pred[val[1] != 0] != 0).mean()) if (val[1] != 0).any() else None
        row = {"phase": phase, "epoch": e + 1, "loss": round(float(np.mean(losses)), 5),
               "val_in_use_kept": pos_kept, "held_out_negatives_refused": neg_refused,
               "seconds": round(time.time() - t0, 1)}
        history.append(row)
        _log(quiet, f"{phase} epoch {e + 1}/{epochs}  loss {row['loss']:.4f}  validation kept (argmax) "
                    f"{pos_kept:.4f}  held-out negatives refused (argmax) {neg_refused:.4f}  {row['seconds']:.0f}s")
    return history


def tf_keras():
    from .tfcompat import tf_keras as _tf_keras

    return _tf_keras()


def _load_negatives(negs, side, quiet):
    items, images, skipped = load_images(negs, SOURCE_SIZE)
    for s in skipped:
        _log(quiet, f"skipped unreadable negative {s}")
    return items, np.stack([squash(Image.fromarray(a), side) for a in images]) if len(items) else np.zeros((0, side, side), np.uint8)


def _fullres_inputs(fullres, size):
    """Prepared inputs of the full-resolution scans, decoded as the screen decodes them."""
    from edge_xray.inputs import list_images
    from edge_xray.preprocess import load_image, prepare

    paths = [p for p in list_images([fullres])] if fullres else []
    # the screen decodes at the screening model's size (128 px: JPEG draft at 256); the same here
    return [p.name for p in paths], (np.stack([prepare(load_image(p, 128), size) for p in paths])[..., None]
                                     if paths else np.zeros((0, size, size, 1), np.float32))


def _load_data(data_dir, negatives, image_size: int, limit=None, quiet: bool = True, hold_out_collections=()) -> dict:
    """Positives (split by patient) and negatives (learnt from / held out), kept at twice IMAGE_SIZE."""
    items, images, skipped, tr, va = run_split(data_dir, VAL_FRACTION, SPLIT_SEED, limit=limit)
    for s in skipped:
        _log(quiet, f"skipped unreadable image {s}")
    negs = negative_files(negatives, hold_out_collections)
    side = 2 * image_size  # views are made from images kept at this side
    images = np.stack([squash(Image.fromarray(a), side) for a in images])
    negs, neg_images = _load_negatives(negs, side, quiet)
    neg_labels = np.array([n.label for n in negs])
    held = np.array([n.held_out for n in negs], bool)
    gen_fit = generated_negatives("fit")
    gen_held = generated_negatives("held-out")
    return dict(
        items=items, images=images, skipped=skipped, tr=tr, va=va, negs=negs, neg_labels=neg_labels, held=held,
        gen_fit=gen_fit, gen_held=gen_held,
        train_neg=np.concatenate([neg_images[~held], np.stack([squash(im, side) for _, im in gen_fit])]),
        train_neg_labels=np.concatenate([neg_labels[~held], np.full(len(gen_fit), NOT_XRAY)]),
        train_neg_collections=np.array([f"{n.kind}/{n.collection}" for n in negs if not n.held_out]
                                       + ["not_xray/generated"] * len(gen_fit)),
        held_x=np.concatenate([neg_images[held], np.stack([squash(im, side) for _, im in gen_held])]),
        held_y=np.concatenate([neg_labels[held], np.full(len(gen_held), NOT_XRAY)]))


def _evaluation(d: dict, fullres, image_size: int) -> dict:
    """The run's evaluation arrays (evaluation.npz) from _load_data's DATA."""
    fr_names, fr_x = _fullres_inputs(fullres, image_size)
    val_x = d["images"][d["va"]]
    return dict(
        validation=prepared(val_x, image_size), validation_90=prepared(val_x, image_size, 1),
        validation_180=prepared(val_x, image_size, 2), validation_270=prepared(val_x, image_size, 3),
        validation_names=np.array([d["items"][i].path.name for i in d["va"]]),
        **{f"validation_{k}": prepared(np.stack([aug.site_look(a, k) for a in val_x]), image_size) for k in aug.SITE_LOOKS},
        fullres=fr_x, fullres_names=np.array(fr_names),
        held_out=prepared(d["held_x"], image_size), held_out_labels=d["held_y"],
        held_out_names=np.array([n.path.name for n in d["negs"] if n.held_out] + [name for name, _ in d["gen_held"]]),
        held_out_collections=np.array([n.collection for n in d["negs"] if n.held_out] + ["generated"] * len(d["gen_held"])),
        train_negatives=prepared(d["train_neg"], image_size), train_negative_labels=d["train_neg_labels"])


def evaluation_set(data_dir, negatives, fullres=None, image_size: int = IMAGE_SIZE, hold_out_collections=()) -> dict:
    """The evaluation arrays a run of DATA_DIR and NEGATIVES writes (evaluation.npz), without training:
    to measure (or re-threshold, convert/auxiliary.rethreshold_intended_use) a model already made."""
    return _evaluation(_load_data(data_dir, negatives, image_size, hold_out_collections=hold_out_collections),
                       fullres, image_size)


def train_intended_use(data_dir, negatives, run, fullres=None, epochs: int = EPOCHS, qat_epochs: int = QAT_EPOCHS,
                       seed: int = 0, views: int = VIEWS_PER_EPOCH, limit: int | None = None,
                       batch_size: int = BATCH_SIZE, drop_blocks: int = DROP_BLOCKS, image_size: int = IMAGE_SIZE,
                       hold_out_collections=(), quiet: bool = False) -> Path:
    """Train on DATA_DIR (positives) and NEGATIVES; write the run folder RUN; returns its path."""
    t_start = time.time()
    run = Path(run)
    if run.suffix == ".tflite":
        raise UsageError(f"--out for the run folder must be a folder, not a model file ({run.name})")
    if run.exists() and any(run.iterdir()):
        raise UsageError(f"{run}: the run folder exists and is not empty")
    d = _load_data(data_dir, negatives, image_size, limit, quiet, hold_out_collections)
    items, images, skipped, tr, va = d["items"], d["images"], d["skipped"], d["tr"], d["va"]
    neg_labels, held, gen_fit, gen_held = d["neg_labels"], d["held"], d["gen_fit"], d["gen_held"]
    train_neg, train_neg_labels, held_y = d["train_neg"], d["train_neg_labels"], d["held_y"]
    counts = {k: {"train": int(((neg_labels == i + 1) & ~held).sum()), "held_out": int(((neg_labels == i + 1) & held).sum())}
              for i, k in enumerate(NEGATIVE_KINDS)}
    counts["not_xray_generated"] = {"train": len(gen_fit), "held_out": len(gen_held)}
    neg_names = [Path(x).name for x in ([negatives] if isinstance(negatives, (str, Path)) else negatives)]
    collections = {}
    for n in d["negs"]:
        c = collections.setdefault(n.collection, {}).setdefault(n.kind, {"train": 0, "held_out": 0})
        c["held_out" if n.held_out else "train"] += 1
    _log(quiet, f"data: {len(tr)} training / {len(va)} validation scans; negatives (train / held out): "
                + ", ".join(f"{k} {v['train']}/{v['held_out']}" for k, v in counts.items()))

    tf, keras = tf_keras()
    np.random.seed(seed)
    tf.random.set_seed(seed)
    keras.utils.set_random_seed(seed)
    from .orientation import build_orientation_model

    model = build_orientation_model(image_size, ARCH, drop_blocks, classes=len(LABELS), name="edge_xray_intended_use")
    ev = _evaluation(d, fullres, image_size)  # prepared once: the per-epoch figures and scoring use them too
    val = (np.concatenate([ev["validation"], ev["held_out"]]), np.concatenate([np.zeros(len(va), int), held_y]))
    pos = images[tr]
    ready = dict(neg_weights=None if COLLECTION_BALANCE == 1.0 else collection_weights(d["train_neg_collections"]),
                 pos_x=prepared(pos, image_size) if HARD_POSITIVES > 0 else None, neg_x=ev["train_negatives"])
    history = _fit(model, pos, train_neg, train_neg_labels, image_size, epochs, LEARNING_RATE, batch_size, views,
                   seed, val, quiet, "float", **ready)
    from .tfcompat import tfmot

    qat = tfmot().quantization.keras.quantize_model(model)
    history += _fit(qat, pos, train_neg, train_neg_labels, image_size, qat_epochs, QAT_LEARNING_RATE, batch_size,
                    views, seed, val, quiet, "qat", start=epochs, **ready)

    rng = np.random.default_rng([seed, 999])
    cal_src = [pos[i] for i in rng.choice(len(pos), CALIBRATION_VIEWS // 2)]
    cal_src += [train_neg[i] for i in rng.choice(len(train_neg), CALIBRATION_VIEWS - len(cal_src))]
    calibration = np.stack([view(a, image_size, rng) for a in cal_src])[..., None]
    fr_names = ev["fullres_names"]
    config = {
        "name": MODEL_NAME,
        "version": __version__,
        "labels": list(LABELS),
        "image_size": image_size,
        "data": {
            "positives": {"dir": Path(data_dir).name, "images": len(items), "train": int(len(tr)),
                          "validation": int(len(va)), "file_list_sha256": file_list_hash(items),
                          "skipped": len(skipped), "split": f"patient_split, seed {SPLIT_SEED}, fraction {VAL_FRACTION} "
                                                            "(the bundled screening model's)"},
            "negatives": {"dirs": neg_names,
                          "counts": counts, "collections": collections,
                          "held_out": f"by patient id, crc32 of kind/patient, fraction {HELD_OUT_FRACTION}"
                                      + (f"; every file of {', '.join(hold_out_collections)}" if hold_out_collections else ""),
                          "generated": "calibration/negatives.py: fit instances for training, held-out ones kept"},
            "fullres": {"dir": Path(fullres).name if fullres else None, "images": len(fr_names)},
        },
        "recipe": {"image_size": image_size, "arch": ARCH, "drop_blocks": drop_blocks, "epochs": epochs,
                   "qat_epochs": qat_epochs, "views_per_epoch": views, "batch_size": batch_size,
                   "learning_rate": LEARNING_RATE, "qat_learning_rate": QAT_LEARNING_RATE,
                   "label_smoothing": LABEL_SMOOTHING, "focal_gamma": FOCAL_GAMMA, "hard_positives": HARD_POSITIVES,
                   "hard_quantile": HARD_QUANTILE, "hard_negatives": HARD_NEGATIVES,
                   "hard_negative_quantile": HARD_NEGATIVE_QUANTILE, "collection_balance": COLLECTION_BALANCE,
                   "seed": seed, "limit": limit, "kind_shares": KIND_SHARES,
                   "augmentation": {"P_MIRROR": P_MIRROR, "ROTATION_DEG": ROTATION_DEG, "ZOOM": ZOOM, "ASPECT": ASPECT,
                                    "SHIFT": SHIFT, "P_CROP": P_CROP, "P_CROP_POSITIVE": P_CROP_POSITIVE, "CROP": CROP, "P_ANNOTATE": P_ANNOTATE,
                                    "P_BORDER": P_BORDER, "P_JPEG": P_JPEG, "JPEG_QUALITY": JPEG_QUALITY,
                                    "P_SHARPEN": P_SHARPEN, "SHARPEN_RADIUS": SHARPEN_RADIUS, "SHARPEN_PERCENT": SHARPEN_PERCENT,
                                    "GAMMA": GAMMA, "CONTRAST": CONTRAST, "BLACK_LEVEL": BLACK_LEVEL,
                                    "quarter_turns": ("uniform 0, 90, 180, 270" if P_UPRIGHT == 0.25
                                                      else f"0 degrees {P_UPRIGHT:g}, 90, 180 and 270 alike"), "P_BLUR": aug.P_BLUR,
                                    "P_RESAMPLE": aug.P_RESAMPLE, "P_NOISE": aug.P_NOISE}},
        "command": ("edge-xray train-intended-use DATA_DIR" + "".join(f" --negatives {d}" for d in neg_names)
                    + f" --out MODEL.tflite --epochs {epochs} --seed {seed}" + (f" --limit {limit}" if limit else "")
                    + "".join(f" --hold-out-collection {c}" for c in hold_out_collections)),
    }
    config = write_auxiliary_run(run, qat, calibration, ev, config, model, history, t_start)
    _log(quiet, f"{run}: run folder written ({config['wall_seconds']:.0f}s)")
    return run


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `edge-xray train-intended-use`")
