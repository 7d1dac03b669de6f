"""Print evidence-table rows (Markdown) from training runs: validation, shift proxy, train-vs-val errors.

    python benchmarks/evidence.py RUN_DIR [RUN_DIR...]
"""

import sys

from edge_xray.train.rundir import RunDir


def row(path) -> str:
    run = RunDir(path)
    cfg, m = run.config, run.metrics
    t, v, p, tr = cfg["train"], m["val"], m["shift_proxy"], m["train"]
    name = f"{t['arch']}@{t['image_size']}" + (f", distilled from {len(t['teachers'])} runs" if t.get("teachers") else "")
    return (f"| {name} | {cfg['model']['parameters'] / 1e3:.0f} k | "
            f"{cfg['model']['multiply_adds'] / 1e6:.1f} M | {t['epochs']}+{t['qat_epochs']} | "
            f"{v['accuracy']:.3f} | {v['sensitivity']:.3f} | {v['specificity']:.3f} | {v['auc']:.4f} | "
            f"{v['bacterial_vs_viral_accuracy']:.3f} | {p['accuracy']:.3f} | {p['auc']:.4f} | "
            f"{tr['type_I_rate']:.3f} / {v['type_I_rate']:.3f} | {tr['type_II_rate']:.3f} / {v['type_II_rate']:.3f} | "
            f"{m['threshold']:.3f} | {m['wall_seconds'] / 60:.1f} min |")


HEADER = ("| network | params | multiply-adds | epochs (float+QAT) | val acc | val sens | val spec | val AUC | "
          "bact/viral acc | proxy acc | proxy AUC | type I rate train / val | type II rate train / val | "
          "threshold | wall time |\n|" + "---|" * 15)

if __name__ == "__main__":
    print(HEADER)
    for r in sys.argv[1:]:
        print(row(r))
