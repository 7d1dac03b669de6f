"""Single-look "site" proxies: one acquisition look applied to every validation scan, both classes.

    python benchmarks/site_proxy.py DATA_DIR RUN_DIR [RUN_DIR...]

The shift proxy of training (`train/augment.py: shift_proxy`) swaps each class's look, the worst case
for both classes at once; a real site has one look for all its scans. These two looks use stronger
settings than the shift proxy (so a model trained with `--shift-swap` has not seen them exactly):
  soft:  squeezed sideways to 0.75, down-up resampled at 0.5, contrast 0.9, black level 24
  sharp: stretched sideways to 1.3, unsharp mask 120 %, contrast 1.15
Each run is scored at its own threshold and temperature (metrics.json): AUC, sensitivity, specificity.
"""

import sys
from pathlib import Path

import numpy as np

from edge_xray.train.rundir import RunDir, file_key
from PIL import Image, ImageFilter

from edge_xray import metrics

LOOKS = ("none", "soft", "sharp")


def look(gray: np.ndarray, kind: str) -> np.ndarray:
    from edge_xray.train import augment as aug

    if kind == "none":
        return gray
    im = Image.fromarray(gray)
    if kind == "soft":
        im = aug.down_up(aug.affine(im, 0.0, 0.75, 1.0, 0.0, 0.0), 0.5)
        x = aug.tone(np.asarray(im), 1.0, 0.9, 24.0)
    else:
        im = aug.affine(im, 0.0, 1.3, 1.0, 0.0, 0.0).filter(ImageFilter.UnsharpMask(radius=2, percent=120, threshold=2))
        x = aug.tone(np.asarray(im), 1.0, 1.15, 0.0)
    return np.rint(x).clip(0, 255).astype(np.uint8)


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
            x = prepare_all(np.stack([look(a, kind) for a in images]), size)
            logits = model.predict(x, batch_size=128, verbose=0)
            p = metrics.pneumonia_probability(metrics.softmax(logits, m["temperature"], m.get("logit_bias")))
            b = metrics.binary_metrics(y, p, m["threshold"])
            cells.append(f"{b['auc']:.4f} | {b['sensitivity']:.3f} | {b['specificity']:.3f}")
        print(f"| {run.name} | {m['threshold']:.3f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python benchmarks/site_proxy.py DATA_DIR RUN_DIR [RUN_DIR...]")
    main(sys.argv[1], sys.argv[2:])
