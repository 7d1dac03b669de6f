"""`edge-xray train`: float phase with augmentation, then quantization-aware fine-tuning.

`train()` runs the phases of a `Trainer` (data and split, float, QAT, calibration and metrics) into a
run folder (edge_xray.train.rundir: what it holds and who reads it), checkpointing each epoch so that
an interrupted run resumes.
"""

from __future__ import annotations

import math
import os
import platform
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from edge_xray import LABELS, metrics
from edge_xray import operating_point as op
from edge_xray.decision import pneumonia_probability, softmax
from edge_xray.errors import EdgeXrayError, UsageError

from . import augment as aug

from .data import SOURCE_SIZE, file_list_hash, prepare_all, run_split
from .model import ARCHITECTURES, DEFAULT_ARCH, DEFAULT_SIZE, build_model, multiply_adds
from .rundir import CONFIG, HISTORY, METRICS, SPLIT, STATE, RunDir, file_key
from .tfcompat import tf_keras, tfmot

STRATEGIES = ("default", "mirrored", "multi-worker")
BN_MOMENTUM, BN_MIN_MOMENTUM, BN_CATCH_UP = 0.99, 0.5, 5.0  # see keep_up_statistics
DEFAULT_EPOCHS = 24
DEFAULT_QAT_EPOCHS = 4


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
    sensitivity_target: float = op.SENSITIVITY_TARGET
    threshold_cap: float = op.MAX_THRESHOLD
    # issue 9: the default operating point (operating_point.choose_operating_point); the two above are the legacy rule
    operating_target: float = op.OPERATING_TARGET
    operating_confidence: float = op.OPERATING_CONFIDENCE
    shift_swap: float = 0.0  # share of training images given the other class's acquisition look (aug.shift_proxy)
    limit: int | None = None
    seed: int = 0
    split_seed: int | None = None  # the patient-level fold's seed (None: seed): runs of one fold share it
    strategy: str = "default"
    augmentation: dict = field(default_factory=lambda: {
        k: getattr(aug, k) for k in (
            "ROTATION_DEG", "SHIFT", "ZOOM", "ASPECT", "P_BLUR", "BLUR_RADIUS", "P_RESAMPLE",
            "RESAMPLE_FACTOR", "P_NOISE", "NOISE_SIGMA", "GAMMA", "CONTRAST", "BLACK_LEVEL", "P_BORDER",
            "BORDER_FRACTION")
    })



def package_versions() -> dict:
    """Versions of Python and the packages a run depends on (recorded in config.json and cards)."""
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
    raise UsageError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")


class BatchMaker:
    """Augmented training batches, made in threads (Pillow releases the GIL) a few batches ahead."""

    def __init__(self, images, labels, weights, cfg: TrainConfig, drop_remainder=False):
        self.images, self.labels, self.weights, self.cfg = images, labels, weights, cfg
        self.targets = np.eye(3, dtype=np.float32)[labels]  # one-hot training targets
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

    def __init__(self, trainer: "Trainer", phase: str, model, ckpt, total: int, schedule):
        self.trainer, self.phase, self.model = trainer, phase, model
        self.ckpt, self.total, self.schedule = ckpt, total, schedule
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
        t, run, state = self.trainer, self.trainer.run, self.trainer.state
        val_y = t.data.val_y
        probs = softmax(_eval_logits(self.model, t.data.val_x))
        p = pneumonia_probability(probs)
        y = val_y > 0
        nll = float(-np.log(np.clip(probs[np.arange(len(val_y)), val_y], 1e-12, 1)).mean())
        row = {
            "phase": self.phase,
            "epoch": epoch + 1,
            "loss": float(logs.get("loss", float("nan"))),
            "val_nll": nll,
            "val_auc": metrics.roc_auc(y, p),
            "val_accuracy": float(((p >= 0.5) == y).mean()),
            "val_3class_accuracy": float((probs.argmax(1) == val_y).mean()),
            "lr": float(self.schedule(int(self.model.optimizer.iterations.numpy()))),
            "seconds": round(time.time() - self.t0, 1),
        }
        hist = state["history"]
        hist.append(row)
        # model selection: highest validation AUC, ties broken by lower NLL
        score = (row["val_auc"], -row["val_nll"])
        best = state.get(f"best_{self.phase}")
        if best is None or score > tuple(best["score"]):
            state[f"best_{self.phase}"] = {"epoch": epoch + 1, "score": list(score)}
            self.model.save_weights(str(run.checkpoint(f"best_{self.phase}.h5")))
        self.ckpt.write(str(run.checkpoint(self.phase)))
        state["phase"], state["epoch"] = self.phase, epoch + 1
        run.write(STATE, state)
        run.write(HISTORY, hist)
        t.log(f"{self.phase} epoch {epoch + 1}/{self.total}  loss {row['loss']:.4f}  val_nll {nll:.4f}  "
              f"val_auc {row['val_auc']:.4f}  val_acc {row['val_accuracy']:.4f}  {row['seconds']:.0f}s")


