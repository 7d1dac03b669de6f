"""Site calibration: the operating threshold set on a clinic's own labelled scans, and a drift check.

No default threshold survives every population: the model's ranking transfers to a new site, the
level of its scores does not. `calibrate_site` screens a labelled sample of the site's scans
(NORMAL/ and PNEUMONIA/, read by a local clinician), picks the threshold that reaches the target
sensitivity on new scans of that site, and reports sensitivity and specificity on the sample with
exact (Clopper-Pearson) 95 % intervals. `check_site` compares an unlabelled folder of a site's scans
with the reference the model card keeps from validation (or the site file's own sample).

The threshold rule. With the n pneumonia scores of the sample sorted, p(1) <= ... <= p(n), and the
threshold t = p(j), a new pneumonia scan of the same site is flagged with probability
(n - j + 1) / (n + 1) (exchangeability). j is the largest rank for which that is at least the target,
so the target holds on average for the site's next scans, not only on the sample (which would be
optimistic by about 1 / n).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, ModelError

SITE_FORMAT = "edge-xray-site/1"
DEFAULT_SENSITIVITY = 0.95
CONFIDENCE = 0.95
MIN_PER_CLASS = 20  # scans of each class below which a sample says too little
MAX_SENSITIVITY_CI_WIDTH = 0.20  # a wider 95 % interval of the sensitivity is refused
QUANTILES = 101  # reference distributions are kept as this many quantiles
PSI_BINS = 10
PSI_SHIFTED = 0.25  # population stability index: < 0.1 similar, 0.1-0.25 moderate, > 0.25 shifted
KS_ALPHA = 0.01  # "shifted" needs both: a KS p-value below this (not chance) and PSI above PSI_SHIFTED (not small);
# PSI alone over 10 bins is noisy at clinic sample sizes (it calls 30-80 % of same-population samples of 50 shifted)


# statistics ---------------------------------------------------------------------------------------
def _log_binom_pmf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    lg = math.lgamma
    return np.array([lg(n + 1) - lg(i + 1) - lg(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p) for i in k])


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return float(np.exp(_log_binom_pmf(np.arange(k, n + 1), n, p)).sum())


def _bisect(f, lo=0.0, hi=1.0, iters=80) -> float:
    """The root of an increasing F on [lo, hi]."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a proportion K / N."""
    if n <= 0:
        return (0.0, 1.0)
    a = (1.0 - confidence) / 2
    lo = 0.0 if k == 0 else _bisect(lambda p: _binom_sf(k, n, p) - a)
    hi = 1.0 if k == n else _bisect(lambda p: a - (1.0 - _binom_sf(k + 1, n, p)))
    return (lo, hi)


def site_threshold(p_pneumonia, target: float = DEFAULT_SENSITIVITY) -> float:
    """The threshold that flags a new pneumonia scan of the site with probability >= TARGET (see above)."""
    pos = np.sort(np.asarray(p_pneumonia, np.float64))
    n = len(pos)
    if n == 0:
        raise InputError("no pneumonia scans to set a threshold on")
    j = max(1, int(math.floor((1.0 - target) * (n + 1) + 1e-9)))
    return float(pos[j - 1])


def expected_sensitivity(n: int, target: float = DEFAULT_SENSITIVITY) -> float:
    j = max(1, int(math.floor((1.0 - target) * (n + 1) + 1e-9)))
    return (n - j + 1) / (n + 1)


def scans_needed(n_normal: int, n_pneumonia: int, target: float = DEFAULT_SENSITIVITY) -> dict:
    """How many more scans of each class the sample needs ({} when it is enough)."""
    more = {}
    if n_normal < MIN_PER_CLASS:
        more["NORMAL"] = MIN_PER_CLASS - n_normal
    n = max(n_pneumonia, MIN_PER_CLASS)
    while True:  # the sensitivity interval, at the flagged count the rule gives, must be narrow enough
        k = n - max(1, int(math.floor((1.0 - target) * (n + 1) + 1e-9))) + 1
        lo, hi = clopper_pearson(k, n)
        if hi - lo <= MAX_SENSITIVITY_CI_WIDTH:
            break
        n += 1
    if n > n_pneumonia:
        more["PNEUMONIA"] = n - n_pneumonia
    return more


