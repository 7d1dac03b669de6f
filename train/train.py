"""`edge-xray train`: float phase with augmentation, then quantization-aware fine-tuning.

The run folder holds everything needed to reproduce and audit a run:
  config.json    every hyperparameter, seed, data counts, file-list hash, package versions
  split.json     the patient-level split (patients and counts on each side)
  history.json   one row per epoch, both phases
  metrics.json   validation (and training-set) metrics of the QAT model, temperature, threshold,
                 ECE before and after, shift-proxy figures
  float.h5       the best float model;  qat.h5  the QAT model that `convert` uses
  state.json, ckpt/   the last checkpoint, for --resume
"""

from __future__ import annotations

import json
import math
import os
import platform
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_xray import LABELS, metrics

from . import augment as aug
from .data import (SOURCE_SIZE, DataError, file_list_hash, load_images, patient_split, prepare_all, scan_folder,
                   stratified_limit)
from .model import ARCHITECTURES, DEFAULT_ARCH, DEFAULT_SIZE, build_model, multiply_adds
from .tfcompat import tf_keras, tfmot

STRATEGIES = ("default", "mirrored", "multi-worker")
DEFAULT_EPOCHS = 24
DEFAULT_QAT_EPOCHS = 4
DISTILL_ALPHA = 0.5  # weight of the teachers' probabilities in the training targets


@dataclass
class TrainConfig:
    epochs: int = DEFAULT_EPOCHS
    qat_epochs: int = DEFAULT_QAT_EPOCHS
    image_size: int = DEFAULT_SIZE
    arch: str = DEFAULT_ARCH
    batch_size: int = 32
    learning_rate: float = 2e-3
    qat_learning_rate: float = 1e-4
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    val_fraction: float = 0.15
    sensitivity_target: float = metrics.SENSITIVITY_TARGET
    threshold_cap: float = metrics.MAX_THRESHOLD
    # issue 9: the default operating point (metrics.choose_operating_point); the two above are the legacy rule
    operating_target: float = metrics.OPERATING_TARGET
    operating_confidence: float = metrics.OPERATING_CONFIDENCE
    shift_swap: float = 0.0  # share of training images given the other class's acquisition look (aug.shift_proxy)
    limit: int | None = None
    seed: int = 0
    strategy: str = "default"
    teachers: list = field(default_factory=list)  # names of the runs distilled from
    distill_alpha: float = DISTILL_ALPHA
    augmentation: dict = field(default_factory=lambda: {
        k: getattr(aug, k) for k in (
            "ROTATION_DEG", "SHIFT", "ZOOM", "ASPECT", "P_BLUR", "BLUR_RADIUS", "P_RESAMPLE",
            "RESAMPLE_FACTOR", "P_NOISE", "NOISE_SIGMA", "GAMMA", "CONTRAST", "BLACK_LEVEL")
    })


class TrainError(RuntimeError):
    """A run that cannot start or continue (one-line message)."""

    exit_code = 1


def _log(quiet, msg):
    if not quiet:
        print(msg, flush=True)


def _versions():
    import importlib.metadata as md

    out = {"python": platform.python_version(), "machine": platform.machine()}
    for pkg in ("tensorflow", "tf-keras", "tensorflow-model-optimization", "numpy", "pillow", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Normal and pneumonia weigh the same in total; bacterial and viral split pneumonia's half."""
    counts = np.bincount(labels, minlength=3).astype(np.float64)
    n = counts.sum()
    w = np.zeros(3)
    w[0] = n / 2 / counts[0]
    w[1:] = [n / 4 / counts[c] if counts[c] else 0.0 for c in (1, 2)]
    return w


def make_strategy(name: str):
    tf, _ = tf_keras()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=[d.name for d in tf.config.list_logical_devices("CPU")]
                                              if not tf.config.list_logical_devices("GPU") else None)
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")


