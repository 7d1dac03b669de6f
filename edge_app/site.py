"""Site calibration: the operating threshold set on a clinic's own labelled scans, and a drift check.

No default threshold survives every population: the model's ranking transfers to a new site, the
level of its scores does not. `calibrate_site` screens a labelled sample of the site's scans
(NORMAL/ and PNEUMONIA/, read by a local clinician), picks the threshold that reaches the target
sensitivity on new scans of that site, and reports sensitivity and specificity on the sample with
exact (Clopper-Pearson) 95 % intervals. `check_site` compares an unlabelled folder of a site's scans
with the reference the model card keeps from validation (or the site file's own sample).

What a sample counts are distinct scans: identical files (one sha256) and the same scan re-encoded or
resized (perceptual hashes within NEAR_DUPLICATE_BITS) are one scan; the same scan under both labels is
refused. A site file records its pneumonia scores: a threshold other than the one they give (at the
recorded target) is refused on load, signed or not. A drift check of fewer than MIN_TO_TELL scans says
"too few to tell"; below ENOUGH_TO_TELL it calls a large shift only.

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

from .errors import InputError, ModelError, UsageError
from .operating_point import (INTERVAL_CONFIDENCE, SITE_TARGET, clopper_pearson, expected_sensitivity,
                              site_sensitivity_interval, site_threshold)

SITE_FORMAT = "edge-xray-site/1"
DEFAULT_SENSITIVITY = SITE_TARGET
CONFIDENCE = INTERVAL_CONFIDENCE
CLASSES = ("NORMAL", "PNEUMONIA")  # the labelled sample's folders
MIN_PER_CLASS = 20  # distinct scans of each class below which a sample says too little
MAX_SENSITIVITY_CI_WIDTH = 0.20  # a wider 95 % interval of the sensitivity is refused
QUANTILES = 101  # reference distributions are kept as this many quantiles
PSI_BINS = 10
PSI_SHIFTED = 0.25  # population stability index: < 0.1 similar, 0.1-0.25 moderate, > 0.25 shifted
KS_ALPHA = 0.01  # "shifted" needs both: a KS p-value below this (not chance) and PSI above PSI_SHIFTED (not small);
# PSI alone over 10 bins is noisy at clinic sample sizes (it calls 30-80 % of same-population samples of 50 shifted)
MIN_TO_TELL = 20  # `site check`: fewer screened scans than this tell nothing (exit 3)
ENOUGH_TO_TELL = 50  # ... and from MIN_TO_TELL up to this, only a large shift (PSI above PSI_LARGE) is called
PSI_LARGE = 1.0
PHASH_SIDE = 64  # pixels: the grey image a perceptual hash is taken of
PHASH_LOW = 16  # its 16 x 16 lowest DCT frequencies, less the mean: a hash of 255 bits
PHASH_DECODE = 64  # the decode size asked of preprocess.load_image for a hash (a JPEG decodes at >= 128 px)
# Hashes at most this many bits apart are one scan. Measured (benchmarks/site_duplicates.py, training split):
# copies re-encoded (JPEG 95-50, PNG) or resized (1/2, 1/4) differ by at most 16 bits; distinct scans by 38 or
# more (the 28 closer pairs are pixel-identical scans stored twice in the data set).
NEAR_DUPLICATE_BITS = 24


# statistics ---------------------------------------------------------------------------------------
# the threshold rule and the intervals are edge_xray.operating_point's; imported here under the names
# this module has always offered
def scans_needed(n_normal: int, n_pneumonia: int, target: float = DEFAULT_SENSITIVITY) -> dict:
    """How many more scans of each class the sample needs ({} when it is enough)."""
    more = {}
    if n_normal < MIN_PER_CLASS:
        more["NORMAL"] = MIN_PER_CLASS - n_normal
    n = max(n_pneumonia, MIN_PER_CLASS)
    while True:  # the sensitivity interval, at the flagged count the rule gives, must be narrow enough
        lo, hi = site_sensitivity_interval(n, target)
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


# the same scan twice ---------------------------------------------------------------------------------
def _dct_matrix(n: int) -> np.ndarray:
    k, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.cos(np.pi * (2 * x + 1) * k / (2 * n))


_DCT = _dct_matrix(PHASH_SIDE)


def perceptual_hash(image) -> int:
    """A 255-bit DCT hash of a Pillow image: its grey image averaged down to PHASH_SIDE pixels square, the
    PHASH_LOW x PHASH_LOW lowest frequencies of its DCT but the mean, one bit each for above or below
    their median. A re-encoded or resized copy of a scan keeps nearly every bit; another scan differs
    in many (see NEAR_DUPLICATE_BITS)."""
    from PIL import Image

    g = image.convert("L").resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.BOX)
    low = (_DCT @ np.asarray(g, np.float64) @ _DCT.T)[:PHASH_LOW, :PHASH_LOW].ravel()[1:]
    return int.from_bytes(np.packbits(low > np.median(low)).tobytes(), "big")


def file_hash(path) -> int | None:
    """The perceptual hash of the scan in PATH (None when it cannot be decoded)."""
    from .preprocess import ImageError, load_image

    try:
        return perceptual_hash(load_image(path, PHASH_DECODE))
    except (ImageError, MemoryError):
        return None


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


# the site file -------------------------------------------------------------------------------------
def _body(data: dict, leave=("checksum",)) -> bytes:
    body = {k: v for k, v in data.items() if k not in leave}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _checksum(data: dict) -> str:
    return hashlib.sha256(_body(data)).hexdigest()


def signed_content(data: dict) -> bytes:
    """What a site file's signature covers: every field but `checksum` and `signature`, as canonical JSON."""
    return _body(data, ("checksum", "signature"))


