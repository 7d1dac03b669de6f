"""`edge-xray evaluate` and `edge-xray compare`: how well a model does, and how two versions differ.

A model is any `.tflite` image classifier (run through the edge runtime, as on the device; without a
card its labels, input range and output kind are given as options), or a Keras model (a run folder,
its qat.h5 / float.h5, a builder's `.keras` / `.h5` / SavedModel: edge_xray.convert.sources).

Two roads, by what the model is:
- A screening model on the device (a `.tflite` with a card whose labels are a screening set,
  edge_xray.decision.SCREENING_LABEL_SETS) is evaluated the way the device screens: through the
  Screener (edge_xray.screen: decoding, gate, orientation, the site's threshold, the trust check).
  Scans it refuses are reported as refusals, not scored; figures are over the scans it screened.
- Anything else (a Keras model, a plain classifier, a `.tflite` without a card) is evaluated as a
  classifier on prepared images: accuracy, per-class confusion; screening figures too when its labels
  are a screening set.
The data is a Kermany-layout folder (NORMAL/, PNEUMONIA/ with personN_bacteria/virus names) for a
screening model, else one sub-folder per class named as the model's labels.
Every report gives the model's size and its latency on this device.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_xray import LABELS, metrics
from edge_xray.decision import BACTERIAL, NORMAL, PNEUMONIA, VIRAL, Calibration, ScreeningLabels
from edge_xray.errors import InputError, UsageError
from edge_xray.preprocess import ImageError, load_and_prepare
from edge_xray.train.rundir import file_key

from .representative import _images, class_folders

LATENCY_RUNS = 50  # invocations timed per model (after LATENCY_WARMUP)
LATENCY_WARMUP = 5
METRIC_KEYS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "ece", "bacterial_vs_viral_accuracy")


class Classifier:
    """A model ready to score prepared images: a .tflite (edge runtime) or a Keras model."""

    def __init__(self, path, labels=None, input_range=None, output_kind: str = "auto", site=None):
        self.path = Path(path)
        self.site = site
        if self.path.suffix == ".tflite":
            from edge_xray.runtime import Model

            if isinstance(labels, str):
                labels = [x.strip() for x in labels.split(",") if x.strip()]
            self.model = Model.uncarded(self.path, labels=labels, input_range=input_range or (0.0, 1.0),
                                          output=output_kind)
            self.keras = None
            card = self.model.card
            self.carded = bool(card.get("flatbuffer_sha256"))
            self.kind = card.get("format", "tflite (no card)")
            self.size, self.sha256, self.labels = self.model.size, self.model.sha256, tuple(self.model.labels)
            self.size_bytes = self.path.stat().st_size
            if site is not None and not hasattr(site, "threshold"):
                from edge_xray.site import load_site

                self.site = load_site(site, self.model)
            self.calibration = Calibration.from_card(card, self.site.threshold if self.site is not None else None)
        else:
            from . import sources
            from .convert import is_qat, resolve_labels

            src = sources.load_source(self.path)
            if src.flavour == "saved_model":
                raise InputError(f"{self.path.name}: a SavedModel without Keras metadata: convert it, then "
                                 "evaluate the .tflite")
            self.src, self.keras, self.model, self.carded = src, src.model, None, False
            self.kind = ("keras-qat" if is_qat(src.model) else "keras-float") if src.flavour in ("run", "tf_keras") \
                else "keras3"
            self.size, self.sha256 = src.size, None
            self.labels = tuple(resolve_labels(src, labels, None) if (labels or src.flavour == "run")
                                else _default_labels(src))
            self.input_range = tuple(input_range or (0.0, 1.0))
            self.size_bytes = _size_of(self.path)
            self.calibration = Calibration.from_metrics(src.run.metrics if src.run else {})
            if src.flavour != "run":
                self.calibration = Calibration(1.0, (0.0,) * len(self.labels), 0.5, ScreeningLabels.of(self.labels))

    def like(self, other: "Classifier"):
        """A Keras model (no card) compared with a carded .tflite takes the card's input range and labels."""
        if self.keras is None or other.keras is not None or not other.carded:
            return
        self.input_range = other.model.card.input_range
        if self.src.flavour != "run":
            self.labels = other.labels
            self.calibration = Calibration(1.0, (0.0,) * len(self.labels), 0.5, ScreeningLabels.of(self.labels))

    @property
    def screening(self) -> ScreeningLabels | None:
        return ScreeningLabels.of(self.labels)

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    @property
    def temperature(self) -> float:
        return self.calibration.temperature

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (n, labels) of prepared images X (n, size, size)."""
        if self.model is not None:
            return np.stack([self.model.run(xi) for xi in x])
        from edge_xray.runtime import as_logits, input_values

        y = self.keras.predict(input_values(x, self.src.channels, self.input_range), batch_size=64, verbose=0)
        return as_logits(y, self.src.output_kind)

    def probs(self, x: np.ndarray) -> np.ndarray:
        return self.calibration.probabilities(self.logits(x))

    def latency_ms(self, runs: int = LATENCY_RUNS) -> float:
        """Median milliseconds of one image through the model on this device."""
        x = np.random.default_rng(0).random((1, self.size, self.size), dtype=np.float32)
        if self.keras is not None:  # one direct call (predict() adds its own overhead per batch)
            from edge_xray.runtime import input_values

            x = input_values(x, self.src.channels, self.input_range)
        times = []
        for i in range(LATENCY_WARMUP + runs):
            t = time.perf_counter()
            self.model.run(x[0]) if self.keras is None else self.keras(x, training=False)
            if i >= LATENCY_WARMUP:
                times.append((time.perf_counter() - t) * 1000)
        return round(float(np.median(times)), 3)

    def describe(self) -> dict:
        return {"model": str(self.path), "kind": self.kind, "labels": list(self.labels), "sha256": self.sha256,
                "size_bytes": self.size_bytes, "latency_ms": self.latency_ms(),
                "runtime": getattr(self.model, "runtime", "tensorflow (Keras)")}


def _default_labels(src) -> list[str]:
    n = 2 if src.output_kind == "sigmoid" else src.width
    return list(LABELS) if n == 3 else ["NORMAL", "PNEUMONIA"] if n == 2 else [f"class{i}" for i in range(n)]


def _size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


# data --------------------------------------------------------------------------------------------

def kermany(data_dir) -> bool:
    root = Path(data_dir)
    return (root / "NORMAL").is_dir() and (root / "PNEUMONIA").is_dir()


def labelled_files(data_dir, labels) -> tuple[list[Path], np.ndarray, str]:
    """(files, truth, truth kind) of DATA_DIR: for a screening model on a NORMAL/PNEUMONIA folder, Kermany
    truth (0 normal, 1 bacterial, 2 viral; a two-label model needs no type: 0 normal, 1 pneumonia), else
    indices into LABELS from the class folders."""
    lab = ScreeningLabels.of(labels)
    if lab is not None and kermany(data_dir) and lab.typed:
        from edge_xray.train.data import scan_folder

        items = scan_folder(data_dir)
        return [i.path for i in items], np.array([i.label for i in items]), "kermany"
    if lab is not None and kermany(data_dir):
        files = {c: _images(Path(data_dir) / c) for c in ("NORMAL", "PNEUMONIA")}
        if not files["NORMAL"] or not files["PNEUMONIA"]:
            raise InputError(f"{data_dir}: both NORMAL and PNEUMONIA images are needed")
        truth = np.array([0] * len(files["NORMAL"]) + [1] * len(files["PNEUMONIA"]))
        return files["NORMAL"] + files["PNEUMONIA"], truth, "kermany"
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"{data_dir}: not a folder")
    names = class_folders(root)
    index = {str(n).upper(): k for k, n in enumerate(labels)}
    unknown = [n for n in names if n.upper() not in index]
    if not names or unknown:
        raise InputError(f"{data_dir}: expected one sub-folder per class named as the model's labels "
                         f"({', '.join(labels)}){'; not a label: ' + ', '.join(unknown) if unknown else ''}")
    files, truth = [], []
    for n in names:
        for p in _images(root / n):
            files.append(p)
            truth.append(index[n.upper()])
    return files, np.array(truth), "folders"


def prepare_files(files, size: int):
    """(kept indices, prepared images, skipped lines) of FILES at SIZE."""
    keep, xs, skipped = [], [], []
    for i, p in enumerate(files):
        try:
            xs.append(load_and_prepare(p, size))
        except ImageError as e:
            skipped.append(f"{Path(p).name}: {e}")
            continue
        keep.append(i)
    if not xs:
        raise InputError("no readable images in the data folder")
    return np.array(keep), np.stack(xs), skipped


# reports -----------------------------------------------------------------------------------------

def confusion(truth, pred, names) -> dict:
    cm = np.zeros((len(names), len(names)), int)
    np.add.at(cm, (np.asarray(truth, int), np.asarray(pred, int)), 1)
    per_class = {}
    for k, n in enumerate(names):
        row, col = cm[k].sum(), cm[:, k].sum()
        per_class[n] = {"n": int(row), "recall": float(cm[k, k] / row) if row else None,
                        "precision": float(cm[k, k] / col) if col else None}
    return {"labels": list(names), "matrix": cm.tolist(), "per_class": per_class}


def classifier_report(truth, probs, names) -> dict:
    """Accuracy and per-class confusion of argmax PROBS against TRUTH (indices into NAMES)."""
    pred = np.argmax(probs, axis=-1)
    return {"n": int(len(truth)), "accuracy": float((pred == truth).mean()), "confusion": confusion(truth, pred, names)}


def _three_class_probs(p, cls, t):
    """Probabilities (n, 3) NORMAL/BACTERIAL/VIRAL that give the screened answers back: pneumonia
    probability P, answer CLS, type probability T (None when not flagged or not told)."""
    out = np.zeros((len(p), 3))
    for i, (pi, ci, ti) in enumerate(zip(p, cls, t)):
        ti = 0.5 if ti is None else ti
        kind, other = (BACTERIAL, VIRAL) if ci != VIRAL else (VIRAL, BACTERIAL)
        out[i] = [1 - pi, 0, 0]
        out[i, kind], out[i, other] = pi * ti, pi * (1 - ti)
    return out


def screening_figures(truth, p, cls, t, threshold, typed: bool) -> dict:
    """Screening figures from the answers (P, CLS, T) against Kermany TRUTH (0, 1, 2)."""
    if typed:
        return metrics.screening_report(truth, _three_class_probs(p, cls, t), threshold)
    out = metrics.binary_metrics(truth > 0, p, threshold)
    out["bacterial_vs_viral_accuracy"] = None  # a two-label model does not tell the type
    return out


def _answers(cal: Calibration, probs):
    """(pneumonia probability, answer class, type probability or None) of calibrated PROBS."""
    lab = cal.labels or ScreeningLabels.of_width(probs.shape[-1])
    p = cal.pneumonia_probability(probs)
    cls = cal.predicted_classes(probs)
    idx = {BACTERIAL: lab.bacterial, VIRAL: lab.viral}
    t = [float(probs[i, idx[c]] / max(p[i], 1e-12)) if c in idx else None for i, c in enumerate(cls)]
    return p, cls, t


def _screen_rows(clf: Classifier, files):
    """Screen FILES through the device's Screener; (rows, refused lines)."""
    from edge_xray.screen import Screener
    from edge_xray.trust import is_trusted

    screener = Screener(clf.model, site=clf.site, model_verified=is_trusted(clf.path, clf.model.card.file_sha256),
                        no_gate=True)
    rows = [screener.classify(f) for f in files]
    return screener, rows


