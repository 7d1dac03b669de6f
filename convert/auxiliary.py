"""Auxiliary models: a run folder of train/intended_use.py or train/orientation.py -> the int8 model
and its card (one card builder for both: `_card`).

    card = convert_intended_use(RUN_DIR, "edge-xray-intended-use-int8.tflite")
    card = convert_orientation(RUN_DIR, "edge-xray-orientation-int8.tflite")

The run's quantization-aware Keras model (qat.h5) is converted with the project's INT8 preset
(convert.convert_network, calibrated on the run's calibration.npy), checked to be fully integer, and
measured as the device runs it, on the run's evaluation.npz: the validation scans (upright, turned
90, 180, 270 degrees, and under each site look), the full-resolution scans, and every held-out negative by kind. The refusal
threshold is chosen here, on real scans only (THRESHOLD_RULE), and written in the card with the
figures; edge_xray.intended_use reads it from there. The orientation run is measured on its
validation scans at the four rotations and mirrored (train/orientation.rotation_report).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

import numpy as np

from edge_xray.card import ModelCard
from edge_xray.errors import EdgeXrayError, InputError, UsageError
from edge_xray.intended_use import IN_USE, LABELS, TEST_TIME_VIEWS, IntendedUseModel
from edge_xray.orientation import ANGLES, CONFIDENCE, OrientationModel
from edge_xray.train.augment import SITE_LOOKS
from edge_xray.train.rundir import AUX_CALIBRATION as CALIBRATION  # the run folder's files
from edge_xray.train.rundir import AUX_EVALUATION as EVALUATION
from edge_xray.train.rundir import CONFIG
from edge_xray.train.rundir import QAT_MODEL as QAT

from .convert import card_head, convert_network, float_tensors

# The refusal threshold: SAFETY times the lowest P(in use) of the real child scans the run kept aside
# (validation, full resolution; as the files are, upright), capped at MAX_THRESHOLD and floored at
# MIN_THRESHOLD. So no such scan is refused. SAFETY was 0.5 in rounds 4-7 (a x2 margin for harder
# scans from other units); 0.9 since round 8: screening an adult's film (an answer with no measured
# accuracy) is the more dangerous error, a child's scan refused (a reason, no answer) the safer one.
# The margin's cost and gain: docs/evidence.md, round 8 (held-out adult films; children under the site looks).
# Turned scans are reported beside it (a rare input: the card says how many of them the check refuses).
SAFETY = 0.9
MAX_THRESHOLD = 0.5
MIN_THRESHOLD = 0.001
THRESHOLD_RULE = (f"{SAFETY} x the lowest P(in use) of the validation scans and the full-resolution scans "
                  f"(upright), within [{MIN_THRESHOLD}, {MAX_THRESHOLD}]")
KIND_NAMES = {1: "adult_frontal", 2: "lateral", 3: "other_body", 4: "not_xray_generated"}


def choose_threshold(p_real: np.ndarray) -> float:
    """THRESHOLD_RULE on the P(in use) of real child scans."""
    if len(p_real) == 0:
        return MAX_THRESHOLD
    return float(np.clip(SAFETY * float(np.min(p_real)), MIN_THRESHOLD, MAX_THRESHOLD))


def refusal_report(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Held-out negatives: per kind, refused (P(in use) < threshold), and refused for the right kind."""
    out = {}
    refused = probs[:, IN_USE] < threshold
    kind = 1 + probs[:, 1:].argmax(1)
    for c, name in KIND_NAMES.items():
        m = labels == c
        n = int(m.sum())
        if n:
            out[name] = {"n": n, "refused": int(refused[m].sum()), "refused_share": round(float(refused[m].mean()), 4),
                         "right_reason": int((refused & (kind == c))[m].sum())}
    return out


def _p(net, x):
    return net.probabilities_batch(x[..., 0] if x.ndim == 4 else x)


def evaluate(net, ev: dict, threshold: float | None = None) -> tuple[float, dict]:
    """(threshold, metrics) of a converted model on a run's evaluation arrays."""
    p_val = {k: _p(net, ev[k])[:, IN_USE] for k in ("validation", "validation_90", "validation_180", "validation_270")}
    p_full = _p(net, ev["fullres"])[:, IN_USE] if len(ev["fullres"]) else np.zeros(0)
    real = np.concatenate([p_val["validation"], p_full])
    if threshold is None:
        threshold = choose_threshold(real)
    held = _p(net, ev["held_out"])
    train_neg = _p(net, ev["train_negatives"])

    def scans(p):
        return {"n": int(len(p)), "refused": int((p < threshold).sum()),
                "min_p_in_use": round(float(p.min()), 4) if len(p) else None,
                "p01_p_in_use": round(float(np.quantile(p, 0.01)), 4) if len(p) else None}

    metrics = {
        "data": "the run's evaluation set: validation scans of patients neither model learnt from, the "
                "full-resolution scans (training images, a false-refusal check only), held-out negatives "
                "(patients never learnt from) and generated non-X-rays never learnt from; the int8 model",
        "threshold": round(threshold, 6),
        "validation": {k.replace("validation_", "turned_") if k != "validation" else "upright": scans(v)
                       for k, v in p_val.items()},
        "fullres": scans(p_full),
        # one site's acquisition look on every validation scan (train/augment.SITE_LOOKS): a shift proxy,
        # reported beside the rule, not part of it
        "site_looks": {k: scans(_p(net, ev[f"validation_{k}"])[:, IN_USE]) for k in SITE_LOOKS if f"validation_{k}" in ev},
        "held_out_negatives": refusal_report(held, ev["held_out_labels"], threshold),
        "held_out_by_collection": {
            str(c): refusal_report(held[ev["held_out_collections"] == c], ev["held_out_labels"][ev["held_out_collections"] == c],
                                   threshold) for c in sorted(set(ev.get("held_out_collections", [])))},
        "training_negatives": refusal_report(train_neg, ev["train_negative_labels"], threshold),
    }
    return threshold, metrics


