"""The reference distributions a model card keeps for drift checks (`edge-xray site check`).

On the run's patient-level validation scans: the calibrated pneumonia probability and the gate's
feature distance of each scan, kept as quantiles (edge_xray.site.QUANTILES), with the count.
"""

from __future__ import annotations

import numpy as np

from edge_xray.card import ModelCard
from edge_xray.decision import Calibration, pneumonia_probability
from edge_xray.calibration.gate import run_scans
from edge_xray.gate import Gate
from edge_xray.site import quantiles
from edge_xray.train.data import scan_folder
from edge_xray.train.rundir import RunDir, file_key


def fit_reference(model, card: dict, run, data_dir) -> dict:
    """Reference quantiles of p and of the gate distance for MODEL (an edge_xray.runtime.Model) with CARD."""
    val = RunDir(run).val_files()
    paths = [i.path for i in scan_folder(data_dir) if file_key(i.path) in val]
    cal = Calibration.from_card(ModelCard(card))
    gate = Gate.from_card(card)
    p, dist = [], []
    for _, logits, features in run_scans(model, paths):
        p.append(float(pneumonia_probability(cal.probabilities(logits))))
        d = gate.feature_distance(features)
        if d is not None:
            dist.append(d)
    ref = {"data": "the run's patient-level validation scans", "n": len(p), "p_quantiles": quantiles(p),
           "flagged_share": round(float((np.array(p) >= cal.threshold).mean()), 4)}
    if dist:
        ref["distance_quantiles"] = quantiles(dist)
    return ref