def _row_answer(s):
    cls = NORMAL if s.label == "NORMAL" else {"bacterial": BACTERIAL, "viral": VIRAL}.get(s.pneumonia_type, PNEUMONIA)
    return s.pneumonia_probability, cls, s.type_probability


def evaluate(model, data_dir, report: str | None = None, site=None, labels=None, input_range=None,
             output_kind: str = "auto") -> dict:
    """Figures of MODEL on a labelled folder (see the module); SITE's threshold replaces the card's."""
    clf = Classifier(model, labels=labels, input_range=input_range, output_kind=output_kind, site=site)
    files, truth, truth_kind = labelled_files(data_dir, clf.labels)
    lab = clf.screening
    res = {"model": str(clf.path), "model_kind": clf.kind, "model_sha256": clf.sha256, "data": str(data_dir),
           "labels": list(clf.labels), "temperature": clf.temperature,
           "site_sha256": getattr(clf.site, "sha256", None)}
    if lab is not None and truth_kind == "kermany" and clf.model is not None and clf.carded:
        screener, rows = _screen_rows(clf, files)
        ok = [i for i, s in enumerate(rows) if s.ok]
        if not ok:
            raise InputError(f"{data_dir}: the model screened none of its scans (all refused or unreadable)")
        p, cls, t = (np.array(v, dtype=object) for v in zip(*[_row_answer(rows[i]) for i in ok]))
        res.update(screening_figures(truth[ok], p.astype(float), cls.astype(int), list(t), clf.threshold, lab.typed))
        res.update(road="screener", gate=bool(clf.model.card.gate), model_verified=screener.model_verified,
                   refused=[{"file": file_key(files[i]), "status": s.status, "reason": s.error}
                            for i, s in enumerate(rows) if s.status == "rejected"],
                   skipped=[f"{Path(files[i]).name}: {s.error}" for i, s in enumerate(rows) if s.status == "error"])
        res["screened"] = len(ok)
        probs_for_plot, truth_for_plot = p.astype(float), truth[ok]
    else:
        keep, x, skipped = prepare_files(files, clf.size)
        truth = truth[keep]
        probs = clf.probs(x)
        res["road"] = "classifier"
        if lab is not None and truth_kind == "kermany":
            pp, cls, t = _answers(clf.calibration, probs)
            res.update(screening_figures(truth, pp, cls, t, clf.threshold, lab.typed))
            probs_for_plot, truth_for_plot = pp, truth
        else:
            res.update(classifier_report(truth, probs, clf.labels))
            probs_for_plot = truth_for_plot = None
        res["skipped"] = skipped
    res["threshold"] = clf.threshold
    res["device"] = clf.describe()
    if report:
        if probs_for_plot is None:
            raise UsageError("--report draws screening plots: it needs a screening model on a NORMAL/PNEUMONIA folder")
        try:
            write_report(res, truth_for_plot, probs_for_plot, report)
        except OSError as e:  # a read-only folder (or matplotlib's cache in a read-only home): one line
            raise UsageError(f"cannot write the report in {report}: {e.strerror or e}") from None
    return res


