"""The library API: screen chest X-rays with a model, its gate and (optionally) a site's threshold.

    import edge_xray
    screener = edge_xray.load_model()              # the bundled model, card verified
    result = screener.classify("scan.png")         # a Screening
    print(result.label, result.pneumonia_probability, result.advice)

Every input goes through the same steps: decode once (the file's sha256 from the same bytes), cheap
image checks, the intended-use check (a frontal chest X-ray of a young child, or refused as an adult
film, a lateral view, another body part: edge_xray.intended_use), orientation (a scan turned by 90,
180 or 270 degrees is screened upright, or refused when the orientation model is unsure; models of
one input size share one prepared input), preprocessing, one int8 invocation, the
out-of-distribution gate on the model's own features, then the calibrated decision. The gate and the
intended-use check are always on: a screening model without a gate (a builder's model converted
without representative scans) is refused, unless the caller says `no_gate` (`--no-gate`), and then
every row's note says so. A screening model's labels are NORMAL/BACTERIAL/VIRAL or NORMAL/PNEUMONIA
(edge_xray.decision.SCREENING_LABEL_SETS). `load_model` loads the three models together, with the same
threads, and checks each against the package's list of shipped models (edge_xray.trust).

The Screener screens one input (`assess` -> Screened: the row, the gate's feature distance, the heatmap
overlay as an image when asked); batches of files and folders are edge_xray.batch's (`classify_many`
is a thin convenience over it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

from PIL import Image

from .decision import ADVICE, SCREENING_LABEL_SETS, Calibration, ScreeningLabels
from .errors import ImageError, ModelError
from .gate import Gate
from .intended_use import IntendedUseModel
from .orientation import REASON as ORIENTATION_REASON, OrientationModel, orient
from .preprocess import Scan, crop_border, load_scan, prepare, scan_from_image
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


class Screened(NamedTuple):
    """One input's Screening with what a batch and a drift check use beside the row."""

    screening: Screening
    distance: float | None = None  # the gate's feature distance of the scan; None where not measured
    heatmap: Image.Image | None = None  # the overlay (edge_xray.heatmap.draw_overlay), when asked and drawn


