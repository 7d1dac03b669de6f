"""Compare operating-point rules on finished runs: validation and shift-proxy figures for each rule.

    python benchmarks/operating_point.py DATA_DIR RUN_DIR [RUN_DIR...]

For each run: its QAT model scores its own validation split and the shift proxy of it (calibrated
with the run's temperature and logit bias; the scores are cached in RUN_DIR/scores.npz), then each
candidate rule gives a threshold, and the sensitivity and specificity it yields on both sets. The
last table is the spread of each rule's threshold and figures over the runs (mean, min, max).
"""

import sys
from pathlib import Path

import numpy as np

from edge_xray.train.rundir import RunDir, file_key

from edge_xray import metrics, operating_point

TARGET = operating_point.OPERATING_TARGET


def scores(data_dir: Path, run: Path):
    cache = run / "scores.npz"
    if cache.exists():
        z = np.load(cache)
        return z["labels"], z["p_val"], z["p_proxy"]
    from edge_xray.train import augment as aug
    from edge_xray.train.data import SOURCE_SIZE, load_images, prepare_all, scan_folder
    from edge_xray.train.tfcompat import load_keras_model

    split = RunDir(run).split
    m = RunDir(run).metrics
    size = RunDir(run).config["train"]["image_size"]
    val_files = set(split["val_files"])
    items = [i for i in scan_folder(data_dir) if file_key(i.path) in val_files]
    items, images, _ = load_images(items, min(SOURCE_SIZE, 2 * size))
    labels = np.array([i.label for i in items])
    model = load_keras_model(RunDir(run).model)

    def p_of(x):
        logits = model.predict(prepare_all(x, size), batch_size=128, verbose=0)
        return metrics.pneumonia_probability(metrics.softmax(logits, m["temperature"], m.get("logit_bias")))

    p_val = p_of(images)
    p_proxy = p_of(np.stack([aug.shift_proxy(a, int(c)) for a, c in zip(images, labels)]))
    np.savez(cache, labels=labels, p_val=p_val, p_proxy=p_proxy)
    return labels, p_val, p_proxy


def rules(y, p_val, p_proxy):
    """name -> threshold, for each candidate rule."""
    def op(**kw):
        return operating_point.choose_operating_point(**kw)[0]

    return {
        "legacy: val sens >= 0.97, cap 0.5": operating_point.choose_threshold(y, p_val, 0.97, 0.5),
        "val sens >= 0.95": operating_point.choose_threshold(y, p_val, TARGET, 1.0),
        "val sens >= 0.97, no cap": operating_point.choose_threshold(y, p_val, 0.97, 1.0),
        "val 95% Wilson bound >= 0.95": op(y_val=y, p_val=p_val, confidence=0.95),
        "min(val, proxy) sens >= 0.95 (new default)": op(y_val=y, p_val=p_val, y_proxy=y, p_proxy=p_proxy),
        "min(val, proxy) Wilson bound >= 0.95": op(y_val=y, p_val=p_val, y_proxy=y, p_proxy=p_proxy,
                                                   confidence=0.95),
        "proxy sens >= 0.97": operating_point.choose_threshold(y, p_proxy, 0.97, 1.0),
    }


def figures(y, p, t):
    m = metrics.binary_metrics(y, p, t)
    return m["sensitivity"], m["specificity"]


def main(data_dir, runs):
    table = {}
    for run in runs:
        labels, p_val, p_proxy = scores(Path(data_dir), Path(run))
        y = labels > 0
        print(f"\n{Path(run).name}: val AUC {metrics.roc_auc(y, p_val):.4f}, proxy AUC {metrics.roc_auc(y, p_proxy):.4f}; "
              f"median normal score val {np.median(p_val[~y]):.3f} / proxy {np.median(p_proxy[~y]):.3f}; "
              f"5th-percentile pneumonia score val {np.quantile(p_val[y], 0.05):.3f} / proxy "
              f"{np.quantile(p_proxy[y], 0.05):.3f}")
        print("| rule | threshold | val sens | val spec | proxy sens | proxy spec |\n|---|---|---|---|---|---|")
        for name, t in rules(y, p_val, p_proxy).items():
            vs, vp = figures(y, p_val, t)
            ps, pp = figures(y, p_proxy, t)
            table.setdefault(name, []).append((t, vs, vp, ps, pp))
            print(f"| {name} | {t:.3f} | {vs:.3f} | {vp:.3f} | {ps:.3f} | {pp:.3f} |")
    if len(runs) > 1:
        print(f"\nspread over {len(runs)} runs: mean (min-max)")
        print("| rule | threshold | val sens | val spec | proxy sens | proxy spec |\n|---|---|---|---|---|---|")
        for name, rows in table.items():
            a = np.array(rows)
            cells = " | ".join(f"{c.mean():.3f} ({c.min():.3f}-{c.max():.3f})" for c in a.T)
            print(f"| {name} | {cells} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python benchmarks/operating_point.py DATA_DIR RUN_DIR [RUN_DIR...]")
    main(sys.argv[1], sys.argv[2:])