def ks_against_quantiles(sample, ref_quantiles, n_ref: int) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic of SAMPLE against a reference kept as its quantiles,
    with the asymptotic p-value for sample sizes (len(SAMPLE), N_REF)."""
    x = np.sort(np.asarray(sample, np.float64))
    q = np.asarray(ref_quantiles, np.float64)
    levels = np.linspace(0.0, 1.0, len(q))
    pts = np.unique(np.concatenate([x, q]))
    f_site = np.searchsorted(x, pts, side="right") / len(x)
    f_ref = np.interp(pts, q, levels, left=0.0, right=1.0)
    d = float(np.max(np.abs(f_site - f_ref)))
    ne = len(x) * n_ref / (len(x) + n_ref)
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    p = 2 * sum((-1) ** (i - 1) * math.exp(-2 * i * i * lam * lam) for i in range(1, 101))
    return d, float(min(1.0, max(0.0, p)))


def psi_against_quantiles(sample, ref_quantiles, bins: int = PSI_BINS) -> float:
    """Population stability index of SAMPLE against the reference, on the reference's decile bins."""
    q = np.asarray(ref_quantiles, np.float64)
    edges = np.interp(np.linspace(0, 1, bins + 1), np.linspace(0, 1, len(q)), q)[1:-1]
    counts = np.bincount(np.searchsorted(edges, np.asarray(sample, np.float64), side="right"), minlength=bins)
    a = np.clip(counts / max(1, counts.sum()), 1e-4, None)
    e = np.full(bins, 1.0 / bins)
    return float(np.sum((a - e) * np.log(a / e)))


def quantiles(values) -> list[float]:
    return np.quantile(np.asarray(values, np.float64), np.linspace(0, 1, QUANTILES)).round(6).tolist()


