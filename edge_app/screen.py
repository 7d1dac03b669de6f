"""The library API: screen chest X-rays with a model, its gate and (optionally) a site's threshold.

    import edge_xray
    screener = edge_xray.load_model()              # the bundled model, card verified
    result = screener.classify("scan.png")         # a Screening
    print(result.label, result.pneumonia_probability, result.advice)

Every input goes through the same steps: decode once (the file's sha256 from the same bytes), cheap
image checks, orientation (a scan turned by 90, 180 or 270 degrees is screened upright, or refused
when the orientation model is unsure), preprocessing, one int8 invocation, the out-of-distribution
gate on the model's own features, then the calibrated decision. The gate is always on: a screening
model without one (a builder's model converted without representative scans) is refused, unless the
caller says `no_gate` (`--no-gate`), and then every row's note says so. A screening model's labels are
NORMAL/BACTERIAL/VIRAL or NORMAL/PNEUMONIA (edge_xray.decision.SCREENING_LABEL_SETS).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image

from .decision import ADVICE, SCREENING_LABEL_SETS, Calibration, ScreeningLabels
from .errors import ImageError, ModelError
from .gate import Gate
from .inputs import Skipped, find_inputs
from .orientation import REASON as ORIENTATION_REASON, orient
from .preprocess import Scan, load_scan, prepare, scan_from_image
from .runtime import Model

IMAGE_SOURCE = "<image>"  # the `path` of a screening made from an in-memory image
NO_GATE_NOTE = "no out-of-distribution gate (--no-gate): not checked for being a chest X-ray"


@dataclass(frozen=True)
class Screening:
    """One input's result. The fields are those of a `classify --json` row, in its order."""

    path: str
    status: str  # ok, error (unreadable) or rejected (readable, but not a chest X-ray)
    label: str | None = None
    pneumonia_probability: float | None = None
    pneumonia_type: str | None = None
    type_probability: float | None = None
    threshold: float | None = None
    advice: str | None = None
    urgency: str | None = None  # today, refer or none (edge_xray.decision); null if not screened
    error: str | None = None
    model_sha256: str | None = None
    site_sha256: str | None = None
    input_sha256: str | None = None
    orientation_corrected: int | None = None  # degrees the file was turned clockwise (0: upright); null if not screened
    heatmap: str | None = None
    heatmap_error: str | None = None
    model_verified: bool = False  # the model is one the package ships (edge_xray.trust); False: allowed unverified
    note: str | None = None  # what the reader should know, e.g. "first of 3 frames screened"
    intended_use: float | None = None  # the intended-use check's P(frontal chest X-ray of a young child); null if not run

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        """Exactly the JSON row that `edge-xray classify --json` prints."""
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(Screening))