def keep_up_statistics(model, steps: int):
    """BatchNorm moving statistics that keep up with a schedule of STEPS: momentum at most
    1 - BN_CATCH_UP / STEPS (Keras' 0.99 for any real run). After a few steps at 0.99 the statistics are
    still their initial values (mean 0, variance 1): in inference the signal vanishes through the layers and
    every image gets the same logits (the tiny test model did: its int8 and QAT answers were a tie)."""
    _, keras = tf_keras()
    momentum = max(BN_MIN_MOMENTUM, min(BN_MOMENTUM, 1.0 - BN_CATCH_UP / max(1, steps)))
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = min(layer.momentum, momentum)


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


@dataclass
class RunData:
    """The images of a run and its patient-level split, shared by the phases."""

    items: list
    images: np.ndarray  # uint8 (n, side, side)
    labels: np.ndarray  # 0 normal, 1 bacterial, 2 viral
    train_idx: np.ndarray
    val_idx: np.ndarray
    val_x: np.ndarray  # prepared validation images
    skipped: list

    @property
    def val_y(self) -> np.ndarray:
        return self.labels[self.val_idx]


class Trainer:
    """One run, as named phases: data, float, qat, evaluate. Each phase checkpoints, so a run resumes."""

    def __init__(self, data_dir, run: RunDir, cfg: TrainConfig, state: dict, callbacks=None, quiet=False):
        self.data_dir, self.run, self.cfg, self.state = data_dir, run, cfg, state
        self.callbacks, self.quiet = list(callbacks or []), quiet
        self.data: RunData | None = None

    def log(self, msg: str):
        if not self.quiet:
            print(msg, flush=True)

    def load_data(self) -> RunData:
        """Phase 0: read the images, split by patient and near-duplicate group, write split.json."""
        cfg = self.cfg
        items, images, skipped, tr, va = run_split(self.data_dir, cfg.val_fraction, cfg.seed, cfg.split_seed, cfg.limit,
                                                   side=min(SOURCE_SIZE, 2 * cfg.image_size))
        for s in skipped:
            self.log(f"skipped unreadable image {s}")
        labels = np.array([i.label for i in items])
        self.run.write(SPLIT, {
            "method": "StratifiedGroupKFold by patient and near-duplicate group",
            "counts": {side: {LABELS[c]: int((labels[idx] == c).sum()) for c in range(3)}
                       for side, idx in (("train", tr), ("val", va))},
            "train_patients": sorted({items[i].patient for i in tr}),
            "val_patients": sorted({items[i].patient for i in va}),
            "val_files": [file_key(items[i].path) for i in va],
            "skipped": skipped,
        })
        self.data = RunData(items, images, labels, tr, va, prepare_all(images[va], cfg.image_size), skipped)
        return self.data

    def build(self):
        """The network, in the strategy's scope; config.json written."""
        cfg, d = self.cfg, self.data
        np.random.seed(cfg.seed)
        tf, _ = tf_keras()
        tf.random.set_seed(cfg.seed)
        self.strategy = make_strategy(cfg.strategy)
        with self.strategy.scope():
            model = build_model(cfg.image_size, cfg.arch)
        self.config = {
            "train": asdict(cfg),
            "data": {"dir": Path(self.data_dir).name, "images": len(d.items),
                     "counts": {LABELS[c]: int((d.labels == c).sum()) for c in range(3)},
                     "file_list_sha256": file_list_hash(d.items), "skipped": len(d.skipped)},
            "model": {"parameters": int(model.count_params()), "multiply_adds": multiply_adds(model),
                      "input": [cfg.image_size, cfg.image_size, 1]},
            "versions": package_versions(),
        }
        self.run.write(CONFIG, self.config)
        self.log(f"data: {len(d.train_idx)} train / {len(d.val_idx)} val images; model "
                 f"{self.config['model']['parameters']} parameters, "
                 f"{self.config['model']['multiply_adds'] / 1e6:.1f} M multiply-adds at {cfg.image_size} px")
        tr = d.train_idx
        self.maker = BatchMaker(d.images[tr], d.labels[tr], class_weights(d.labels[tr]), cfg,
                                drop_remainder=self.strategy.num_replicas_in_sync > 1)
        return model

    def fit(self, phase: str, model, epochs: int, lr: float, warmup: int):
        """Train MODEL for PHASE, from its checkpoint if the run was interrupted in it."""
        tf, keras = tf_keras()
        keep_up_statistics(model, epochs * self.maker.steps())
        schedule = _lr_schedule(lr, epochs, self.maker.steps(), warmup)
        with self.strategy.scope():
            opt = keras.optimizers.Adam(schedule)
            model.compile(optimizer=opt, weighted_metrics=[],
                          loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                                    label_smoothing=self.cfg.label_smoothing))
        ckpt = tf.train.Checkpoint(model=model, optimizer=opt)
        start = 0
        if self.state.get("phase") == phase and self.run.checkpoint(f"{phase}.index").exists():
            ckpt.read(str(self.run.checkpoint(phase))).expect_partial()
            start = int(self.state["epoch"])
            self.log(f"{phase}: resumed after epoch {start}")
        if start >= epochs:
            return
        self.maker.epoch = start
        logger = EpochLogger(self, phase, model, ckpt, epochs, schedule)
        model.fit(_dataset(self.maker, self.cfg.image_size), epochs=epochs, initial_epoch=start, verbose=0,
                  callbacks=[logger.callback(), *self.callbacks])

    def _finish_phase(self, model, phase: str, dest: Path, next_phase: str):
        model.load_weights(str(self.run.checkpoint(f"best_{phase}.h5")))
        model.save(str(dest), include_optimizer=False)
        self.state["phase"], self.state["epoch"] = next_phase, 0
        self.run.write(STATE, self.state)

    def float_phase(self, model):
        """Phase 1: the float network with augmentation; the best epoch by validation AUC is kept."""
        _, keras = tf_keras()
        if self.state.get("phase") not in (None, "float"):
            return keras.models.load_model(str(self.run.float_model), compile=False)
        self.fit("float", model, self.cfg.epochs, self.cfg.learning_rate, self.cfg.warmup_epochs)
        self._finish_phase(model, "float", self.run.float_model, "qat" if self.cfg.qat_epochs else "done")
        return model

    def qat_phase(self, model):
        """Phase 2: quantization-aware fine-tuning from the float weights (none with --qat-epochs 0)."""
        if self.cfg.qat_epochs == 0:
            return model
        with self.strategy.scope():
            qat = tfmot().quantization.keras.quantize_model(model)
        if self.state.get("phase") != "qat":
            qat.load_weights(str(self.run.qat_model))
            return qat
        self.fit("qat", qat, self.cfg.qat_epochs, self.cfg.qat_learning_rate, 0)
        self._finish_phase(qat, "qat", self.run.qat_model, "done")
        return qat

    def evaluate_phase(self, qat, t_start: float) -> dict:
        """Phase 3: calibration, operating point and metrics of the QAT model; metrics.json written."""
        d = self.data
        result = evaluate_run(qat, self.cfg, d.val_x, d.val_y, d.images, d.labels, d.train_idx, d.val_idx, self.quiet)
        self.state["wall_seconds"] = round(self.state.get("wall_seconds", 0.0) + time.time() - t_start, 1)
        self.run.write(STATE, self.state)
        hist = self.state["history"]
        result["wall_seconds"] = self.state["wall_seconds"]
        result["seconds_per_epoch"] = {
            ph: round(float(np.median([h["seconds"] for h in hist if h["phase"] == ph])), 1)
            for ph in ("float", "qat") if any(h["phase"] == ph for h in hist)
        }
        result["model"] = self.config["model"]
        self.run.write(METRICS, result)
        v = result["val"]
        kind = "QAT" if self.cfg.qat_epochs else "float"
        self.log(f"validation ({kind}, T={result['temperature']:.2f}, threshold {result['threshold']:.3f}): "
                 f"accuracy {v['accuracy']:.4f}  sensitivity {v['sensitivity']:.4f}  specificity "
                 f"{v['specificity']:.4f}  AUC {v['auc']:.4f}  ECE {result['ece_before']:.4f} -> {v['ece']:.4f}")
        self.log(f"run written to {self.run.path}")
        return result


