"""Orientation figures: turned, mirrored and flipped scans, and the screening answer after correction.

    python benchmarks/orientation.py --data TRAIN_DIR [--fullres FULLRES_DIR] [--model FILE]
                                     [--orientation-model FILE]

Validation scans: the main model's patient-level split, rebuilt exactly as `edge-xray train` makes it
(patient_split on the 224 px images, validation fraction 0.15, seed 0). Each scan is turned by 0, 90,
180 and 270 degrees clockwise (before preprocessing, as a turned file), and:
  recognised   the orientation model is confident and right
  refused      not confident (the classify loop refuses: "image appears rotated or flipped")
  wrong        confident and wrong (a wrong correction, or a turned scan taken as upright)
and the screening model's answer after correction is compared with its answer on the upright scan.
Mirrored (left-right) and flipped (top-bottom) scans, and a sweep of the confidence threshold, follow.
Full-resolution scans: the same at 0/90/180/270, decoded as the classify loop decodes them.
Uses the edge runtime; prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edge_xray.decision import Calibration
from edge_xray.orientation import ANGLES, CONFIDENCE, OrientationModel, decide, rotate_back, rotate_clockwise
from edge_xray.preprocess import load_image, prepare
from edge_xray.runtime import Model
from edge_xray.train.data import SOURCE_SIZE, load_images, patient_split, scan_folder

VAL_FRACTION, SEED = 0.15, 0  # as `edge-xray train` (TrainConfig defaults)
SWEEP = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def answer(model: Model, im: Image.Image) -> tuple:
    d = Calibration.from_card(model.card).decide(model.run(prepare(im, model.size)))
    return d.label, d.pneumonia_type


def outcome(om: OrientationModel, im: Image.Image, angle: int, threshold: float = CONFIDENCE):
    p = om.probabilities(im)
    degrees, confident = decide(p, threshold)
    kind = "refused" if not confident else "recognised" if degrees == angle else "wrong"
    return kind, degrees, p


def turned_figures(name, grays, om, main, base, angles=ANGLES):
    """Per angle: recognised / refused / wrong, and the screening answer after correction vs upright."""
    out, probs = {}, {}
    for angle in angles:
        counts = {"recognised": 0, "refused": 0, "wrong": 0}
        same_label = same_full = screened = uncorrected_same = 0
        ps = []
        for im, b in zip(grays, base):
            turned = rotate_clockwise(im, angle)
            kind, degrees, p = outcome(om, turned, angle)
            ps.append(p)
            counts[kind] += 1
            uncorrected_same += answer(main, turned)[0] == b[0]
            if kind != "refused":
                a = answer(main, rotate_back(turned, degrees))
                screened += 1
                same_label += a[0] == b[0]
                same_full += a == b
        n = len(grays)
        out[str(angle)] = dict(n=n, **counts, recognised_rate=round(counts["recognised"] / n, 4),
                               screened=screened, same_label_after=round(same_label / max(screened, 1), 4),
                               same_label_and_type_after=round(same_full / max(screened, 1), 4),
                               same_label_without_orientation=round(uncorrected_same / n, 4))
        probs[angle] = np.stack(ps)
        r = out[str(angle)]
        print(f"{name} turned {angle:3d}: recognised {r['recognised']}/{n} = {r['recognised_rate']:.4f}  "
              f"refused {r['refused']}  wrong {r['wrong']}  | answer after correction = upright: "
              f"{r['same_label_after']:.4f} (label), {r['same_label_and_type_after']:.4f} (label and type) "
              f"of {screened} screened; without orientation {r['same_label_without_orientation']:.4f}")
    return out, probs


def flipped_figures(name, grays, om, main, base, flip):
    """What the model does with mirrored (or top-bottom flipped) scans, and the answer after it."""
    decisions, same, screened = {}, 0, 0
    for im, b in zip(grays, base):
        f = im.transpose(flip)
        degrees, confident = decide(om.probabilities(f))
        key = f"{degrees}" if confident else "refused"
        decisions[key] = decisions.get(key, 0) + 1
        if confident:
            screened += 1
            same += answer(main, rotate_back(f, degrees))[0] == b[0]
    r = {"n": len(grays), "decisions": decisions, "screened": screened,
         "same_label_as_upright": round(same / max(screened, 1), 4)}
    print(f"{name}: decisions {decisions} (degrees corrected, or refused); answer after = upright answer "
          f"{same}/{screened} = {r['same_label_as_upright']:.4f}")
    return r


def sweep(probs: dict) -> list:
    rows = []
    for t in SWEEP:
        row = {"threshold": t}
        for angle, p in probs.items():
            k = ANGLES.index(angle)
            conf = p.max(1) >= t
            row[str(angle)] = {"recognised": round(float((conf & (p.argmax(1) == k)).mean()), 4),
                               "refused": int((~conf).sum()), "wrong": int((conf & (p.argmax(1) != k)).sum())}
        rows.append(row)
        print(f"threshold {t:.2f}: " + "  ".join(
            f"{a}: rec {row[str(a)]['recognised']:.4f} ref {row[str(a)]['refused']} wrong {row[str(a)]['wrong']}"
            for a in probs))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="the training folder (NORMAL/, PNEUMONIA/)")
    ap.add_argument("--fullres", default=None, help="full-resolution scans (NORMAL/, PNEUMONIA/)")
    ap.add_argument("--model", default=None, help="screening model (default: bundled)")
    ap.add_argument("--orientation-model", default=None, help="orientation model (default: bundled)")
    args = ap.parse_args()
    main_model = Model(args.model)
    om = OrientationModel(args.orientation_model)
    report = {"orientation_model_sha256": om.sha256, "model_sha256": main_model.sha256, "confidence": CONFIDENCE}

    items = scan_folder(args.data)
    items, images, _ = load_images(items, SOURCE_SIZE)
    _, va, _ = patient_split(items, images, VAL_FRACTION, SEED)
    grays = [Image.fromarray(images[i]) for i in va]
    print(f"validation: {len(va)} scans of the main model's patient-level split (seed {SEED})")
    base = [answer(main_model, im) for im in grays]
    report["val"], probs = turned_figures("val", grays, om, main_model, base)
    report["val_mirrored"] = flipped_figures("val mirrored left-right", grays, om, main_model, base,
                                             Image.Transpose.FLIP_LEFT_RIGHT)
    report["val_flipped"] = flipped_figures("val flipped top-bottom", grays, om, main_model, base,
                                            Image.Transpose.FLIP_TOP_BOTTOM)
    report["val_sweep"] = sweep(probs)

    if args.fullres:
        files = sorted(p for p in Path(args.fullres).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        val_names = {(items[i].path.parent.name, items[i].path.name) for i in va}
        full = [load_image(f, main_model.size) for f in files]  # decoded as the classify loop decodes
        in_val = [(f.parent.name, f.name) in val_names for f in files]
        print(f"full resolution: {len(files)} scans ({sum(in_val)} of validation patients), sizes "
              f"{min(min(im.size) for im in full)}-{max(max(im.size) for im in full)} px after decoding")
        fbase = [answer(main_model, im) for im in full]
        report["fullres"], fprobs = turned_figures("fullres", full, om, main_model, fbase)
        turned = sum(report["fullres"][str(a)]["recognised"] + report["fullres"][str(a)]["refused"]
                     for a in ANGLES[1:])
        total = sum(report["fullres"][str(a)]["n"] for a in ANGLES[1:])
        print(f"fullres turned 90/180/270: corrected or refused {turned}/{total} = {turned / total:.4f}; "
              f"upright scans falsely corrected {report['fullres']['0']['wrong']}, refused "
              f"{report['fullres']['0']['refused']} of {len(files)}")
        report["fullres_turned_corrected_or_refused"] = [turned, total]
        for angle in ANGLES:
            sub = fprobs[angle][np.array(in_val)]
            if len(sub):
                ok = float(((sub.max(1) >= CONFIDENCE) & (sub.argmax(1) == ANGLES.index(angle))).mean())
                print(f"  of validation patients only, turned {angle}: recognised {ok:.4f} of {len(sub)}")
        report["fullres_mirrored"] = flipped_figures("fullres mirrored left-right", full, om, main_model, fbase,
                                                     Image.Transpose.FLIP_LEFT_RIGHT)
        report["fullres_flipped"] = flipped_figures("fullres flipped top-bottom", full, om, main_model, fbase,
                                                    Image.Transpose.FLIP_TOP_BOTTOM)
        # the same scans decoded at their full size (as a PNG or DICOM original would be, no JPEG draft)
        big = [load_image(f) for f in files]
        print(f"full size: {min(min(im.size) for im in big)}-{max(max(im.size) for im in big)} px")
        report["fullres_full_size"] = {}
        for angle in ANGLES:
            kinds = [outcome(om, rotate_clockwise(im, angle), angle)[0] for im in big]
            r = {k: kinds.count(k) for k in ("recognised", "refused", "wrong")}
            report["fullres_full_size"][str(angle)] = r
            print(f"fullres at full size turned {angle:3d}: {r}")
        # cost of orient() on a decoded full-resolution scan (prepare at the model's size + inference)
        from edge_xray.orientation import orient

        times = []
        for im in full[:40] * 3:
            t0 = time.perf_counter()
            orient(rotate_clockwise(im, 90), om)
            times.append(time.perf_counter() - t0)
        report["orient_ms_median"] = round(1000 * float(np.median(times)), 2)
        print(f"orient() on a decoded full-resolution scan turned 90 degrees: median "
              f"{report['orient_ms_median']:.2f} ms (rotation of the scan included)")
    print(json.dumps(report, default=float))


if __name__ == "__main__":
    main()
