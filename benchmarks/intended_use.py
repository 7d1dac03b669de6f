"""Intended-use figures: refusals of held-out real negatives by kind, false refusals of real child
scans, the check's cost per scan and its file size.

    python benchmarks/intended_use.py --data TRAIN_DIR --negatives INTENDED_USE_DIR [--negatives MORE_DIR ...]
                                      [--fullres FULLRES_DIR] [--hold-out-collection NAME ...]
                                      [--intended-use-model FILE] [--json]

Every input goes through the whole screen (edge_xray.load_model: cheap checks, intended-use check,
orientation, gate), and the intended-use check alone is counted beside it:
- held-out negatives (train/intended_use.is_held_out: patients the model never learnt from) of each
  kind (adult frontal, lateral, other body part), and calibration/negatives.py's held-out non-X-rays;
  also the negatives it learnt from (for reference only); held-out negatives again by collection
  (labels.csv `collection`); --hold-out-collection holds out every file of a collection, as the
  training run that left it out did;
- the screening model's patient-level validation scans (split seed 1, fraction 0.15: the bundled
  model's), and the full-resolution scans (training images: a false-refusal check only); the same
  validation scans under one site's look: benchmarks/site_looks.py;
- the intended-use refusal reasons given;
- cost on full-resolution scans as the screen decodes them: the median time the check adds (its
  invocation, plus its own preparation unless its input size is the orientation model's, whose
  prepared input it then shares), and the model file's size.
Prints one line per figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter

import numpy as np

import edge_xray
from edge_xray.intended_use import REASONS
from edge_xray.inputs import list_images
from edge_xray.preprocess import crop_border, load_image, prepare
from edge_xray.train.intended_use import (NEGATIVE_KINDS, SPLIT_SEED, VAL_FRACTION, generated_negatives,
                                         negative_files)

INTENDED_USE_REASONS = set(REASONS.values())


def screen_all(screener, sources) -> list:
    return [screener.classify(s) for s in sources]


def tally(rows, threshold) -> dict:
    n = len(rows)
    refused = [r for r in rows if r.status != "ok"]
    by_check = [r for r in rows if r.intended_use is not None and r.intended_use < threshold]
    return {"n": n, "screened": n - len(refused), "refused": len(refused), "refused_by_check": len(by_check),
            "reasons": dict(Counter(reason_kind(r.error) for r in refused).most_common())}


def reason_kind(error: str) -> str:
    """A refusal reason without its figures (the gate's reasons end in a measured value in brackets;
    the intended-use reasons' own brackets hold words and stay)."""
    return re.sub(r" \([^()]*\d[^()]*\)$", "", error)


AGE_BANDS = ((18, 30), (30, 45), (45, 60), (60, 120))


def by_age(rows, ages) -> dict:
    """Adult films refused by the whole screen, per age band (a hint of how the check treats age)."""
    out = {}
    for lo, hi in AGE_BANDS:
        r = [s for s, age in zip(rows, ages) if age is not None and lo <= age < hi]
        out[f"{lo}-{hi}"] = {"n": len(r), "refused": sum(s.status != "ok" for s in r),
                             "median_p_in_use": round(float(np.median([s.intended_use for s in r if s.intended_use is not None] or [np.nan])), 4)}
    return out


def validation_scans(data_dir):
    """(paths, images kept at the training side) of the bundled model's validation scans (the split the
    intended-use training uses too: train/intended_use.SPLIT_SEED, VAL_FRACTION)."""
    from edge_xray.train.data import run_split

    items, images, _, _, va = run_split(data_dir, VAL_FRACTION, SPLIT_SEED)
    return [items[i].path for i in va], [images[i] for i in va]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="Kermany-layout training folder (for the validation split)")
    ap.add_argument("--negatives", required=True, action="append",
                    help="intended_use folder (adult_frontal/, lateral/, other_body/); repeat for more folders")
    ap.add_argument("--hold-out-collection", action="append", default=[], dest="hold_out_collections",
                    help="every negative of this collection is held out (as in the training run)")
    ap.add_argument("--fullres", default=None, help="full-resolution scans")
    ap.add_argument("--intended-use-model", default=None, help="default: the bundled one")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    screener = edge_xray.load_model(intended_use_model=args.intended_use_model,
                                    allow_unverified=args.intended_use_model is not None)
    iu = screener.intended_use
    t = iu.threshold
    report = {"intended_use_model": iu.path.name, "sha256": iu.sha256, "threshold": t,
              "size_bytes": iu.path.stat().st_size}
    print(f"intended-use model {iu.path.name}: {report['size_bytes'] / 1024:.1f} KB, threshold {t:.4g}")

    negs = negative_files(args.negatives, args.hold_out_collections)
    adults, adult_ages = [], []
    for part in ("held_out", "learnt_from"):
        print(f"-- {part.replace('_', ' ')} negatives (whole screen; refused by the check itself)")
        by_collection = {}
        for kind in NEGATIVE_KINDS:
            these = [n for n in negs if n.kind == kind and n.held_out == (part == "held_out")]
            rows = screen_all(screener, [n.path for n in these])
            if kind == "adult_frontal":
                adults += rows
                adult_ages += [n.age for n in these]
            for n, row in zip(these, rows):
                by_collection.setdefault((n.collection, kind), []).append(row)
            r = tally(rows, t)
            report[f"{part}/{kind}"] = r
            print(f"{kind:14s} screened {r['screened']}/{r['n']}  refused {r['refused']} (by the check {r['refused_by_check']})"
                  f"  reasons {r['reasons']}")
        for (collection, kind), rows in sorted(by_collection.items()):
            r = tally(rows, t)
            report[f"{part}/{collection}/{kind}"] = r
            print(f"    collection {collection}, {kind}: screened {r['screened']}/{r['n']} "
                  f"(refused by the check {r['refused_by_check']})")
        gen = [im for _, im in generated_negatives("held-out" if part == "held_out" else "fit")]
        r = tally(screen_all(screener, gen), t)
        report[f"{part}/not_xray_generated"] = r
        print(f"{'not_xray':14s} screened {r['screened']}/{r['n']}  refused {r['refused']} (by the check "
              f"{r['refused_by_check']}); intended-use reasons given: "
              f"{sum(v for k, v in r['reasons'].items() if k in INTENDED_USE_REASONS)}")

    report["adult_by_age"] = by_age(adults, adult_ages)
    print("adult frontal films (held out and learnt from) refused by age: " + ", ".join(
        f"{k}: {v['refused']}/{v['n']} (median P(in use) {v['median_p_in_use']})" for k, v in report["adult_by_age"].items()))
    print("-- real child scans (false refusals)")
    val_paths, _ = validation_scans(args.data)
    val_rows = screen_all(screener, val_paths)
    r = tally(val_rows, t)
    report["validation"] = r
    print(f"validation: refused {r['refused']}/{r['n']} (by the check {r['refused_by_check']})  reasons {r['reasons']}")
    p = np.array([row.intended_use for row in val_rows if row.intended_use is not None])
    report["validation_p_min"] = round(float(p.min()), 4)
    print(f"validation P(in use): min {p.min():.4f}, 1st percentile {np.quantile(p, 0.01):.4f}, median {np.median(p):.4f}")
    if args.fullres:
        paths = list_images([args.fullres])
        r = tally(screen_all(screener, paths), t)
        report["fullres"] = r
        print(f"full resolution: refused {r['refused']}/{r['n']} (by the check {r['refused_by_check']})  reasons {r['reasons']}")
        prep, inv = [], []
        for path in paths:
            im = crop_border(load_image(path, screener.model.size))  # decoded and cropped (once) as the screen does
            t0 = time.perf_counter()
            x = prepare(im, iu.size, crop=False)
            prep.append(time.perf_counter() - t0)
            inv.append(_best(iu, x))
        shared = iu.size == screener.orientation.size  # then its input is the orientation model's, prepared once
        added = np.array(inv) + (0.0 if shared else np.array(prep))
        report["invoke_ms_p50"] = round(1000 * float(np.median(inv)), 3)
        report["prepare_ms_p50"] = round(1000 * float(np.median(prep)), 3)
        report["added_ms_p50"] = round(1000 * float(np.median(added)), 3)
        print(f"cost per full-resolution scan: added p50 {report['added_ms_p50']:.3f} ms (invocation p50 "
              f"{report['invoke_ms_p50']:.3f} ms; its {iu.size} px preparation p50 {report['prepare_ms_p50']:.3f} ms, "
              + ("shared with the orientation model, not added)" if shared else "added)"))
    if args.json:
        print(json.dumps(report, indent=2, default=str))


def _best(iu, x, repeat: int = 5) -> float:
    """The fastest of REPEAT runs of the check on X (seconds): the machine is shared."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        iu.check(x)
        best = min(best, time.perf_counter() - t0)
    return best


if __name__ == "__main__":
    main()
