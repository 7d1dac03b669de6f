"""Heatmaps a health worker can read: class activation maps drawn over the scan, with the answer on it.

The network ends in global average pooling and one linear layer, so the map
  cam(y, x) = sum_k F[y, x, k] * (w[k, c] - w[k, NORMAL])
is exactly each place's share of the evidence for class c (the predicted pneumonia type) against
normal. Only the positive part is drawn: the places that support the answer shown. The classifier
weights are in the model card (`cam`); no TensorFlow is needed.

`render_heatmap` draws:
- the scan at its own resolution, its long side capped at MAX_SIDE pixels (the caller passes the
  decoded scan; `draw_overlay` decodes a large JPEG again at the power-of-two scale that gives at
  least MAX_SIDE / 2 pixels, e.g. 888x708 for a 1776x1416 scan: the model's own decode is 1/8 of that);
- the evidence in a yellow-to-red scale, transparent where it is weak (below MIN_SHOWN of this scan's
  strongest), so that the scan stays visible;
- a band below with the answer (label, p, type and its probability), the advice, and the colour legend.
By default only PNEUMONIA results get an overlay; a NORMAL result is drawn with the band alone unless
`normal_evidence=True` (then the evidence for NORMAL against pneumonia is drawn, in blue).
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .decision import PNEUMONIA_TYPES

MAX_SIDE = 1024  # pixels: the long side of the drawn scan
MIN_SIDE_DRAWN = 320  # pixels: smaller scans are enlarged so that the text stays legible
MIN_SHOWN = 0.25  # evidence below this fraction of the scan's strongest is not drawn
MAX_ALPHA = 0.6  # opacity of the strongest evidence
PNEUMONIA_COLOURS = ((255, 230, 0), (255, 0, 0))  # weak -> strong
NORMAL_COLOURS = ((120, 220, 255), (0, 60, 255))
BAND_BG = (20, 20, 20)
TEXT = (255, 255, 255)
LABEL_COLOURS = {"PNEUMONIA": (255, 90, 60), "NORMAL": (110, 220, 110)}
TYPE_INDEX = {name: cls for cls, name in PNEUMONIA_TYPES.items()}  # the decision owns the classes
# The overlay file. JPEG (quality 90, no chroma subsampling, so the text stays sharp) costs about 4 ms
# to write at 1024 px on the reference machine; PNG cost 30-55 ms there, more than the whole budget.
SUFFIX = ".heatmap.jpg"
JPEG_QUALITY = 90


def cam(card: dict, features: np.ndarray, label: int) -> np.ndarray:
    """Evidence map (h, w) for class LABEL (1 bacterial, 2 viral; 0 normal against both) scaled to
    0..1 by its maximum; zero where the evidence is against LABEL."""
    w = np.asarray(card["cam"]["kernel"], np.float32)  # (channels, 3)
    if label in (1, 2):
        direction = w[:, label] - w[:, 0]
    else:
        direction = w[:, 0] - 0.5 * (w[:, 1] + w[:, 2])
    m = np.maximum(np.asarray(features, np.float32) @ direction, 0)
    top = float(m.max())
    return m / top if top > 0 else m


@functools.lru_cache(maxsize=16)
def font(size: int):
    """Pillow's own font at SIZE pixels (no font files shipped); the small bitmap font before Pillow 10.1."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError):
        return ImageFont.load_default()