class BatchMaker:
    """Augmented training batches, made in threads (Pillow releases the GIL) a few batches ahead."""

    def __init__(self, images, labels, weights, cfg: TrainConfig, drop_remainder=False, targets=None):
        self.images, self.labels, self.weights, self.cfg = images, labels, weights, cfg
        # training targets: one-hot labels, or labels mixed with a teacher ensemble's probabilities
        self.targets = np.eye(3, dtype=np.float32)[labels] if targets is None else targets.astype(np.float32)
        self.drop_remainder = drop_remainder  # with several replicas, each must get part of every batch
        self.epoch = 0
        self.pool = ThreadPoolExecutor(max(2, os.cpu_count() or 2))

    def steps(self):
        n = len(self.images) / self.cfg.batch_size
        return max(1, math.floor(n)) if self.drop_remainder else math.ceil(n)

    def __call__(self):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(len(self.images))
        seeds = rng.integers(0, 2**31, len(order))
        q: queue.Queue = queue.Queue(maxsize=4)

        def one(i, s):
            rng_i, img = np.random.default_rng(s), self.images[i]
            if cfg.shift_swap and rng_i.random() < cfg.shift_swap:  # issue 9 variant; off by default
                img = aug.shift_proxy(img, int(self.labels[i]))
            return aug.augment(img, cfg.image_size, rng_i)

        def produce():
            for b in range(0, self.steps() * cfg.batch_size, cfg.batch_size):
                idx = order[b : b + cfg.batch_size]
                xs = list(self.pool.map(one, idx, seeds[b : b + cfg.batch_size]))
                x = np.stack(xs)[..., None].astype(np.float32)
                y = self.targets[idx]
                q.put((x, y, self.weights[self.labels[idx]].astype(np.float32)))
            q.put(None)

        threading.Thread(target=produce, daemon=True).start()
        while (item := q.get()) is not None:
            yield item


def _dataset(maker: BatchMaker, size: int):
    tf, _ = tf_keras()
    sig = (
        tf.TensorSpec((None, size, size, 1), tf.float32),
        tf.TensorSpec((None, 3), tf.float32),
        tf.TensorSpec((None,), tf.float32),
    )
    ds = tf.data.Dataset.from_generator(maker, output_signature=sig).prefetch(2)
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(opts)


def _eval_logits(model, x, batch=128):
    return model.predict(x, batch_size=batch, verbose=0)