def compare(float_model, int8_model, data_dir, labels=None, input_range=None, output_kind: str = "auto") -> dict:
    """Two versions of a model (e.g. float and int8) on the same labelled scans: agreement, each one's
    figures, |dp|, latency and size. Screening models on the device go through the Screener. A Keras
    model beside a .tflite with a card is fed as that card says (input range, labels) unless given."""
    a = Classifier(float_model, labels=labels, input_range=input_range, output_kind=output_kind)
    b = Classifier(int8_model, labels=labels, input_range=input_range, output_kind=output_kind)
    if input_range is None and labels is None:
        a.like(b)
        b.like(a)
    if a.size != b.size:
        raise InputError(f"the models take different input sizes ({a.size} and {b.size} px)")
    if [n.upper() for n in a.labels] != [n.upper() for n in b.labels]:
        raise InputError(f"the models have different labels ({', '.join(a.labels)} and {', '.join(b.labels)})")
    files, truth, truth_kind = labelled_files(data_dir, a.labels)
    lab = a.screening
    screening = lab is not None and truth_kind == "kermany"
    out = {"n": 0, "data": str(data_dir), "labels": list(a.labels), "skipped": [], "refused": {}}
    if screening and all(c.model is not None and c.carded for c in (a, b)):
        rows = {}
        for name, c in (("float", a), ("int8", b)):
            _, rows[name] = _screen_rows(c, files)
            out["refused"][name] = [file_key(files[i]) for i, s in enumerate(rows[name]) if s.status == "rejected"]
        ok = [i for i in range(len(files)) if rows["float"][i].ok and rows["int8"][i].ok]
        out["skipped"] = [f"{Path(files[i]).name}: {rows['float'][i].error}" for i in range(len(files))
                          if rows["float"][i].status == "error"]
        if not ok:
            raise InputError(f"{data_dir}: no scan was screened by both models")
        answers = {k: [_row_answer(rows[k][i]) for i in ok] for k in rows}
        qa, qb = (np.array([r[0] for r in answers[k]], float) for k in ("float", "int8"))
        ca, cb = (np.array([r[1] for r in answers[k]]) for k in ("float", "int8"))
        ta, tb = ([r[2] for r in answers[k]] for k in ("float", "int8"))
        truth, keep, out["road"] = truth[ok], ok, "screener"
    else:
        keep, x, out["skipped"] = prepare_files(files, a.size)  # decoded once, for both models
        truth = truth[keep]
        pa, pb = a.probs(x), b.probs(x)
        out["road"] = "classifier"
        if screening:
            (qa, ca, ta), (qb, cb, tb) = _answers(a.calibration, pa), _answers(b.calibration, pb)
        else:
            qa, qb = pa, pb
    out["n"] = int(len(truth))
    if screening:
        ra = screening_figures(truth, qa, ca, ta, a.threshold, lab.typed)
        rb = screening_figures(truth, qb, cb, tb, b.threshold, lab.typed)
        da, db = qa >= a.threshold, qb >= b.threshold
        dp = np.abs(qa - qb)
        keys = [k for k in METRIC_KEYS if ra.get(k) is not None]
        out["float"] = {"kind": a.kind, **{k: ra[k] for k in keys}, "confusion": _screen_confusion(ra)}
        out["int8"] = {"kind": b.kind, **{k: rb[k] for k in keys}, "confusion": _screen_confusion(rb)}
        out["delta"] = {k: rb[k] - ra[k] for k in keys}
        disagree = da != db
        pair = (qa, qb)
    else:
        ra, rb = classifier_report(truth, qa, a.labels), classifier_report(truth, qb, b.labels)
        da, db = np.argmax(qa, -1), np.argmax(qb, -1)
        dp = np.abs(qa - qb).max(axis=-1)  # the largest change of any class's probability
        out["float"] = {"kind": a.kind, "accuracy": ra["accuracy"], "confusion": ra["confusion"]}
        out["int8"] = {"kind": b.kind, "accuracy": rb["accuracy"], "confusion": rb["confusion"]}
        out["delta"] = {"accuracy": rb["accuracy"] - ra["accuracy"]}
        disagree = da != db
        pair = (qa.max(-1), qb.max(-1))
    out["float"].update(a.describe())
    out["int8"].update(b.describe())
    out["agreement"] = float(1.0 - disagree.mean())
    out["max_abs_delta_p"] = float(dp.max())
    out["mean_abs_delta_p"] = float(dp.mean())
    out["disagreements"] = [{"file": file_key(files[keep[i]]), "float_p": round(float(pair[0][i]), 4),
                             "int8_p": round(float(pair[1][i]), 4)} for i in np.flatnonzero(disagree)]
    return out