def _check_config(cfg: TrainConfig):
    """Refuse a setting no run can use, with a usage error (exit code 2)."""
    if cfg.arch not in ARCHITECTURES:
        raise UsageError(f"unknown architecture {cfg.arch!r} (choose from {', '.join(ARCHITECTURES)})")
    if cfg.strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {cfg.strategy!r} (choose from {', '.join(STRATEGIES)})")
    if cfg.image_size < 32 or cfg.image_size % 32:
        raise UsageError(f"--image-size must be a multiple of 32, at least 32 (got {cfg.image_size})")


def config_from_recipe(recipe: dict) -> TrainConfig:
    """The TrainConfig of a stored recipe (config.json's `train`, a card's `training.recipe`); settings this
    version no longer has (a distillation teacher's, before 0.4.0) are left out."""
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in recipe.items() if k in known})


def _resumed_config(run: RunDir, out, options: dict) -> tuple[dict, TrainConfig]:
    """The state and configuration of an interrupted run; OPTIONS may only extend its epochs."""
    if not run.has(STATE):
        raise UsageError(f"{out}: nothing to resume (no state.json); start without --resume")
    state, cfg = run.state, config_from_recipe(run.config["train"])
    changed = sorted(k for k, v in options.items()
                     if k not in ("epochs", "qat_epochs") and v is not None and getattr(cfg, k, v) != v)
    if changed:
        raise UsageError(f"--resume keeps the run's own settings (cannot change {', '.join(changed)})")
    for k in ("epochs", "qat_epochs"):  # a resumed run may be extended, never shortened or given QAT afresh
        v = options.get(k)
        if v is not None and (v < getattr(cfg, k) or (k == "qat_epochs" and cfg.qat_epochs == 0 and v)):
            raise UsageError(f"--resume can only extend the run: --{k.replace('_', '-')} {v} "
                             f"(the run has {getattr(cfg, k)})")
    return state, cfg