UNKEYED = "unkeyed"  # Site.signed: made without a device key (anyone who can write it could change it)
UNCHECKED = "unchecked"  # signed, but this device holds no key to check it with
VERIFIED = "verified"  # signed with the key this device checks with


@dataclass(frozen=True)
class Site:
    """A verified site file: its threshold replaces the model card's."""

    path: str
    threshold: float
    sha256: str  # of the site file as stored
    data: dict
    signed: str = UNKEYED  # UNKEYED, UNCHECKED or VERIFIED
    key_id: str | None = None

    @property
    def note(self) -> str | None:
        """What to tell the person about the file's signature (None when verified)."""
        name = Path(self.path).name
        if self.signed == UNKEYED:
            return (f"site file {name} is not signed (made without a device key): its threshold is checked "
                    "against its own recorded sample only")
        if self.signed == UNCHECKED:
            return (f"site file {name} is signed by key {self.key_id}, not checked: this device has no key "
                    f"(give its public part with $EDGE_XRAY_KEY)")
        return None


def supported_threshold(data: dict) -> tuple[float, float] | None:
    """The range of thresholds the site file's own recorded sample supports: the threshold the rule gives
    for its recorded pneumonia scores and target (a range of one value, to the file's rounding); for
    files made before the scores were recorded, from the lowest score of the sample to the median
    pneumonia score (the rule never picks above it for a target of 0.5 or more). None: no sample recorded."""
    target = data.get("target_sensitivity")
    scores = data.get("pneumonia_scores")
    if isinstance(scores, list) and scores and isinstance(target, (int, float)) and 0.5 <= target < 1.0:
        try:
            t = round(site_threshold([float(x) for x in scores], float(target)), 6)
        except (TypeError, ValueError):
            return None
        return (t - 1e-6, t + 1e-6)
    try:
        low = float(data["reference"]["p_quantiles"][0])
        median = float(data["p_summary"]["PNEUMONIA"]["p50"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return (low, median)


def _check_signature(data: dict, name: str, key) -> tuple[str, str | None]:
    """(UNKEYED / UNCHECKED / VERIFIED, key id); ModelError for a signature that does not hold."""
    from .keys import PublicKey, load_public

    sig = data.get("signature")
    if sig is None:
        return UNKEYED, None
    if not isinstance(sig, dict) or not isinstance(sig.get("value"), str):
        raise ModelError(f"site file {name} has a broken signature field")
    public = key if isinstance(key, PublicKey) else load_public(key)
    kid = sig.get("key_id")
    if public is None:
        return UNCHECKED, kid
    if kid != public.id:
        raise ModelError(f"site file {name} is signed by another key ({kid}; this device's key is {public.id})")
    if not public.verify(signed_content(data), sig["value"]):
        raise ModelError(f"site file {name} was altered after it was signed (the signature does not match)")
    return VERIFIED, kid


def load_site(path, model, key=None) -> Site:
    """Read and verify a site file for MODEL (an edge_xray.runtime.Model): its checksum, its signature
    (KEY: the public key to check with; default: this device's key, if any), its model and a threshold
    its own recorded sample supports (`supported_threshold`). Raises ModelError (exit 4)."""
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
    signed, kid = _check_signature(data, path.name, key)
    if data.get("model_sha256") != model.sha256:
        raise ModelError(f"site file {path.name} was made for another model (sha256 {str(data.get('model_sha256'))[:12]}..., "
                         f"this model is {str(model.sha256)[:12]}...)")
    t = data.get("threshold")
    if not isinstance(t, (int, float)) or not 0.0 < t < 1.0 or not math.isfinite(t):
        raise ModelError(f"site file {path.name} holds no valid threshold")
    rng = supported_threshold(data)
    if rng is None:
        raise ModelError(f"site file {path.name} records no sample to check its threshold against: "
                         "make it again with `edge-xray site calibrate`")
    if not rng[0] <= t <= rng[1]:
        allowed = f"{rng[0] + 1e-6:.4f}" if rng[1] - rng[0] < 1e-5 else f"{rng[0]:.4f}-{rng[1]:.4f}"
        raise ModelError(f"site file {path.name}: threshold {t:.4f} is not what its own recorded sample supports "
                         f"({allowed}): refused")
    return Site(str(path), float(t), hashlib.sha256(raw).hexdigest(), data, signed, kid)


def write_site(path, data: dict, key=None) -> dict:
    """Write DATA as a site file, signed with KEY (an edge_xray.keys.DeviceKey; default: this device's
    key, when it has one; False: unsigned)."""
    if key is None:
        from .keys import load_key

        key = load_key()
    data = {k: v for k, v in data.items() if k not in ("signature", "checksum")}
    if key:
        data["signature"] = {"key_id": key.id, "algorithm": "ed25519", "value": key.sign(signed_content(data))}
    data["checksum"] = _checksum(data)
    try:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
    except OSError as e:  # a read-only card, a full disk: one line, nothing half-said
        raise UsageError(f"cannot write the site file {path}: {e.strerror or e}") from None
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


@dataclass
class Sample:
    """A labelled sample as screened, one entry per distinct scan: identical files (one sha256) and
    near-identical ones (perceptual hashes within NEAR_DUPLICATE_BITS) are one scan, screened once."""

    root: Path
    scores: dict  # class -> P(pneumonia) of its distinct screened scans
    distances: list  # the gate's feature distances of the distinct screened scans
    refused: list  # Screenings of every file not used (refused or unreadable)
    refused_scans: int  # distinct scans refused (not chest X-rays)
    unreadable: int  # files that could not be read
    files: dict  # class -> number of files
    groups: list  # (kind, [relative paths]) of every set of files counted as one scan
    other: list  # names beside NORMAL/ and PNEUMONIA/ that are not read
    hashes: list  # input sha256 of every readable file

    def lines(self) -> list[str]:
        """One line per set of files counted once, and one for what is not read (terminal-safe)."""
        from .output import terminal

        out = [f"counted once ({kind}): {', '.join(terminal(p) for p in paths)}" for kind, paths in self.groups]
        if self.other:
            out.append(f"not read (only NORMAL/ and PNEUMONIA/ are): {', '.join(terminal(o) for o in self.other)}")
        return out


def _groups(items: list) -> list[list[int]]:
    """Indices of ITEMS ((class, Screening, perceptual hash)) that are one scan: the same sha256, or hashes
    within NEAR_DUPLICATE_BITS. Union-find, in the items' order."""
    parent = list(range(len(items)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (_, si, hi) in enumerate(items):
        for j in range(i):
            _, sj, hj = items[j]
            same = si.input_sha256 and si.input_sha256 == sj.input_sha256
            if same or (hi is not None and hj is not None and hamming(hi, hj) <= NEAR_DUPLICATE_BITS):
                parent[root(i)] = root(j)
    groups: dict = {}
    for i in range(len(items)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def read_sample(screener, labelled_dir) -> Sample:
    """Screen the labelled folder LABELLED_DIR (NORMAL/ and PNEUMONIA/) and group the files that are one scan.
    Raises InputError for missing class folders and for one scan under both labels (naming the files)."""
    from .batch import Batch

    root = Path(labelled_dir)
    missing = [c for c in CLASSES if not (root / c).is_dir()]
    if missing:
        raise InputError(f"{labelled_dir}: expected sub-folders NORMAL/ and PNEUMONIA/ (missing: {', '.join(missing)})")
    other = sorted(e.name + ("/" if e.is_dir() else "") for e in root.iterdir()
                   if e.name not in CLASSES and not e.name.startswith("."))
    items, results, refused, files = [], [], [], {}
    for c in CLASSES:
        batch = list(Batch(screener, [root / c]))
        files[c] = len(batch)
        for r in batch:
            s = r.screening
            if s.status == "error":
                refused.append(s)
                continue
            items.append((c, s, file_hash(s.path)))
            results.append(r)
    groups = _groups(items)
    rel = lambda i: str(Path(items[i][1].path).relative_to(root))  # noqa: E731
    mixed = [g for g in groups if len({items[i][0] for i in g}) > 1]
    if mixed:
        shown = "; ".join(" = ".join(rel(i) for i in g) for g in mixed[:5])
        more = f" (and {len(mixed) - 5} more)" if len(mixed) > 5 else ""
        raise InputError(f"{labelled_dir}: the same scan is under both labels: {shown}{more}; a scan has one label: "
                         "remove the wrong copy")
    scores = {c: [] for c in CLASSES}
    distances, shown_groups, refused_scans = [], [], 0
    for g in groups:
        if len(g) > 1:
            kind = "identical files" if len({items[i][1].input_sha256 for i in g}) == 1 else "the same scan"
            shown_groups.append((kind, [rel(i) for i in g]))
        ok = [i for i in g if items[i][1].ok]
        refused += [items[i][1] for i in g if not items[i][1].ok]
        if not ok:
            refused_scans += 1
            continue
        c, s, _ = items[ok[0]]
        scores[c].append(s.pneumonia_probability)
        if results[ok[0]].distance is not None:
            distances.append(results[ok[0]].distance)
    return Sample(root, {c: np.array(v) for c, v in scores.items()}, distances, refused, refused_scans,
                  sum(s.status == "error" for s in refused), files, shown_groups, other,
                  [s.input_sha256 for _, s, _ in items if s.input_sha256])


def calibrate_site(screener, sample: Sample, target: float = DEFAULT_SENSITIVITY) -> dict:
    """The site data for SAMPLE (`read_sample`), counted in distinct scans. Raises InputError when the
    sample is too small to say anything."""
    if not (0.5 <= target < 1.0):
        raise InputError(f"--sensitivity must lie between 0.5 and 1 (got {target})")
    p = sample.scores
    n0, n1 = len(p["NORMAL"]), len(p["PNEUMONIA"])
    more = scans_needed(n0, n1, target)
    if more:
        need = " and ".join(f"{v} more {k}" for k, v in more.items())
        files = f" in {sample.files['NORMAL']} and {sample.files['PNEUMONIA']} files" if sample.groups else ""
        raise InputError(f"{sample.root}: too few distinct screened scans to set a threshold ({n0} NORMAL, "
                         f"{n1} PNEUMONIA{files}; need {need}, at least {MIN_PER_CLASS} of each)")
    t = site_threshold(p["PNEUMONIA"], target)
    tp, tn = int((p["PNEUMONIA"] >= t).sum()), int((p["NORMAL"] < t).sum())
    sens_ci, spec_ci = clopper_pearson(tp, n1), clopper_pearson(tn, n0)
    return {
        "format": SITE_FORMAT,
        "model_sha256": screener.model.sha256,
        "model_version": screener.card.version,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threshold": round(t, 6),
        "card_threshold": screener.card.threshold,
        "target_sensitivity": target,
        "rule": "t = p(j) of the sorted pneumonia scores, j the largest rank with (n - j + 1) / (n + 1) >= target: "
                "a new pneumonia scan of this site is flagged with at least the target probability",
        "counts": {"NORMAL": n0, "PNEUMONIA": n1, "refused": sample.refused_scans, "unreadable": sample.unreadable,
                   "files": sample.files, "duplicate_files": sum(len(g) - 1 for _, g in sample.groups)},
        "sensitivity": {"estimate": round(tp / n1, 4), "ci95": [round(v, 4) for v in sens_ci],
                        "expected_on_new_scans": round(expected_sensitivity(n1, target), 4)},
        "specificity": {"estimate": round(tn / n0, 4), "ci95": [round(v, 4) for v in spec_ci]},
        "p_summary": {"NORMAL": _summary(p["NORMAL"]), "PNEUMONIA": _summary(p["PNEUMONIA"])},
        "pneumonia_scores": sorted(round(float(x), 6) for x in p["PNEUMONIA"]),
        "reference": {"data": "this site's calibration sample", "n": n0 + n1,
                      "p_quantiles": quantiles(np.concatenate([p["NORMAL"], p["PNEUMONIA"]])),
                      **({"distance_quantiles": quantiles(sample.distances)} if sample.distances else {})},
        "inputs_sha256": hashlib.sha256("\n".join(sorted(sample.hashes)).encode()).hexdigest(),
    }


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
    out["verdict"], out["enough"] = _verdict(len(ok), out["comparisons"])
    return out


def _verdict(n: int, comparisons: list) -> tuple[str, bool]:
    """(the verdict, whether N screened scans are enough to give one): see the module's docstring."""
    if n == 0:
        return "no scan could be screened", False
    if n < MIN_TO_TELL:
        return f"too few to tell ({n} screened; at least {ENOUGH_TO_TELL} needed)", False
    if not comparisons:
        return "no reference to compare with (the model card has none; re-convert the model)", True
    if n < ENOUGH_TO_TELL:
        if any(c["ks_p_value"] < KS_ALPHA and c["psi"] > PSI_LARGE for c in comparisons):
            return (f"shifted (a large shift, seen in {n} scans): calibrate this site before relying on it "
                    "(edge-xray site calibrate)"), True
        return (f"no large shift ({n} screened: fewer than {ENOUGH_TO_TELL} show a large shift only; "
                f"screen at least {ENOUGH_TO_TELL} to tell a smaller one)"), True
    if any(c["shifted"] for c in comparisons):
        return "shifted: calibrate this site before relying on it (edge-xray site calibrate)", True
    return "similar to the reference data", True