def wrap_text(draw, text: str, font, width: int) -> list[str]:
    """TEXT broken into lines no wider than WIDTH pixels (a newline starts a new paragraph)."""
    lines = []
    for para in str(text).split("\n"):
        line = ""
        for word in para.split():
            trial = f"{line} {word}".strip()
            if line and draw.textlength(trial, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return [] if lines == [""] else lines


def _headline(result: dict) -> str:
    p = result.get("pneumonia_probability")
    head = f"{result.get('label')}  p={p:.2f}" if p is not None else str(result.get("label"))
    if result.get("label") == "PNEUMONIA" and result.get("pneumonia_type"):
        tp = result.get("type_probability")
        head += f"  ({result['pneumonia_type']}" + (f" {tp:.2f})" if tp is not None else ")")
    return head


@functools.lru_cache(maxsize=4)
def _colour_luts(colours) -> list[list[int]]:
    """Per channel, heat level 0..255 -> colour (weak to strong from MIN_SHOWN up)."""
    t = np.clip((np.arange(256) / 255.0 - MIN_SHOWN) / (1 - MIN_SHOWN), 0, 1)
    rgb = np.rint(_ramp(colours, t.astype(np.float32))).clip(0, 255).astype(int)
    return [rgb[:, k].tolist() for k in range(3)]


@functools.lru_cache(maxsize=1)
def _alpha_lut() -> list[int]:
    """Heat level 0..255 -> opacity 0..255: none below MIN_SHOWN, then rising to MAX_ALPHA."""
    h = np.arange(256) / 255.0
    t = np.clip((h - MIN_SHOWN) / (1 - MIN_SHOWN), 0, 1)
    return np.rint(255 * np.where(h >= MIN_SHOWN, MAX_ALPHA * (0.2 + 0.8 * t), 0.0)).astype(int).tolist()


def _ramp(colours, t: np.ndarray) -> np.ndarray:
    a, b = (np.array(c, np.float32) for c in colours)
    return a + (b - a) * t[..., None]


def render_heatmap(card: dict, gray_image: Image.Image, features: np.ndarray, result: dict,
                   normal_evidence: bool = False) -> Image.Image:
    """The overlay of one screened scan as an RGB image (see the module's docstring).

    RESULT has label, pneumonia_probability, pneumonia_type, type_probability and advice."""
    from .preprocess import crop_border

    base = crop_border(gray_image if gray_image.mode == "L" else gray_image.convert("L"))  # what the model saw
    w0, h0 = base.size
    scale = min(1.0, MAX_SIDE / max(w0, h0))
    if max(w0, h0) * scale < MIN_SIDE_DRAWN:
        scale = MIN_SIDE_DRAWN / max(w0, h0)
    size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
    if size != base.size:
        base = base.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    w, h = size
    overlay = None

    label = result.get("label")
    draw_map = label == "PNEUMONIA" or (label == "NORMAL" and normal_evidence)
    colours = PNEUMONIA_COLOURS if label == "PNEUMONIA" else NORMAL_COLOURS
    if draw_map and features is not None:
        c = TYPE_INDEX.get(result.get("pneumonia_type"), 1) if label == "PNEUMONIA" else 0
        m = cam(card, features, c)
        # one grey heat layer, enlarged by Pillow; colour and opacity from it by lookup tables (fast)
        heat = Image.fromarray(np.uint8(np.rint(np.clip(m, 0, 1) * 255)), mode="L")
        heat = heat.resize(size, Image.Resampling.BICUBIC)
        colour = Image.merge("RGB", [heat.point(lut) for lut in _colour_luts(colours)])
        overlay = (colour, heat.point(_alpha_lut()))

    # the band: answer, advice, legend
    fs = max(12, round(w / 40))
    big, small = font(round(fs * 1.4)), font(fs)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = fs
    advice = wrap_text(probe, str(result.get("advice") or ""), small, w - 2 * margin)
    if draw_map:
        what = "evidence for pneumonia" if label == "PNEUMONIA" else "evidence for normal"
        legend = f"colour: where the model found {what} (relative, this scan). A screening aid, not a diagnosis."
    else:
        legend = "No evidence map is drawn for a NORMAL result. A screening aid, not a diagnosis."
    legend_lines = wrap_text(probe, legend, small, w - 2 * margin - (fs * 12 if draw_map else 0))
    line_h = round(fs * 1.35)
    band_h = margin + round(fs * 1.9) + line_h * (len(advice) + len(legend_lines)) + round(fs * 0.6) + margin
    out = Image.new("RGB", (w, h + band_h), BAND_BG)
    out.paste(base, (0, 0))
    if overlay is not None:
        out.paste(overlay[0], (0, 0), overlay[1])  # blends the colour in place, by the opacity mask
    d = ImageDraw.Draw(out)
    y = h + margin
    d.text((margin, y), _headline(result), font=big, fill=LABEL_COLOURS.get(label, TEXT))
    y += round(fs * 1.9)
    for line in advice:
        d.text((margin, y), line, font=small, fill=TEXT)
        y += line_h
    y += round(fs * 0.6)
    for line in legend_lines:
        d.text((margin, y), line, font=small, fill=(200, 200, 200))
        y += line_h
    if draw_map:  # the colour bar, right of the legend: weak -> strong
        bw, bh = fs * 6, max(6, fs // 2)
        x0 = w - margin - bw - d.textlength("strong", font=small) - fs // 2
        y0 = y - line_h * len(legend_lines) + (line_h - bh) // 2
        ramp = _ramp(colours, np.linspace(0, 1, bw, dtype=np.float32))
        bar = Image.fromarray(np.repeat(ramp[None], bh, axis=0).astype(np.uint8))
        lw = d.textlength("weak ", font=small)
        d.text((x0 - lw, y0 - (line_h - bh) // 2), "weak", font=small, fill=(200, 200, 200))
        out.paste(bar, (int(x0), int(y0)))
        d.text((x0 + bw + fs // 3, y0 - (line_h - bh) // 2), "strong", font=small, fill=(200, 200, 200))
    return out


def wants_overlay(row: dict, normal_evidence: bool = False) -> bool:
    """Whether a result gets an overlay file by default: PNEUMONIA results (NORMAL when asked)."""
    return row.get("status", "ok") == "ok" and (row.get("label") == "PNEUMONIA" or
                                                 (normal_evidence and row.get("label") == "NORMAL"))


def overlay_source(im: Image.Image, src_path) -> Image.Image:
    """The scan to draw on: IM if it is large enough, else SRC_PATH decoded again with its long side
    at least MAX_SIDE / 2 (a large JPEG is decoded at a reduced scale for the model; decoding it at the
    power-of-two scale just above half the cap is several times faster than at full size, and the
    drawing then needs no resize)."""
    w, h = im.size
    if max(w, h) >= MAX_SIDE // 2 or src_path is None:
        return im
    from .preprocess import ImageError, load_image

    try:
        full = load_image(src_path, MAX_SIDE // 4)  # JPEG draft to at least (MAX_SIDE / 2) px
    except ImageError:
        return im
    return full if max(full.size) > max(w, h) else im


def draw_overlay(card, im: Image.Image, features: np.ndarray, result: dict, *, src_path=None, degrees: int = 0,
                 normal_evidence: bool = False) -> Image.Image | None:
    """The overlay of one result (None for a result that gets none, see `wants_overlay`); the batch runner
    (edge_xray.batch) names and writes it, the page sends it.

    IM is the upright scan the model saw; SRC_PATH, when given, is decoded again at a larger scale for
    the drawing (turned upright by DEGREES, as IM was)."""
    if not wants_overlay(result, normal_evidence):
        return None
    base = overlay_source(im, src_path)
    if base is not im and degrees:
        from .orientation import rotate_back

        base = rotate_back(base, degrees)
    return render_heatmap(card, base, features, result, normal_evidence)


def jpeg_bytes(image: Image.Image) -> bytes:
    """IMAGE as the overlay file's JPEG (SUFFIX): what `classify --heatmap` writes and the page sends."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()