def train(data_dir, out, config: TrainConfig | None = None, *, resume: bool = False, callbacks=None,
          quiet: bool = False, **options) -> dict:
    """Train a run into OUT (see edge_xray.train.rundir for its files); returns its metrics.

    CONFIG (default TrainConfig()) with OPTIONS (TrainConfig fields, e.g. epochs=2, image_size=32) on top.
    With RESUME, the run's own configuration is used; only `epochs` and `qat_epochs` may extend it.
    A setting that cannot be used raises UsageError (exit code 2); an OUT that already holds a run
    without RESUME, EdgeXrayError (exit code 1).
    """
    t_start = time.time()
    run = RunDir(out)
    unknown = sorted(set(options) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise UsageError(f"unknown training option{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    if resume:
        state, cfg = _resumed_config(run, out, options)
    else:
        if run.started:
            raise EdgeXrayError(f"{out}: already holds a run; use --resume or another --out")
        state = {"phase": None, "epoch": 0, "history": []}
        cfg = config or TrainConfig()
    cfg = replace(cfg, **{k: v for k, v in options.items() if v is not None})
    _check_config(cfg)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(data_dir, run, cfg, state, callbacks, quiet)
    trainer.load_data()
    model = trainer.build()
    model = trainer.float_phase(model)
    qat = trainer.qat_phase(model)
    return trainer.evaluate_phase(qat, t_start)


def evaluate_run(model, cfg, val_x, val_y, images, labels, tr, va, quiet=True) -> dict:
    logits = _eval_logits(model, val_x)
    bias = metrics.prior_correction(class_weights(labels[tr]), np.bincount(labels[tr], minlength=3))
    temperature = metrics.fit_temperature(logits, val_y, bias)
    raw = softmax(logits)
    cal = softmax(logits, temperature, bias)
    p = pneumonia_probability(cal)
    # shift proxy: the validation images with their class-typical acquisition swapped
    proxy_x = prepare_all(np.stack([aug.shift_proxy(a, int(c)) for a, c in zip(images[va], val_y)]), cfg.image_size)
    proxy_cal = softmax(_eval_logits(model, proxy_x), temperature, bias)
    # --- operating point (issue 9): the harder of validation and shift proxy, with a sampling margin
    legacy = op.choose_threshold(val_y > 0, p, cfg.sensitivity_target, cfg.threshold_cap)
    threshold, operating_point = op.choose_operating_point(
        val_y > 0, p, val_y > 0, pneumonia_probability(proxy_cal), cfg.operating_target,
        cfg.operating_confidence)
    operating_point["legacy"] = {"threshold": legacy, "rule": f"highest threshold with validation sensitivity >= "
                                 f"{cfg.sensitivity_target}, capped at {cfg.threshold_cap}"}
    # --- end operating point
    val = metrics.screening_report(val_y, cal, threshold)
    proxy = metrics.screening_report(val_y, proxy_cal, threshold)
    train_x = prepare_all(images[tr], cfg.image_size)
    train_m = metrics.screening_report(labels[tr], softmax(_eval_logits(model, train_x), temperature, bias),
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
        "ece_before": metrics.expected_calibration_error(val_y > 0, pneumonia_probability(raw)),
        "val": val,
        "shift_proxy": proxy,
        "train": train_m,
    }