class EpochLogger:
    """Per-epoch: validation metrics, one line of progress, history, checkpoint, best weights."""

    def __init__(self, run: Path, phase: str, model, ckpt, state, val_x, val_y, cfg, quiet, total, schedule):
        self.run, self.phase, self.model, self.ckpt, self.state = run, phase, model, ckpt, state
        self.schedule = schedule
        self.val_x, self.val_y, self.cfg, self.quiet, self.total = val_x, val_y, cfg, quiet, total
        self.t0 = time.time()

    def callback(self):
        _, keras = tf_keras()
        outer = self

        class CB(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer.t0 = time.time()

            def on_epoch_end(self, epoch, logs=None):
                outer.end(epoch, logs or {})

        return CB()

    def end(self, epoch, logs):
        logits = _eval_logits(self.model, self.val_x)
        probs = metrics.softmax(logits)
        p = metrics.pneumonia_probability(probs)
        y = self.val_y > 0
        nll = float(-np.log(np.clip(probs[np.arange(len(self.val_y)), self.val_y], 1e-12, 1)).mean())
        row = {
            "phase": self.phase,
            "epoch": epoch + 1,
            "loss": float(logs.get("loss", float("nan"))),
            "val_nll": nll,
            "val_auc": metrics.roc_auc(y, p),
            "val_accuracy": float(((p >= 0.5) == y).mean()),
            "val_3class_accuracy": float((probs.argmax(1) == self.val_y).mean()),
            "lr": float(self.schedule(int(self.model.optimizer.iterations.numpy()))),
            "seconds": round(time.time() - self.t0, 1),
        }
        hist = self.state["history"]
        hist.append(row)
        # model selection: highest validation AUC, ties broken by lower NLL
        score = (row["val_auc"], -row["val_nll"])
        best = self.state.get(f"best_{self.phase}")
        if best is None or score > tuple(best["score"]):
            self.state[f"best_{self.phase}"] = {"epoch": epoch + 1, "score": list(score)}
            self.model.save_weights(str(self.run / "ckpt" / f"best_{self.phase}.h5"))
        self.ckpt.write(str(self.run / "ckpt" / self.phase))
        self.state["phase"], self.state["epoch"] = self.phase, epoch + 1
        _write_json(self.run / "state.json", self.state)
        _write_json(self.run / "history.json", hist)
        _log(self.quiet, f"{self.phase} epoch {epoch + 1}/{self.total}  loss {row['loss']:.4f}  "
                         f"val_nll {nll:.4f}  val_auc {row['val_auc']:.4f}  val_acc {row['val_accuracy']:.4f}  "
                         f"{row['seconds']:.0f}s")


def _write_json(path: Path, obj):
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def _lr_schedule(base: float, epochs: int, steps: int, warmup: int):
    tf, keras = tf_keras()
    total = max(1, epochs * steps)
    warm = min(warmup * steps, total // 2)

    class WarmCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            w = tf.cast(max(warm, 1), tf.float32)
            cos = 0.5 * base * (1 + tf.cos(math.pi * tf.minimum(1.0, (step - warm) / max(1, total - warm))))
            return tf.where(step < warm, base * (step + 1) / w, cos)

        def get_config(self):
            return {}

    return WarmCosine()


def _fit_phase(phase, model, maker, cfg, epochs, lr, run, state, val_x, val_y, quiet, callbacks, strategy, warmup):
    tf, keras = tf_keras()
    steps = maker.steps()
    schedule = _lr_schedule(lr, epochs, steps, warmup)
    with strategy.scope():
        opt = keras.optimizers.Adam(schedule)
        model.compile(
            optimizer=opt,
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing),
            weighted_metrics=[],
        )
    ckpt = tf.train.Checkpoint(model=model, optimizer=opt)
    start = 0
    if state.get("phase") == phase and (run / "ckpt" / f"{phase}.index").exists():
        ckpt.read(str(run / "ckpt" / phase)).expect_partial()
        start = int(state["epoch"])
        _log(quiet, f"{phase}: resumed after epoch {start}")
    if start >= epochs:
        return
    maker.epoch = start
    logger = EpochLogger(run, phase, model, ckpt, state, val_x, val_y, cfg, quiet, epochs, schedule)
    model.fit(
        _dataset(maker, cfg.image_size),
        epochs=epochs,
        initial_epoch=start,
        verbose=0,
        callbacks=[logger.callback(), *(callbacks or [])],
    )


def train(data_dir, out, epochs: int | None = None, image_size: int = DEFAULT_SIZE, limit: int | None = None,
          seed: int = 0, resume: bool = False, strategy: str = "default", quiet: bool = False,
          qat_epochs: int | None = None, arch: str = DEFAULT_ARCH, batch_size: int = 32,
          teachers=(), callbacks=None, shift_swap: float = 0.0) -> dict:
    """Train a run into OUT; returns its metrics. See the module docstring for the run folder.

    With RESUME, the run's own configuration is used; EPOCHS and QAT_EPOCHS, when given, extend it.
    TEACHERS (finished run folders) are distilled: the training targets become
    (1 - DISTILL_ALPHA) * one-hot + DISTILL_ALPHA * the teachers' mean probabilities on the
    un-augmented training images (the validation images are never shown to them).
    """
    t_start = time.time()
    run = Path(out)
    if arch not in ARCHITECTURES:
        raise TrainError(f"unknown architecture {arch!r} (choose from {', '.join(ARCHITECTURES)})")
    if strategy not in STRATEGIES:
        raise TrainError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    if image_size < 32 or image_size % 32:
        raise TrainError(f"--image-size must be a multiple of 32, at least 32 (got {image_size})")
    state_path = run / "state.json"
    if resume:
        if not state_path.exists():
            raise TrainError(f"{out}: nothing to resume (no state.json); start without --resume")
        state = json.loads(state_path.read_text())
        cfg = TrainConfig(**json.loads((run / "config.json").read_text())["train"])
        cfg.epochs, cfg.qat_epochs = epochs or cfg.epochs, qat_epochs or cfg.qat_epochs
    else:
        if state_path.exists() or (run / "metrics.json").exists():
            raise TrainError(f"{out}: already holds a run; use --resume or another --out")
        cfg = TrainConfig(epochs=epochs or DEFAULT_EPOCHS, qat_epochs=qat_epochs or DEFAULT_QAT_EPOCHS,
                          image_size=image_size, arch=arch, teachers=[Path(t).name for t in teachers],
                          batch_size=batch_size, limit=limit, seed=seed, strategy=strategy, shift_swap=shift_swap)
        state = {"phase": None, "epoch": 0, "history": []}
    (run / "ckpt").mkdir(parents=True, exist_ok=True)

    items = stratified_limit(scan_folder(data_dir), cfg.limit, cfg.seed)
    source = min(SOURCE_SIZE, 2 * cfg.image_size)
    items, images, skipped = load_images(items, source)
    for s in skipped:
        _log(quiet, f"skipped unreadable image {s}")
    if len(items) == 0:
        raise DataError(f"{data_dir}: no readable images")
    labels = np.array([i.label for i in items])
    tr, va, groups = patient_split(items, images, cfg.val_fraction, cfg.seed)
    split = {
        "method": "StratifiedGroupKFold by patient and near-duplicate group",
        "counts": {
            side: {LABELS[c]: int((labels[idx] == c).sum()) for c in range(3)} for side, idx in (("train", tr), ("val", va))
        },
        "train_patients": sorted({items[i].patient for i in tr}),
        "val_patients": sorted({items[i].patient for i in va}),
        "val_files": [f"{items[i].path.parent.name}/{items[i].path.name}" for i in va],
        "skipped": skipped,
    }
    _write_json(run / "split.json", split)
    np.random.seed(cfg.seed)
    tf, keras = tf_keras()
    tf.random.set_seed(cfg.seed)
    strat = make_strategy(cfg.strategy)
    with strat.scope():
        model = build_model(cfg.image_size, cfg.arch)
    config = {
        "train": asdict(cfg),
        "data": {
            "dir": Path(data_dir).name,
            "images": len(items),
            "counts": {LABELS[c]: int((labels == c).sum()) for c in range(3)},
            "file_list_sha256": file_list_hash(items),
            "skipped": len(skipped),
        },
        "model": {"parameters": int(model.count_params()), "multiply_adds": multiply_adds(model),
                  "input": [cfg.image_size, cfg.image_size, 1]},
        "versions": _versions(),
        "command": " ".join(["edge-xray", "train", *sys.argv[2:]]) if sys.argv[1:2] == ["train"] else None,
    }
    if resume:  # keep the command that started the run
        config["command"] = json.loads((run / "config.json").read_text()).get("command")
    _write_json(run / "config.json", config)
    _log(quiet, f"data: {len(tr)} train / {len(va)} val images, {len(split['train_patients'])} / "
                f"{len(split['val_patients'])} patients; model {config['model']['parameters']} parameters, "
                f"{config['model']['multiply_adds'] / 1e6:.1f} M multiply-adds at {cfg.image_size} px")

    val_x = prepare_all(images[va], cfg.image_size)
    val_y = labels[va]
    weights = class_weights(labels[tr])
    targets = None
    if teachers or cfg.teachers:
        targets = distill_targets(teachers, cfg, images[tr], labels[tr], quiet)
    maker = BatchMaker(images[tr], labels[tr], weights, cfg, drop_remainder=strat.num_replicas_in_sync > 1,
                       targets=targets)

    # 1. float phase
    if state.get("phase") in (None, "float"):
        _fit_phase("float", model, maker, cfg, cfg.epochs, cfg.learning_rate, run, state, val_x, val_y,
                   quiet, callbacks, strat, cfg.warmup_epochs)
        model.load_weights(str(run / "ckpt" / "best_float.h5"))
        model.save(str(run / "float.h5"), include_optimizer=False)
        state["phase"], state["epoch"] = "qat", 0
        _write_json(state_path, state)
    else:
        model = keras.models.load_model(str(run / "float.h5"), compile=False)

    # 2. quantization-aware fine-tuning
    mot = tfmot()
    with strat.scope():
        qat = mot.quantization.keras.quantize_model(model)
    if state.get("phase") == "qat":
        _fit_phase("qat", qat, maker, cfg, cfg.qat_epochs, cfg.qat_learning_rate, run, state, val_x, val_y,
                   quiet, callbacks, strat, 0)
        qat.load_weights(str(run / "ckpt" / "best_qat.h5"))
        qat.save(str(run / "qat.h5"), include_optimizer=False)
        state["phase"], state["epoch"] = "done", 0
        _write_json(state_path, state)
    else:
        qat.load_weights(str(run / "qat.h5"))

    # 3. calibration, operating point and metrics of the QAT model
    result = evaluate_run(qat, cfg, val_x, val_y, images, labels, tr, va, quiet)
    state["wall_seconds"] = round(state.get("wall_seconds", 0.0) + time.time() - t_start, 1)
    _write_json(state_path, state)
    result["wall_seconds"] = state["wall_seconds"]
    result["seconds_per_epoch"] = {
        ph: round(float(np.median([h["seconds"] for h in state["history"] if h["phase"] == ph])), 1)
        for ph in ("float", "qat") if any(h["phase"] == ph for h in state["history"])
    }
    result["model"] = config["model"]
    _write_json(run / "metrics.json", result)
    v = result["val"]
    _log(quiet, f"validation (QAT, T={result['temperature']:.2f}, threshold {result['threshold']:.3f}): "
                f"accuracy {v['accuracy']:.4f}  sensitivity {v['sensitivity']:.4f}  specificity "
                f"{v['specificity']:.4f}  AUC {v['auc']:.4f}  ECE {result['ece_before']:.4f} -> {v['ece']:.4f}")
    _log(quiet, f"run written to {run}")
    return result


def distill_targets(teachers, cfg: TrainConfig, images, labels, quiet) -> np.ndarray:
    """(1 - alpha) * one-hot + alpha * the mean teacher probabilities, for the training images."""
    from .tfcompat import load_keras_model

    if not teachers:
        raise TrainError("this run was distilled: give the same --teacher runs to --resume it")
    probs = []
    for t in teachers:
        path = Path(t) / "qat.h5"
        if not path.exists():
            raise TrainError(f"teacher {t}: no qat.h5 (is it a finished `edge-xray train` run?)")
        m = load_keras_model(path)
        probs.append(metrics.softmax(_eval_logits(m, prepare_all(images, m.input_shape[1]))))
        _log(quiet, f"teacher {Path(t).name}: {m.input_shape[1]} px, training accuracy "
                    f"{float((probs[-1].argmax(1) == labels).mean()):.3f} (3-class)")
    soft = np.mean(probs, axis=0)
    return (1 - cfg.distill_alpha) * np.eye(3)[labels] + cfg.distill_alpha * soft


def evaluate_run(model, cfg, val_x, val_y, images, labels, tr, va, quiet=True) -> dict:
    logits = _eval_logits(model, val_x)
    bias = metrics.prior_correction(class_weights(labels[tr]), np.bincount(labels[tr], minlength=3))
    temperature = metrics.fit_temperature(logits, val_y, bias)
    raw = metrics.softmax(logits)
    cal = metrics.softmax(logits, temperature, bias)
    p = metrics.pneumonia_probability(cal)
    # shift proxy: the validation images with their class-typical acquisition swapped
    proxy_x = prepare_all(np.stack([aug.shift_proxy(a, int(c)) for a, c in zip(images[va], val_y)]), cfg.image_size)
    proxy_cal = metrics.softmax(_eval_logits(model, proxy_x), temperature, bias)
    # --- operating point (issue 9): the harder of validation and shift proxy, with a sampling margin
    legacy = metrics.choose_threshold(val_y > 0, p, cfg.sensitivity_target, cfg.threshold_cap)
    threshold, operating_point = metrics.choose_operating_point(
        val_y > 0, p, val_y > 0, metrics.pneumonia_probability(proxy_cal), cfg.operating_target,
        cfg.operating_confidence)
    operating_point["legacy"] = {"threshold": legacy, "rule": f"highest threshold with validation sensitivity >= "
                                 f"{cfg.sensitivity_target}, capped at {cfg.threshold_cap}"}
    # --- end operating point
    val = metrics.screening_report(val_y, cal, threshold)
    proxy = metrics.screening_report(val_y, proxy_cal, threshold)
    train_x = prepare_all(images[tr], cfg.image_size)
    train_m = metrics.screening_report(labels[tr], metrics.softmax(_eval_logits(model, train_x), temperature, bias),
                                       threshold)
    return {
        "model": "qat",
        "temperature": temperature,
        "logit_bias": bias,
        "calibration_rule": "softmax(logits / temperature + logit_bias); logit_bias undoes the class weights, "
                            "the temperature minimises validation NLL",
        "threshold": threshold,
        "threshold_rule": operating_point["rule"],  # issue 9: was the legacy rule, kept in operating_point
        "operating_point": operating_point,
        "ece_before": metrics.expected_calibration_error(val_y > 0, metrics.pneumonia_probability(raw)),
        "val": val,
        "shift_proxy": proxy,
        "train": train_m,
    }
