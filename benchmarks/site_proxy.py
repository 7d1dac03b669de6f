"""Single-look "site" proxies: one acquisition look applied to every validation scan, both classes.

    python benchmarks/site_proxy.py DATA_DIR RUN_DIR [RUN_DIR...]

The shift proxy of training (`train/augment.py: shift_proxy`) swaps each class's look, the worst case
for both classes at once; a real site has one look for all its scans. These two looks use stronger
settings than the shift proxy (so a model trained with `--shift-swap` has not seen them exactly):
`train/augment.py: SITE_LOOKS` (soft: squeezed, softened, lifted black level; sharp: stretched,
edge-enhanced, more contrast).
Each run is scored at its own threshold and temperature (metrics.json): AUC, sensitivity, specificity.
"""

import sys
from pathlib import Path

import numpy as np

from edge_xray import metrics
from edge_xray.train.augment import SITE_LOOKS, site_look
from edge_xray.train.rundir import RunDir, file_key

LOOKS = ("none", *SITE_LOOKS)


def main(data_dir, runs):
    from edge_xray.train.data import SOURCE_SIZE, load_images, prepare_all, scan_folder
    from edge_xray.train.tfcompat import load_keras_model

    print("| run | threshold | " + " | ".join(f"{k} AUC | {k} sens | {k} spec" for k in LOOKS) + " |")
    print("|---|---|" + "---|---|---|" * len(LOOKS))
    for run in map(Path, runs):
        m = RunDir(run).metrics
        size = RunDir(run).config["train"]["image_size"]
        val_files = RunDir(run).val_files()
        items = [i for i in scan_folder(data_dir) if file_key(i.path) in val_files]
        items, images, _ = load_images(items, min(SOURCE_SIZE, 2 * size))
        y = np.array([i.label for i in items]) > 0
        model = load_keras_model(RunDir(run).model)
        cells = []
        for kind in LOOKS:
            x = prepare_all(np.stack([site_look(a, kind) for a in images]), size)
            logits = model.predict(x, batch_size=128, verbose=0)
            p = metrics.pneumonia_probability(metrics.softmax(logits, m["temperature"], m.get("logit_bias")))
            b = metrics.binary_metrics(y, p, m["threshold"])
            cells.append(f"{b['auc']:.4f} | {b['sensitivity']:.3f} | {b['specificity']:.3f}")
        print(f"| {run.name} | {m['threshold']:.3f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python benchmarks/site_proxy.py DATA_DIR RUN_DIR [RUN_DIR...]")
    main(sys.argv[1], sys.argv[2:])