def _convert_run(run: Path, out: Path, model_class, what: str):
    """(flatbuffer, converted model, run config, evaluation arrays) of an auxiliary run folder."""
    if out.suffix != ".tflite":
        raise UsageError(f"--out must end in .tflite (got {out.name})")
    for name in (QAT, CALIBRATION, EVALUATION, CONFIG):
        if not (run / name).exists():
            raise InputError(f"{run}: not {what} run folder (no {name})")
    from edge_xray.train.tfcompat import load_keras_model

    config = json.loads((run / CONFIG).read_text())
    model = load_keras_model(run / QAT)
    flatbuffer = convert_network(model, "int8", np.load(run / CALIBRATION))
    net = model_class(flatbuffer=flatbuffer)
    left = float_tensors(net)
    if left:
        raise EdgeXrayError(f"conversion left {len(left)} float tensors (e.g. {left[0]}): not fully integer")
    with np.load(run / EVALUATION) as z:
        ev = {k: z[k] for k in z.files}
    return flatbuffer, net, config, ev


def _card(config: dict, net, labels, **fields) -> dict:
    """The card of an auxiliary int8 model: identity, tensors, FIELDS (what it means, its figures), and
    the run's training record."""
    return {
        **card_head(config["name"], config["version"], "int8", labels, net, outputs={"logits": net.outputs["logits"]}),
        **fields,
        "training": {k: config[k] for k in ("data", "recipe", "model", "history", "versions", "command",
                                            "wall_seconds") if k in config},
    }


def convert_intended_use(run, out) -> dict:
    """Convert the run folder RUN (train/intended_use.py) to OUT (.tflite) with its card; returns the side card."""
    run, out = Path(run), Path(out)
    flatbuffer, net, config, ev = _convert_run(run, out, IntendedUseModel, "an intended-use")
    net.views = TEST_TIME_VIEWS  # the threshold and figures are those of the views the device will average
    threshold, metrics = evaluate(net, ev)
    card = _card(
        config, net, LABELS,
        label_meaning="softmax over the labels; P(child_frontal_chest) is P(in use)",
        refusal_threshold=round(threshold, 6),
        test_time_views=list(net.views),
        threshold_rule=THRESHOLD_RULE,
        intended_use="Tells a frontal chest X-ray of a young child (what the screen is made for) from an adult "
                     "chest X-ray, a lateral view, another body part or a non-X-ray, before screening. A scan "
                     "turned by a quarter turn counts as in use (the orientation model corrects it).",
        metrics=metrics)
    return ModelCard.write(out, flatbuffer, card).to_dict()


def rethreshold_intended_use(model, evaluation: dict, out=None, views=TEST_TIME_VIEWS, threshold=None,
                             version: str | None = None) -> dict:
    """An intended-use model already converted, measured anew with the test-time VIEWS on EVALUATION
    (train/intended_use.evaluation_set: the arrays its run wrote): the threshold by THRESHOLD_RULE (or
    THRESHOLD, given: to compare models at one threshold), the figures and the views go into its card;
    the network is unchanged. Writes OUT (default: MODEL itself, whose file, with the card embedded, then
    has a new sha256), with VERSION in the card if given. Returns the side card. A model measured at a
    given THRESHOLD is a copy for comparison: OUT is then required (UsageError), so that a model file,
    the bundled one above all, never ends up carrying a threshold that is not its rule's."""
    from edge_xray.card import read_model

    comparison_copy(threshold, out)

    flatbuffer, card = read_model(model)
    net = IntendedUseModel(flatbuffer=flatbuffer, views=views)
    given = threshold
    threshold, metrics = evaluate(net, evaluation, given)
    card = {k: v for k, v in card.items() if k not in ("sha256", "size_bytes")}
    card.update(refusal_threshold=round(threshold, 6), test_time_views=list(net.views), metrics=metrics,
                threshold_chosen=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                threshold_rule=THRESHOLD_RULE if given is None else f"given ({given:g}), not the rule: {THRESHOLD_RULE}")
    if version:
        card["version"] = version
    return ModelCard.write(Path(out or model), flatbuffer, card).to_dict()