class Screener:
    """A model, its gate and its operating point, with the intended-use and orientation models, ready
    to screen files or images."""

    def __init__(self, model: Model, site=None, model_verified: bool = False,
                 orientation: OrientationModel | None = None, intended_use: IntendedUseModel | None = None,
                 no_gate: bool = False):
        """ORIENTATION and INTENDED_USE: the auxiliary models (default: the bundled ones, with the
        screening model's threads; `load_model` also checks them against the package's list). NO_GATE:
        run a screening model that has no gate (every row's note says so)."""
        check_screening_model(model, no_gate)
        self.model = model
        self.gate_note = None if model.card.gate else NO_GATE_NOTE
        self.orientation = orientation if orientation is not None else OrientationModel(threads=model.threads)
        self.intended_use = intended_use if intended_use is not None else IntendedUseModel(threads=model.threads)
        self.site = site
        self.model_verified = model_verified
        self.gate = Gate.from_card(model.card)
        self.calibration = Calibration.from_card(model.card, site.threshold if site is not None else None)

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

    def _refused(self, path, status: str, reason: str, sha256: str | None = None, note: str | None = None,
                 intended_use: float | None = None) -> Screening:
        return self._row(path, status, error=reason, advice=ADVICE[status].format(reason=reason), input_sha256=sha256,
                         note=note, intended_use=intended_use)

    def error_row(self, path, reason: str) -> Screening:
        """The row of an input that could not be screened for REASON (status error)."""
        return self._refused(path, "error", reason)

    def classify(self, source) -> Screening:
        """Screen one input: a path (PNG, JPEG, TIFF, BMP, DICOM) or a Pillow image. Never raises for a
        bad input: an unreadable one comes back with `status: error`, a non-X-ray with `rejected`."""
        return self.assess(source).screening

    def classify_many(self, paths: Iterable) -> Iterator[Screening]:
        """Screen files and folders (recursed, in order; see edge_xray.batch): one Screening per image.
        Never raises for a bad input: a missing file or an empty folder comes back as a Screening with
        `status: error`."""
        from .batch import Batch

        for screened in Batch(self, paths):
            yield screened.screening

    def assess(self, source, *, path=None, heatmap: bool = False) -> Screened:
        """Screen one input (a path, a Pillow image, or a Scan from `read`) -> Screened: the row, the gate's
        feature distance and, with HEATMAP, the overlay image of a result that gets one. PATH: what the
        row's `path` says for a Scan (default: IMAGE_SOURCE)."""
        if isinstance(source, Scan):
            return self._screen(source, IMAGE_SOURCE if path is None else path, heatmap)
        scan, refused = self.read(source)
        if refused is not None:
            return Screened(refused)
        return self._screen(scan, IMAGE_SOURCE if isinstance(source, Image.Image) else source, heatmap)

    def screen(self, scan: Scan, path=IMAGE_SOURCE) -> Screening:
        """Screen a decoded Scan."""
        return self._screen(scan, path, False).screening

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

    def _screen(self, scan: Scan, path, heatmap: bool) -> Screened:
        note = scan.note
        # the cheap image checks, then what the file's own tags refuse (DICOM), before any inference
        reason = self.gate.check_image(scan.image, scan.chroma) or scan.refusal
        if reason:
            return Screened(self._refused(path, "rejected", reason, scan.sha256, note))
        gray = crop_border(scan.image)  # once: every model below sees the radiograph without its frame
        inputs = {}  # the scan as it is, prepared once per input size (models of one size share it)

        def prepared(size):
            if size not in inputs:
                inputs[size] = prepare(gray, size, crop=False)
            return inputs[size]

        small = prepared(self.orientation.size)
        verdict = self.intended_use.check(prepared(self.intended_use.size))
        p_in_use = verdict.p_in_use
        if verdict.reason:  # a non-X-ray is refused for what the gate finds, when it finds something
            reason = (self._gate_reason(gray) or verdict.reason) if verdict.gate_first else verdict.reason
            return Screened(self._refused(path, "rejected", reason, scan.sha256, note, p_in_use))
        image, degrees, confident = orient(gray, self.orientation, small)
        if not confident:  # a non-X-ray is refused for what it is; an X-ray in doubt for its orientation
            reason = self._gate_reason(gray) or ORIENTATION_REASON
            return Screened(self._refused(path, "rejected", reason, scan.sha256, note, p_in_use))
        x = prepared(self.model.size) if degrees == 0 else prepare(image, self.model.size, crop=False)
        logits, features = self.model.run(x, features=True)
        distance = self.gate.feature_distance(features)
        reason = self.gate.check_features(x, features, distance)
        if reason:
            return Screened(self._refused(path, "rejected", reason, scan.sha256, note, p_in_use), distance)
        decision = self.calibration.decide(logits)
        result = self._row(path, "ok", input_sha256=scan.sha256, orientation_corrected=degrees, note=note,
                           intended_use=p_in_use, **decision.fields())
        overlay = None
        if heatmap and features is not None and self.card.cam:  # a head without CAM weights: none
            from .heatmap import draw_overlay

            overlay = draw_overlay(self.card, image, features, result.to_dict(),
                                   src_path=None if path == IMAGE_SOURCE else path, degrees=degrees)
        return Screened(result, distance, overlay)

    def _gate_reason(self, gray) -> str | None:
        """The gate's feature checks on the (cropped) scan as it is (a refused scan, to word its reason)."""
        x = prepare(gray, self.model.size, crop=False)
        return self.gate.check_features(x, self.model.run(x, features=True)[1])


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
               orientation_model=None, intended_use_model=None, no_gate: bool = False) -> Screener:
    """A Screener for MODEL (a .tflite path; None: the bundled model), its card verified, with the
    orientation and intended-use models (ORIENTATION_MODEL, INTENDED_USE_MODEL: paths; None: the
    bundled ones), all three loaded with THREADS and checked the same way.

    SITE: a site file (path) from `edge-xray site calibrate`, whose threshold replaces the card's.
    Raises ModelError (exit code 4 on the command line) for a missing, changed or foreign model, and for
    any model file that is not one the package ships (edge_xray.trust) unless ALLOW_UNVERIFIED (or
    EDGE_XRAY_ALLOW_UNVERIFIED_MODEL=1): then its Screenings say `model_verified: False`. A model that
    is not a screening model, or has no gate (unless NO_GATE), is refused (check_screening_model).
    """
    from .trust import check_model

    m = model if isinstance(model, Model) else Model(model, threads=threads)
    orientation = OrientationModel(orientation_model, threads=m.threads)
    intended_use = IntendedUseModel(intended_use_model, threads=m.threads)
    verified = all([check_model(n.path, allow_unverified, n.card.file_sha256) for n in (m, orientation, intended_use)])
    if site is not None and not hasattr(site, "threshold"):
        from .site import load_site

        site = load_site(site, m)
    return Screener(m, site=site, model_verified=verified, orientation=orientation, intended_use=intended_use,
                    no_gate=no_gate)