def _screen_confusion(r: dict) -> dict:
    return r.get("confusion_3class") or r["confusion_2class"]


def write_report(res: dict, labels, p, out_dir):
    """A Markdown page with confusion-matrix and ROC plots as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for key, name in (("confusion_2class", "confusion_2class.png"), ("confusion_3class", "confusion_3class.png")):
        if key not in res:
            continue
        drawn.append((key, name))
        cm = np.array(res[key]["matrix"])
        fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=120)
        ax.imshow(cm, cmap="Blues")
        names = res[key]["labels"]
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="black" if v < cm.max() / 2 else "white")
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
    fpr, tpr = metrics.roc_curve(np.asarray(labels) > 0, p)
    fig, ax = plt.subplots(figsize=(3.6, 3.4), dpi=120)
    ax.plot(fpr, tpr, lw=1.5)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"ROC, AUC {res['auc']:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "roc.png")
    plt.close(fig)
    rows = [("accuracy", "accuracy"), ("sensitivity (recall)", "sensitivity"), ("specificity", "specificity"),
            ("precision", "precision"), ("F1", "f1"), ("AUC", "auc"), ("ECE", "ece"),
            ("type I errors (false positives)", "type_I_errors"), ("type I rate", "type_I_rate"),
            ("type II errors (missed pneumonia)", "type_II_errors"), ("type II rate", "type_II_rate"),
            ("bacterial vs viral accuracy (flagged cases)", "bacterial_vs_viral_accuracy")]
    refused = len(res.get("refused") or [])
    lines = ["# edge-xray evaluation", "", f"- model: `{Path(res['model']).name}` ({res['model_kind']})",
             f"- data: `{res['data']}` ({res['n']} images scored, {refused} refused, "
             f"{len(res['skipped'])} unreadable)",
             f"- threshold {res['threshold']:.3f}, temperature {res['temperature']:.3f}", "",
             "| metric | value |", "|---|---|"]
    for label, k in rows:
        v = res.get(k)
        if v is None:
            continue
        lines.append(f"| {label} | {v:.4f} |" if isinstance(v, float) else f"| {label} | {v} |")
    lines += ["", " ".join(f"![{key.replace('_', ' ')}]({name})" for key, name in drawn), "", "![ROC](roc.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"