def comparison_copy(threshold, out) -> None:
    """Raises UsageError when a model would be measured at a given THRESHOLD into itself (no OUT)."""
    if threshold is not None and out is None:
        raise UsageError(f"--threshold {threshold:g} makes a copy for comparison: give --out (the model itself "
                         "keeps the threshold of its rule)")


def convert_orientation(run, out) -> dict:
    """Convert the run folder RUN (train/orientation.py) to OUT (.tflite) with its card; returns the side card."""
    from edge_xray.train.orientation import rotation_report

    run, out = Path(run), Path(out)
    flatbuffer, net, config, ev = _convert_run(run, out, OrientationModel, "an orientation")
    report = rotation_report(net.probabilities_batch(ev["validation"][..., 0]), ev["validation_labels"])
    mirrored = ev["mirrored"]
    mirror_upright = float((net.probabilities_batch(mirrored).argmax(1) == 0).mean()) if len(mirrored) else None
    split = config["split"]
    card = _card(
        config, net, [str(a) for a in ANGLES],
        label_meaning="degrees the file is turned clockwise from upright; turn it back counter-clockwise",
        confidence_threshold=CONFIDENCE,  # edge_xray.orientation.CONFIDENCE when converted
        intended_use="Tells whether a chest X-ray file is turned by 90, 180 or 270 degrees, before screening. "
                     "Left-right mirrored scans count as upright.",
        metrics={"data": "the main model's patient-level validation split (patient_split, seed "
                         f"{split['seed']}, fraction {split['val_fraction']}), each scan at the four rotations; "
                         "the int8 model",
                 "val": report,
                 "mirrored_kept_upright": None if mirror_upright is None else round(mirror_upright, 4)})
    return ModelCard.write(out, flatbuffer, card).to_dict()


def main(argv=None):
    """`python -m edge_xray.convert.auxiliary MODEL --data TRAIN_DIR --negatives DIR [--fullres DIR]
    [--views as_is,mirrored] [--threshold T] [--out FILE] [--version V]`: rethreshold_intended_use on the evaluation set of DATA and
    NEGATIVES (in place unless --out); prints the figures."""
    import argparse

    from edge_xray.train.intended_use import evaluation_set

    ap = argparse.ArgumentParser(description="re-threshold an intended-use model with the test-time views")
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--negatives", required=True, action="append", help="repeat for more folders")
    ap.add_argument("--fullres", default=None)
    ap.add_argument("--hold-out-collection", action="append", default=[], dest="hold_out_collections",
                    help="as the run that made MODEL held it out")
    ap.add_argument("--views", default=",".join(TEST_TIME_VIEWS), help="comma-separated: as_is, mirrored")
    ap.add_argument("--threshold", type=float, default=None,
                    help="measure at this threshold instead of the rule's (to compare models; the card says so)")
    ap.add_argument("--out", default=None, help="default: MODEL itself (required with --threshold)")
    ap.add_argument("--version", default=None, help="the model's new version in its card (default: kept)")
    args = ap.parse_args(argv)
    try:
        comparison_copy(args.threshold, args.out)  # before the evaluation set, which takes a minute
        ev = evaluation_set(args.data, args.negatives, args.fullres, hold_out_collections=tuple(args.hold_out_collections))
        card = rethreshold_intended_use(args.model, ev, args.out, tuple(args.views.split(",")), args.threshold,
                                        args.version)
    except EdgeXrayError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    print("\n".join(summary(card)))


def orientation_summary(card: dict) -> list[str]:
    """Lines for the command line: the orientation model's validation figures."""
    val = card["metrics"]["val"]
    return ["int8 on validation: " + "  ".join(
        f"{a}: {val[str(a)]['recognised']:.4f} (refused {val[str(a)]['refused']}, wrong {val[str(a)]['wrong']})"
        for a in ANGLES) + f"  mirrored kept upright: {card['metrics']['mirrored_kept_upright']}"]


def summary(card: dict) -> list[str]:
    """Lines for the command line: the threshold and the refusal figures of a card."""
    m = card["metrics"]
    lines = [f"refusal threshold {m['threshold']:.4g} ({card['threshold_rule']})"]
    for k, v in m["validation"].items():
        lines.append(f"validation {k}: {v['refused']}/{v['n']} refused (lowest P(in use) {v['min_p_in_use']})")
    f = m["fullres"]
    lines.append(f"full resolution: {f['refused']}/{f['n']} refused (lowest P(in use) {f['min_p_in_use']})")
    for k, v in m.get("site_looks", {}).items():
        lines.append(f"validation, {k} site look: {v['refused']}/{v['n']} refused (lowest P(in use) {v['min_p_in_use']})")
    for k, v in m["held_out_negatives"].items():
        lines.append(f"held-out {k}: {v['refused']}/{v['n']} refused ({v['right_reason']} for the right kind)")
    for c, kinds in m.get("held_out_by_collection", {}).items():
        lines.append(f"  held out, collection {c}: " + ", ".join(f"{k} {v['refused']}/{v['n']}" for k, v in kinds.items()))
    return lines


if __name__ == "__main__":  # pragma: no cover
    main()