# the site file -------------------------------------------------------------------------------------
def _checksum(data: dict) -> str:
    body = {k: v for k, v in data.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Site:
    """A verified site file: its threshold replaces the model card's."""

    path: str
    threshold: float
    sha256: str  # of the site file as stored
    data: dict


def load_site(path, model) -> Site:
    """Read and verify a site file for MODEL (an edge_xray.runtime.Model). Raises ModelError (exit 4)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"site file not found: {path}") from None
    except OSError as e:
        raise ModelError(f"site file {path.name} is unreadable ({e.strerror or e})") from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != SITE_FORMAT:
            raise ValueError
    except ValueError:
        raise ModelError(f"site file {path.name} is not an edge-xray site file") from None
    if data.get("checksum") != _checksum(data):
        raise ModelError(f"site file {path.name} was altered after it was made (checksum differs)")
    if data.get("model_sha256") != model.sha256:
        raise ModelError(f"site file {path.name} was made for another model (sha256 {str(data.get('model_sha256'))[:12]}..., "
                         f"this model is {str(model.sha256)[:12]}...)")
    t = data.get("threshold")
    if not isinstance(t, (int, float)) or not 0.0 < t < 1.0 or not math.isfinite(t):
        raise ModelError(f"site file {path.name} holds no valid threshold")
    return Site(str(path), float(t), hashlib.sha256(raw).hexdigest(), data)


def write_site(path, data: dict) -> dict:
    data = dict(data)
    data["checksum"] = _checksum(data)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
    return data


# calibrate and check ----------------------------------------------------------------------------------
def _summary(p) -> dict:
    p = np.asarray(p, np.float64)
    if len(p) == 0:
        return {"n": 0}
    q = np.quantile(p, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"n": int(len(p)), "mean": round(float(p.mean()), 4),
            **{f"p{int(k * 100):02d}": round(float(v), 4) for k, v in zip([0.05, 0.25, 0.5, 0.75, 0.95], q)}}


def screen_folder(screener, paths):
    """(screenings, gate feature distances) of every image under PATHS (edge_xray.batch)."""
    from .batch import Batch

    results = list(Batch(screener, paths))
    return [r.screening for r in results], [r.distance for r in results]


def calibrate_site(screener, labelled_dir, target: float = DEFAULT_SENSITIVITY) -> tuple[dict, list]:
    """(site data, refused screenings) for the labelled folder (NORMAL/ and PNEUMONIA/). Raises InputError
    when the sample is too small to say anything."""
    root = Path(labelled_dir)
    if not (0.5 <= target < 1.0):
        raise InputError(f"--sensitivity must lie between 0.5 and 1 (got {target})")
    missing = [c for c in ("NORMAL", "PNEUMONIA") if not (root / c).is_dir()]
    if missing:
        raise InputError(f"{labelled_dir}: expected sub-folders NORMAL/ and PNEUMONIA/ (missing: {', '.join(missing)})")
    p = {}
    dist_ok, refused, hashes = [], [], []
    for c in ("NORMAL", "PNEUMONIA"):
        rows, dists = screen_folder(screener, [root / c])
        ok = [(s, d) for s, d in zip(rows, dists) if s.ok]
        refused += [s for s in rows if not s.ok]
        p[c] = np.array([s.pneumonia_probability for s, _ in ok])
        dist_ok += [d for _, d in ok if d is not None]
        hashes += [s.input_sha256 for s in rows if s.input_sha256]
    n0, n1 = len(p["NORMAL"]), len(p["PNEUMONIA"])
    more = scans_needed(n0, n1, target)
    if more:
        need = " and ".join(f"{v} more {k}" for k, v in more.items())
        raise InputError(f"{labelled_dir}: too few screened scans to set a threshold ({n0} NORMAL, {n1} PNEUMONIA; "
                         f"need {need}, at least {MIN_PER_CLASS} of each)")
    t = site_threshold(p["PNEUMONIA"], target)
    tp, tn = int((p["PNEUMONIA"] >= t).sum()), int((p["NORMAL"] < t).sum())
    sens_ci, spec_ci = clopper_pearson(tp, n1), clopper_pearson(tn, n0)
    data = {
        "format": SITE_FORMAT,
        "model_sha256": screener.model.sha256,
        "model_version": screener.card.version,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threshold": round(t, 6),
        "card_threshold": screener.card.threshold,
        "target_sensitivity": target,
        "rule": "t = p(j) of the sorted pneumonia scores, j the largest rank with (n - j + 1) / (n + 1) >= target: "
                "a new pneumonia scan of this site is flagged with at least the target probability",
        "counts": {"NORMAL": n0, "PNEUMONIA": n1, "refused": sum(s.status == "rejected" for s in refused),
                   "unreadable": sum(s.status == "error" for s in refused)},
        "sensitivity": {"estimate": round(tp / n1, 4), "ci95": [round(v, 4) for v in sens_ci],
                        "expected_on_new_scans": round(expected_sensitivity(n1, target), 4)},
        "specificity": {"estimate": round(tn / n0, 4), "ci95": [round(v, 4) for v in spec_ci]},
        "p_summary": {"NORMAL": _summary(p["NORMAL"]), "PNEUMONIA": _summary(p["PNEUMONIA"])},
        "reference": {"data": "this site's calibration sample", "n": n0 + n1,
                      "p_quantiles": quantiles(np.concatenate([p["NORMAL"], p["PNEUMONIA"]])),
                      **({"distance_quantiles": quantiles(dist_ok)} if dist_ok else {})},
        "inputs_sha256": hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest(),
    }
    return data, refused


def _compare(name, values, ref: dict, key: str) -> dict | None:
    if key not in ref or len(values) == 0:
        return None
    d, pv = ks_against_quantiles(values, ref[key], int(ref.get("n", len(ref[key]))))
    psi = psi_against_quantiles(values, ref[key])
    shifted = pv < KS_ALPHA and psi > PSI_SHIFTED
    return {"what": name, "ks_statistic": round(d, 4), "ks_p_value": round(pv, 6), "psi": round(psi, 4),
            "shifted": bool(shifted), "site_median": round(float(np.median(values)), 4),
            "reference_median": round(float(np.interp(0.5, np.linspace(0, 1, len(ref[key])), ref[key])), 4)}


def check_site(screener, folder) -> dict:
    """Drift of a site's unlabelled scans against the reference of the site file (if any) or the card."""
    rows, dists = screen_folder(screener, [folder])
    ok = [(s, d) for s, d in zip(rows, dists) if s.ok]
    p = np.array([s.pneumonia_probability for s, _ in ok])
    dist = np.array([d for _, d in ok if d is not None])
    site = screener.site
    ref = (site.data.get("reference") if site is not None else None) or screener.card.get("reference") or {}
    out = {"folder": str(folder), "model_sha256": screener.model.sha256,
           "site_sha256": getattr(site, "sha256", None), "reference": ref.get("data"),
           "screened": len(ok), "refused": sum(s.status == "rejected" for s in rows),
           "unreadable": sum(s.status == "error" for s in rows),
           "flagged_pneumonia_share": round(float((p >= screener.threshold).mean()), 4) if len(p) else None,
           "comparisons": [c for c in (_compare("pneumonia probability", p, ref, "p_quantiles"),
                                       _compare("gate feature distance", dist, ref, "distance_quantiles")) if c]}
    if not ok:
        out["verdict"] = "no scan could be screened"
    elif not out["comparisons"]:
        out["verdict"] = "no reference to compare with (the model card has none; re-convert the model)"
    elif any(c["shifted"] for c in out["comparisons"]):
        out["verdict"] = "shifted: calibrate this site before relying on it (edge-xray site calibrate)"
    else:
        out["verdict"] = "similar to the reference data"
    return out
