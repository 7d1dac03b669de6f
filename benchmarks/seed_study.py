"""Per-run rows and the spread over runs (seeds) of a recipe, from run folders' metrics.json.

    python benchmarks/seed_study.py RUN_DIR [RUN_DIR...]

Runs are grouped by their recipe (every training setting but the seeds of the model and of the patient
fold, both shown beside the run); each group gets one row per run and a row "mean (min-max)". Figures
are those of the run's final model (QAT; float for a teacher) at its own operating point
(metrics.json: threshold, operating_point), on its own validation split and its shift proxy.
"""

import sys
from pathlib import Path

import numpy as np

from edge_xray.train.rundir import RunDir

COLUMNS = ("val AUC", "val acc", "val sens", "val spec", "proxy AUC", "proxy sens", "proxy spec",
           "bact/viral", "ECE", "threshold", "legacy threshold", "legacy proxy spec")


def figures(run: Path) -> tuple[str, int, list[float]]:
    cfg = RunDir(run).config["train"]
    m = RunDir(run).metrics
    v, p = m["val"], m["shift_proxy"]
    legacy = m.get("operating_point", {}).get("legacy", {}).get("threshold", float("nan"))
    legacy_spec = float("nan")
    scores = run / "scores.npz"  # written by benchmarks/operating_point.py
    if scores.exists():
        z = np.load(scores)
        legacy_spec = float((z["p_proxy"][z["labels"] == 0] < legacy).mean())
    recipe = f"{cfg['arch']}@{cfg['image_size']} {cfg['epochs']}+{cfg['qat_epochs']}" + (
        f", shift swap {cfg['shift_swap']}" if cfg.get("shift_swap") else "") + (
        f", distilled from {'+'.join(cfg['teachers'])} (alpha {cfg['distill_alpha']}, T "
        f"{cfg.get('distill_temperature', 1.0)})" if cfg.get("teachers") else "")
    row = [v["auc"], v["accuracy"], v["sensitivity"], v["specificity"], p["auc"], p["sensitivity"],
           p["specificity"], v["bacterial_vs_viral_accuracy"], v["ece"], m["threshold"], legacy, legacy_spec]
    fold = cfg["seed"] if cfg.get("split_seed") is None else cfg["split_seed"]  # the patient-level split's seed
    return recipe, f"seed {cfg['seed']}, fold {fold}", row


def main(runs):
    groups: dict[str, list] = {}
    for r in runs:
        recipe, seed, row = figures(Path(r))
        groups.setdefault(recipe, []).append((Path(r).name, seed, row))
    print("| recipe | run (seed) | " + " | ".join(COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 2))
    for recipe, rows in groups.items():
        for name, seed, row in rows:
            print(f"| {recipe} | {name} ({seed}) | " + " | ".join(f"{x:.3f}" for x in row) + " |")
        if len(rows) > 1:
            a = np.array([row for _, _, row in rows])
            print(f"| {recipe} | **mean (min-max), {len(rows)} runs** | "
                  + " | ".join(f"{c.mean():.3f} ({c.min():.3f}-{c.max():.3f})" for c in a.T) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/seed_study.py RUN_DIR [RUN_DIR...]")
    main(sys.argv[1:])
