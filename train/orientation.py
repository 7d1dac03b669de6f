"""`edge-xray train-orientation`: a tiny int8 model that tells a scan's rotation (0, 90, 180, 270 degrees).

Self-supervised: every training scan is shown at the four rotations, and the label is the rotation.
The rotation is applied to the decoded 8-bit image BEFORE `edge_xray.preprocess.prepare`, exactly as
the device sees a rotated file. Mild augmentation (small rotations, zoom, aspect, blur, resampling,
noise, tone) comes from train/augment.py's pieces; a left-right mirror is applied to half of the
views, so that mirrored scans (dextrocardia, a film scanned from the back) stay "upright": the
model judges up and down, never the heart's side.

The split is the main model's: patient_split with the same seed and validation fraction on the same
224 px images, so the validation figures are on scans of patients the model never saw. Then a float
phase and a short quantization-aware phase (tensorflow-model-optimization). Training ends at a run
folder (qat.h5, calibration.npy, evaluation.npz with the validation views, config.json);
convert/auxiliary.py makes the full-integer int8 model and its card, with the validation figures of
the int8 model itself. Nothing here imports convert/.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edge_xray import __version__
from edge_xray.errors import InputError, UsageError
from edge_xray.orientation import ANGLES, CONFIDENCE, MODEL_NAME, rotate_clockwise

from . import augment as aug
from .data import SOURCE_SIZE, file_list_hash, load_images, patient_split, scan_folder, stratified_limit
from .model import ARCHITECTURES, build_model
from .rundir import write_auxiliary_run
from .tfcompat import tf_keras, tfmot

IMAGE_SIZE = 64  # px: orientation needs only the coarse layout (shoulders up, diaphragm down)
ARCH = "xs"  # train/model.py's smallest structure, with a 4-way head
DROP_BLOCKS = 1  # ... without its last (widest) block: half the parameters, the model file under 60 KB
DROPOUT = 0.1
BN_MOMENTUM = 0.9  # Keras' 0.99 lags too far behind in a few hundred steps: inference collapsed to one class
EPOCHS = 4  # float epochs; each shows every training scan at all four rotations
QAT_EPOCHS = 1
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
QAT_LEARNING_RATE = 2e-4
LABEL_SMOOTHING = 0.05
CALIBRATION_VIEWS = 300  # representative views written for the int8 converter
VAL_FRACTION = 0.15  # and seed 0 by default: the same split as `edge-xray train`
P_MIRROR = 0.5  # left-right mirrors keep their label: "upright" is about up and down only
# Mild augmentation: train/augment.py's ranges, with the tone ranges narrowed.
ROTATION_DEG = aug.ROTATION_DEG  # +-7 degrees
ZOOM = aug.ZOOM
ASPECT = aug.ASPECT
SHIFT = aug.SHIFT
GAMMA = (0.8, 1.25)
CONTRAST = (0.8, 1.2)
BLACK_LEVEL = (0, 20)


def _log(quiet, msg):
    if not quiet:
        print(msg, flush=True)


def view(gray: np.ndarray, k: int, size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The model's input for uint8 image GRAY turned K quarter turns clockwise (augmented if RNG given)."""
    im = Image.fromarray(gray)
    if rng is not None:
        im = aug.field_view(im, rng, rotation_deg=ROTATION_DEG, zoom=ZOOM, aspect=ASPECT, shift=SHIFT,
                            p_mirror=P_MIRROR, gamma=GAMMA, contrast=CONTRAST, black_level=BLACK_LEVEL)
    from edge_xray.preprocess import prepare

    return prepare(rotate_clockwise(im, ANGLES[k]), size)