class Screener:
    """A model, its gate and its operating point, ready to screen files or images."""

    def __init__(self, model: Model, site=None, model_verified: bool = False, no_gate: bool = False):
        check_screening_model(model, no_gate)
        self.model = model
        self.gate_note = None if model.card.gate else NO_GATE_NOTE
        self.site = site
        self.model_verified = model_verified
        self.skipped = Skipped()  # of the last classify_many: files of folders not screened, and why
        self.resumed = 0  # of the last classify_many: inputs left out by its `skip`
        self.gate = Gate.from_card(model.card)
        self.calibration = Calibration.from_card(model.card, site.threshold if site is not None else None)
        self._heatmap_names: set = set()

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    @property
    def card(self):
        return self.model.card

    def _row(self, path, status: str, **fields) -> Screening:
        if self.gate_note:
            fields["note"] = "; ".join(n for n in (fields.get("note"), self.gate_note) if n)
        return Screening(path=str(path), status=status, threshold=self.threshold, model_sha256=self.model.sha256,
                         site_sha256=getattr(self.site, "sha256", None), model_verified=self.model_verified, **fields)

    def _refused(self, path, status: str, reason: str, sha256: str | None = None, note: str | None = None) -> Screening:
        return self._row(path, status, error=reason, advice=ADVICE[status].format(reason=reason), input_sha256=sha256,
                         note=note)

    def classify(self, source, *, heatmap_dir=None) -> Screening:
        """Screen one input: a path (PNG, JPEG, TIFF, BMP, DICOM) or a Pillow image. Never raises for a
        bad input: an unreadable one comes back with `status: error`, a non-X-ray with `rejected`."""
        return self._classify(source, heatmap_dir)[0]

    def classify_many(self, paths: Iterable, *, heatmap_dir=None, skip=None) -> Iterator[Screening]:
        """Screen files and folders (recursed, by content, in order; a DICOMDIR through its images); one
        Screening per image. Never raises for a bad input: a missing file or an empty folder comes back
        as a Screening with `status: error`. SKIP(path) -> True leaves an input out (a resumed batch).
        Afterwards `skipped` counts the files of folders that were not screened, and why."""
        for s, _ in self.classify_many_with_distance(paths, heatmap_dir=heatmap_dir, skip=skip):
            yield s

    def classify_many_with_distance(self, paths: Iterable, *, heatmap_dir=None, skip=None):
        """As classify_many, with the gate's feature distance of each input (None where not measured):
        (Screening, distance) pairs, for drift checks."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self.skipped = skipped = Skipped()
        self.resumed = 0
        for p in paths:
            files = find_inputs(p, skipped)
            if not files:
                if skip is not None and skip(p):
                    self.resumed += 1
                    continue
                yield self._refused(p, "error", "folder holds no images"), None
            for f in files:
                if skip is not None and skip(f):
                    self.resumed += 1
                    continue
                yield self._classify(f, heatmap_dir)

    def screen(self, scan: Scan, path=IMAGE_SOURCE, *, heatmap_dir=None) -> Screening:
        """Screen a decoded Scan."""
        return self._screen(scan, path, heatmap_dir)[0]

    def read(self, source) -> tuple[Scan | None, Screening | None]:
        """(the decoded Scan, None), or (None, the error row) for an input that cannot be read."""
        path = IMAGE_SOURCE if isinstance(source, Image.Image) else source
        try:
            return (scan_from_image(source) if isinstance(source, Image.Image)
                    else load_scan(source, self.model.size)), None
        except ImageError as e:
            return None, self._refused(path, "error", str(e))
        except MemoryError:  # one input too large for this device: its own error row, the batch goes on
            return None, self._refused(path, "error", "not enough memory to decode this image on this device")

    def _classify(self, source, heatmap_dir):
        scan, refused = self.read(source)
        if refused is not None:
            return refused, None
        return self._screen(scan, IMAGE_SOURCE if isinstance(source, Image.Image) else source, heatmap_dir)

    def _screen(self, scan: Scan, path, heatmap_dir):
        note = getattr(scan, "note", None)
        reason = self.gate.check_image(scan.image, scan.chroma)
        if reason:
            return self._refused(path, "rejected", reason, scan.sha256, note), None
        image, degrees, confident = orient(scan.image)
        if not confident:  # a non-X-ray is refused for what it is; an X-ray in doubt for its orientation
            x = prepare(scan.image, self.model.size)
            reason = self.gate.check_features(x, self.model.run(x, features=True)[1]) or ORIENTATION_REASON
            return self._refused(path, "rejected", reason, scan.sha256, note), None
        x = prepare(image, self.model.size)
        logits, features = self.model.run(x, features=True)
        distance = self.gate.feature_distance(features)
        reason = self.gate.check_features(x, features, distance)
        if reason:
            return self._refused(path, "rejected", reason, scan.sha256, note), distance
        decision = self.calibration.decide(logits)
        result = self._row(path, "ok", input_sha256=scan.sha256, orientation_corrected=degrees, note=note,
                           **decision.fields())
        if heatmap_dir is not None and features is not None and self.card.cam:  # a head without CAM weights: none
            from .heatmap import save_heatmap

            try:
                dest = save_heatmap(self.card, image, features, result.to_dict(), heatmap_dir, Path(str(path)).stem,
                                    self._heatmap_names, src_path=None if path == IMAGE_SOURCE else path,
                                    degrees=degrees)
                result = dataclasses.replace(result, heatmap=None if dest is None else str(dest))
            except OSError as e:
                result = dataclasses.replace(result, heatmap_error=f"cannot write heatmap ({e.strerror or e})")
        return result, distance


def check_screening_model(model: Model, no_gate: bool = False):
    """ModelError unless MODEL is a screening model (its labels) with a gate (or NO_GATE allows none)."""
    name = model.path.name
    if ScreeningLabels.of(model.labels) is None:
        sets = " or ".join("/".join(s) for s in reversed(SCREENING_LABEL_SETS))
        raise ModelError(f"{name}: labels {'/'.join(model.labels)}: screening needs a model labelled {sets} "
                         "(convert, compare, evaluate and bench take any classifier)")
    if not model.card.gate and not no_gate:
        how = ("convert it again with representative scans (the gate is fitted by default)"
               if "features" in model.outputs else
               "its network gives no feature map to fit one on (convert the Keras model, not an exported SavedModel)")
        raise ModelError(f"{name} has no out-of-distribution gate: {how}, or give --no-gate (every row then says so)")


def load_model(model=None, *, threads: int | None = None, site=None, allow_unverified: bool = False,
               no_gate: bool = False) -> Screener:
    """A Screener for MODEL (a .tflite path; None: the bundled model), its card verified.

    SITE: a site file (path) from `edge-xray site calibrate`, whose threshold replaces the card's.
    Raises ModelError (exit code 4 on the command line) for a missing, changed or foreign model, and for
    any model file that is not one the package ships (edge_xray.trust) unless ALLOW_UNVERIFIED (or
    EDGE_XRAY_ALLOW_UNVERIFIED_MODEL=1): then its Screenings say `model_verified: False`. A model that
    is not a screening model, or has no gate (unless NO_GATE), is refused (check_screening_model).
    """
    from .trust import check_model

    m = model if isinstance(model, Model) else Model(model, threads=threads)
    verified = check_model(m.path, allow_unverified, m.card.file_sha256)
    if site is not None and not hasattr(site, "threshold"):
        from .site import load_site

        site = load_site(site, m)
    return Screener(m, site=site, model_verified=verified, no_gate=no_gate)
