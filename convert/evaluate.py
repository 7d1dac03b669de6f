"""`edge-xray evaluate` and `edge-xray compare`: screening metrics of a model on a labelled folder.

A model is any `.tflite` of ours (run through the edge runtime, as on the device) or a run's Keras
model (a run folder, `qat.h5` or `float.h5`; temperature and threshold from the run's metrics).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_xray import metrics
from edge_xray.decision import Calibration, pneumonia_probability
from edge_xray.preprocess import ImageError, load_and_prepare
from edge_xray.errors import InputError
from edge_xray.train.data import scan_folder
from edge_xray.train.rundir import file_key



class Predictor:
    """Calibrated probabilities for prepared images, from a .tflite (edge runtime) or a Keras model."""

    def __init__(self, path, site=None):
        self.path = Path(path)
        if self.path.suffix == ".tflite":
            from edge_xray.runtime import Model

            self.model = Model(self.path)
            self.kind, self.size, self.sha256 = self.model.card.get("format", "tflite"), self.model.size, self.model.sha256
            if site is not None and not hasattr(site, "threshold"):
                from edge_xray.site import load_site

                site = load_site(site, self.model)
            self.calibration = Calibration.from_card(self.model.card, site.threshold if site is not None else None)
        else:
            from .convert import is_qat, load_source

            self.keras, run = load_source(self.path)
            self.kind = "keras-qat" if is_qat(self.keras) else "keras-float"
            self.size, self.sha256 = self.keras.input_shape[1], None
            self.calibration = Calibration.from_metrics(run.metrics if run else {})
        self.site = site

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    @property
    def temperature(self) -> float:
        return self.calibration.temperature

    def probs(self, x: np.ndarray) -> np.ndarray:
        if hasattr(self, "model"):
            logits = np.stack([self.model.run(xi) for xi in x])
        else:
            logits = self.keras.predict(x[..., None], batch_size=64, verbose=0)
        return self.calibration.probabilities(logits)


def prepare_folder(data_dir, size: int):
    """(files, labels, prepared images, skipped) for a Kermany-layout folder."""
    items = scan_folder(data_dir)
    files, labels, xs, skipped = [], [], [], []
    for it in items:
        try:
            xs.append(load_and_prepare(it.path, size))
        except ImageError as e:
            skipped.append(f"{it.path.name}: {e}")
            continue
        files.append(file_key(it.path))
        labels.append(it.label)
    if not xs:
        raise InputError(f"{data_dir}: no readable images")
    return files, np.array(labels), np.stack(xs), skipped


def evaluate(model, data_dir, report: str | None = None, site=None) -> dict:
    """Screening metrics of MODEL on a labelled folder, at the card's threshold or SITE's."""
    pred = Predictor(model, site=site)
    files, labels, x, skipped = prepare_folder(data_dir, pred.size)
    probs = pred.probs(x)
    res = metrics.screening_report(labels, probs, pred.threshold)
    res.update(model=str(pred.path), model_kind=pred.kind, model_sha256=pred.sha256, data=str(data_dir),
               temperature=pred.temperature, site_sha256=getattr(pred.site, "sha256", None), skipped=skipped)
    if report:
        write_report(res, labels, pneumonia_probability(probs), report)
    return res


def compare(float_model, int8_model, data_dir) -> dict:
    a, b = Predictor(float_model), Predictor(int8_model)
    if a.size != b.size:
        raise InputError(f"the models take different input sizes ({a.size} and {b.size} px)")
    files, labels, x, skipped = prepare_folder(data_dir, a.size)  # decoded once, for both models
    pa, pb = a.probs(x), b.probs(x)
    ra = metrics.screening_report(labels, pa, a.threshold)
    rb = metrics.screening_report(labels, pb, b.threshold)
    qa = pneumonia_probability(pa)
    qb = pneumonia_probability(pb)
    da, db = qa >= a.threshold, qb >= b.threshold
    dp = np.abs(qa - qb)
    keys = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "ece", "bacterial_vs_viral_accuracy")
    return {
        "float": {"model": str(a.path), "kind": a.kind, **{k: ra[k] for k in keys}},
        "int8": {"model": str(b.path), "kind": b.kind, **{k: rb[k] for k in keys}},
        "delta": {k: rb[k] - ra[k] for k in keys},
        "n": len(files),
        "agreement": float((da == db).mean()),
        "max_abs_delta_p": float(dp.max()),
        "mean_abs_delta_p": float(dp.mean()),
        "disagreements": [
            {"file": f, "float_p": round(float(p1), 4), "int8_p": round(float(p2), 4)}
            for f, p1, p2, d1, d2 in zip(files, qa, qb, da, db) if d1 != d2
        ],
        "skipped": skipped,
    }


def write_report(res: dict, labels, p, out_dir):
    """A Markdown page with confusion-matrix and ROC plots as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for key, name in (("confusion_2class", "confusion_2class.png"), ("confusion_3class", "confusion_3class.png")):
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
    lines = ["# edge-xray evaluation", "", f"- model: `{Path(res['model']).name}` ({res['model_kind']})",
             f"- data: `{res['data']}` ({res['n']} images, {len(res['skipped'])} unreadable)",
             f"- threshold {res['threshold']:.3f}, temperature {res['temperature']:.3f}", "",
             "| metric | value |", "|---|---|"]
    for label, k in rows:
        v = res[k]
        lines.append(f"| {label} | {v:.4f} |" if isinstance(v, float) else f"| {label} | {v} |")
    lines += ["", "![2-class confusion matrix](confusion_2class.png) ![3-class confusion matrix](confusion_3class.png)",
              "", "![ROC](roc.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"