def views(images: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image at the four rotations, un-augmented: (inputs (4n, size, size, 1), labels (4n,))."""
    x = np.stack([view(a, k, size) for a in images for k in range(4)])[..., None]
    y = np.tile(np.arange(4), len(images))
    return x, y


def build_orientation_model(image_size: int = IMAGE_SIZE, arch: str = ARCH, drop_blocks: int = DROP_BLOCKS,
                            classes: int = 4, name: str = "edge_xray_orientation"):
    """train/model.py's network (depthwise blocks, global pooling) without its last DROP_BLOCKS blocks,
    with a CLASSES-way linear head (4 rotations; the intended-use model uses it with its own classes)."""
    _, keras = tf_keras()
    L = keras.layers
    base = build_model(image_size, arch)
    for layer in base.layers:  # moving statistics that keep up with a short, fast schedule
        if isinstance(layer, L.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    n = len(ARCHITECTURES[arch]["blocks"])
    x = base.get_layer("features" if drop_blocks == 0 else f"b{n - 1 - drop_blocks}_relu").output
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dropout(DROPOUT, name="dropout")(x)
    out = L.Dense(classes, name="logits", kernel_regularizer=keras.regularizers.l2(1e-5))(x)
    return keras.Model(base.input, out, name=f"{name}_{arch}_{image_size}")


def _batches(images, size, batch_size, seed, epoch):
    """One epoch: every image at all four rotations, augmented, shuffled; made in threads."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng([seed, epoch])
    idx = np.repeat(np.arange(len(images)), 4)
    ks = np.tile(np.arange(4), len(images))
    order = rng.permutation(len(idx))
    if len(order) > batch_size:  # whole batches only: one traced training step
        order = order[: len(order) // batch_size * batch_size]
    seeds = rng.integers(0, 2**31, len(idx))  # one per view
    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
        for b in range(0, len(order), batch_size):
            sel = order[b : b + batch_size]
            xs = list(pool.map(lambda j: view(images[idx[j]], int(ks[j]), size, np.random.default_rng(seeds[j])), sel))
            yield np.stack(xs)[..., None].astype(np.float32), ks[sel]


def _fit(model, images, size, epochs, lr, batch_size, seed, val, quiet, phase, start_epoch=0):
    tf, keras = tf_keras()
    steps = max(1, 4 * len(images) // batch_size)
    total = max(1, epochs * steps)
    schedule = keras.optimizers.schedules.CosineDecay(lr, total, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=LABEL_SMOOTHING))
    history = []
    for e in range(epochs):
        t0 = time.time()
        losses = []
        for x, y in _batches(images, size, batch_size, seed, start_epoch + e):
            losses.append(float(model.train_on_batch(x, np.eye(4, dtype=np.float32)[y])))
        acc = float((model.predict(val[0], batch_size=256, verbose=0).argmax(1) == val[1]).mean())
        row = {"phase": phase, "epoch": e + 1, "loss": float(np.mean(losses)), "val_accuracy": acc,
               "seconds": round(time.time() - t0, 1)}
        history.append(row)
        _log(quiet, f"{phase} epoch {e + 1}/{epochs}  loss {row['loss']:.4f}  val_accuracy {acc:.4f}  "
                    f"{row['seconds']:.0f}s")
    return history


def rotation_report(probs: np.ndarray, truth: np.ndarray, confidence: float = CONFIDENCE) -> dict:
    """Per true rotation: recognised (confident and right), refused (not confident), wrong (confident, wrong)."""
    pred, conf = probs.argmax(1), probs.max(1) >= confidence
    out = {}
    for k, angle in enumerate(ANGLES):
        m = truth == k
        n = int(m.sum())
        out[str(angle)] = {"n": n, "recognised": round(float((conf & (pred == k))[m].mean()), 4) if n else None,
                           "refused": int((~conf)[m].sum()), "wrong": int((conf & (pred != k))[m].sum())}
    out["argmax_accuracy"] = round(float((pred == truth).mean()), 4)
    return out


def train_orientation(data_dir, run, epochs: int = EPOCHS, seed: int = 0, image_size: int = IMAGE_SIZE,
                      arch: str = ARCH, limit: int | None = None, qat_epochs: int = QAT_EPOCHS,
                      batch_size: int = BATCH_SIZE, quiet: bool = False) -> Path:
    """Train and write the run folder RUN (qat.h5, calibration.npy, evaluation.npz, config.json);
    convert/auxiliary.convert_orientation makes the int8 model and its card from it."""
    t_start = time.time()
    run = Path(run)
    if run.suffix == ".tflite":
        raise UsageError(f"the run folder must be a folder, not a model file ({run.name})")
    if run.exists() and any(run.iterdir()):
        raise UsageError(f"{run}: the run folder exists and is not empty")
    if image_size < 32 or image_size % 32:
        raise UsageError(f"image size must be a multiple of 32, at least 32 (got {image_size})")
    if arch not in ARCHITECTURES:
        raise UsageError(f"unknown architecture {arch!r} (choose from {', '.join(ARCHITECTURES)})")
    items = stratified_limit(scan_folder(data_dir), limit, seed)
    # The split is made on the 224 px images, exactly as `edge-xray train` makes it.
    items, images, skipped = load_images(items, SOURCE_SIZE)
    for s in skipped:
        _log(quiet, f"skipped unreadable image {s}")
    if len(items) == 0:
        raise InputError(f"{data_dir}: no readable images")
    tr, va, _ = patient_split(items, images, VAL_FRACTION, seed)
    source = min(SOURCE_SIZE, 2 * image_size)
    if source != SOURCE_SIZE:  # training views are made from a smaller copy (faster, same after prepare)
        images = np.stack([np.asarray(Image.fromarray(a).resize((source, source), Image.Resampling.BILINEAR))
                           for a in images])
    _log(quiet, f"data: {len(tr)} train / {len(va)} val scans (x4 rotations), {image_size} px")

    tf, keras = tf_keras()
    np.random.seed(seed)
    tf.random.set_seed(seed)
    keras.utils.set_random_seed(seed)
    model = build_orientation_model(image_size, arch)
    val = views(images[va], image_size)
    history = _fit(model, images[tr], image_size, epochs, LEARNING_RATE, batch_size, seed, val, quiet, "float")
    mot = tfmot()
    qat = mot.quantization.keras.quantize_model(model)
    history += _fit(qat, images[tr], image_size, qat_epochs, QAT_LEARNING_RATE, batch_size, seed, val, quiet,
                    "qat", start_epoch=epochs)

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tr), min(CALIBRATION_VIEWS, len(tr)), replace=False)
    cal = np.stack([view(images[tr[i]], int(rng.integers(4)), image_size) for i in pick])[..., None]
    mirrored = (np.stack([view(np.ascontiguousarray(a[:, ::-1]), 0, image_size) for a in images[va]])
                if len(va) else np.zeros((0, image_size, image_size), np.float32))
    config = {
        "name": MODEL_NAME,
        "version": __version__,
        "labels": [str(a) for a in ANGLES],
        "split": {"seed": seed, "val_fraction": VAL_FRACTION},
        "data": {"dir": Path(data_dir).name, "images": len(items), "train": int(len(tr)), "val": int(len(va)),
                 "file_list_sha256": file_list_hash(items), "skipped": len(skipped)},
        "recipe": {"image_size": image_size, "arch": arch, "drop_blocks": DROP_BLOCKS, "dropout": DROPOUT,
                   "bn_momentum": BN_MOMENTUM,
                   "head": "4-way linear", "epochs": epochs,
                   "qat_epochs": qat_epochs, "batch_size": batch_size, "learning_rate": LEARNING_RATE,
                   "qat_learning_rate": QAT_LEARNING_RATE, "label_smoothing": LABEL_SMOOTHING,
                   "seed": seed, "limit": limit, "val_fraction": VAL_FRACTION,
                   "labels": "self-supervised: each training scan turned by 0, 90, 180 and 270 degrees "
                             "before preprocessing",
                   "augmentation": {"ROTATION_DEG": ROTATION_DEG, "ZOOM": ZOOM, "ASPECT": ASPECT, "SHIFT": SHIFT,
                                    "P_MIRROR": P_MIRROR, "P_BLUR": aug.P_BLUR, "BLUR_RADIUS": aug.BLUR_RADIUS,
                                    "P_RESAMPLE": aug.P_RESAMPLE, "RESAMPLE_FACTOR": aug.RESAMPLE_FACTOR,
                                    "P_NOISE": aug.P_NOISE, "NOISE_SIGMA": aug.NOISE_SIGMA, "GAMMA": GAMMA,
                                    "CONTRAST": CONTRAST, "BLACK_LEVEL": BLACK_LEVEL},
                   "calibration_steps": int(len(cal))},
        "command": (f"edge-xray train-orientation DATA_DIR --out MODEL.tflite --epochs {epochs} --seed {seed}"
                    + (f" (image size {image_size}, limit {limit})" if image_size != IMAGE_SIZE or limit else "")),
    }
    config = write_auxiliary_run(run, qat, cal, dict(validation=val[0], validation_labels=val[1], mirrored=mirrored),
                                 config, model, history, t_start)
    _log(quiet, f"{run}: run folder written ({config['wall_seconds']:.0f}s)")
    return run


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `edge-xray train-orientation`")
