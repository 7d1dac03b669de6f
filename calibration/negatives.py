"""Images that are not chest X-rays, made here from numpy and Pillow alone (no downloads, no files).

Used to fit and to measure the out-of-distribution gate (calibration/gate.py, benchmarks/ood.py):
grey textures, terrain relief rendered as hillshade (with and without contour lines), maps, CT-like
and MRI-like slices (a Shepp-Logan style head phantom, chest CT, brain MRI), documents, screenshots
and photos of a screen (perspective, moire, glare). Every image is deterministic for its name.

The set is split by instance: instance numbers with `i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1` are
the HELD-OUT part, which no fitting or tuning may use (`negatives(part="fit")` never returns them).
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from edge_xray.heatmap import font

PER_KIND = 12  # instances of each generator
HOLD_OUT_EVERY = 3  # every third instance is held out


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def _u8(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    lo, hi = a.min(), a.max()
    return np.zeros(a.shape, np.uint8) if hi <= lo else np.rint(255 * (a - lo) / (hi - lo)).astype(np.uint8)


def power_noise(rng, shape, beta: float) -> np.ndarray:
    """Gaussian noise with a 1/f**beta power spectrum (beta 2-3: terrain; 1: texture)."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** (beta / 2)
    spec[0, 0] = 0
    a = np.fft.irfft2(spec, s=shape)
    return (a - a.mean()) / (a.std() + 1e-12)


def hillshade(z: np.ndarray, azimuth: float, altitude: float, exaggeration: float) -> np.ndarray:
    gy, gx = np.gradient(z * exaggeration)
    slope = np.pi / 2 - np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = np.radians(azimuth), np.radians(altitude)
    return np.sin(alt) * np.sin(slope) + np.cos(alt) * np.cos(slope) * np.cos(az - aspect)


def texture(rng, i):
    s = int(rng.integers(400, 700))
    kind = i % 3
    if kind == 0:  # fractal texture (stone, sand, bark)
        a = power_noise(rng, (s, s), rng.uniform(0.8, 1.8))
    elif kind == 1:  # fabric / wood: stretched noise with a weave
        a = power_noise(rng, (s, s // 4), rng.uniform(1.0, 2.0))
        a = np.asarray(Image.fromarray(_u8(a)).resize((s, s), Image.Resampling.BICUBIC), np.float64)
        yy, xx = np.mgrid[0:s, 0:s]
        a = a + 40 * np.sin(xx / rng.uniform(2, 6)) * np.sin(yy / rng.uniform(2, 6))
    else:  # cells / gravel: smoothed random blobs
        a = power_noise(rng, (s, s), 2.5)
        a = np.abs(np.sin(a * rng.uniform(3, 8))) + 0.3 * power_noise(rng, (s, s), 0.5)
    return _u8(a)


def terrain(rng, i):
    s = int(rng.integers(480, 900))
    z = power_noise(rng, (s, s), rng.uniform(3.0, 4.0))
    if i % 3 == 1:  # ridge-like mountains
        z = -np.abs(z)
    gy, gx = np.gradient(z)
    relief = rng.uniform(0.5, 3.0) / (np.hypot(gx, gy).mean() + 1e-12)
    shade = hillshade(z, rng.uniform(0, 360), rng.uniform(20, 60), relief)
    if i % 3 == 2:  # shaded relief blended with elevation tint, as on a physical map
        shade = 0.6 * _u8(shade) + 0.4 * _u8(z)
    g = _u8(shade)
    if i % 2:  # contour lines
        levels = _u8(z) // int(rng.integers(16, 40))
        edge = (np.diff(levels, axis=0, prepend=levels[:1]) != 0) | (np.diff(levels, axis=1, prepend=levels[:, :1]) != 0)
        g = np.where(edge, g // 3, g).astype(np.uint8)
    return g


def satellite(rng, i):
    """Satellite-like: fields (polygons of different grey), a river, relief texture."""
    s = int(rng.integers(500, 800))
    base = _u8(0.6 * power_noise(rng, (s, s), 2.6) + 0.4 * power_noise(rng, (s, s), 1.0))
    im = Image.fromarray(base)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(8, 30))):
        x, y = rng.integers(0, s, 2)
        pts = [(int(x + rng.integers(-80, 80)), int(y + rng.integers(-80, 80))) for _ in range(4)]
        d.polygon(pts, fill=int(rng.integers(40, 220)))
    pts = [(0, int(rng.integers(0, s)))]
    for k in range(1, 12):
        pts.append((k * s // 11, int(np.clip(pts[-1][1] + rng.integers(-60, 60), 0, s))))
    d.line(pts, fill=int(rng.integers(10, 60)), width=int(rng.integers(4, 14)))
    return np.asarray(im.filter(ImageFilter.GaussianBlur(1)))


def map_image(rng, i):
    w, h = int(rng.integers(500, 900)), int(rng.integers(500, 900))
    im = Image.new("L", (w, h), int(rng.integers(200, 250)))
    d = ImageDraw.Draw(im)
    # regions: a coarse Voronoi of grey levels
    n = int(rng.integers(5, 15))
    cx, cy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    yy, xx = np.mgrid[0:h, 0:w]
    lab = np.argmin((xx[..., None] - cx) ** 2 + (yy[..., None] - cy) ** 2, axis=-1)
    shades = rng.integers(120, 250, n)
    reg = shades[lab].astype(np.uint8)
    border = (np.diff(lab, axis=0, prepend=lab[:1]) != 0) | (np.diff(lab, axis=1, prepend=lab[:, :1]) != 0)
    reg[border] = 60
    im = Image.fromarray(reg)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(5, 20))):  # roads
        pts = [tuple(int(v) for v in rng.integers(0, (w, h))) for _ in range(int(rng.integers(2, 6)))]
        d.line(pts, fill=int(rng.integers(0, 90)), width=int(rng.integers(1, 6)))
    for _ in range(int(rng.integers(5, 20))):  # labels
        x, y = int(rng.integers(0, w - 80)), int(rng.integers(0, h - 20))
        d.text((x, y), "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(4, 10)))),
               fill=0, font=font(int(rng.integers(10, 22))))
    if i % 2:  # grid
        step = int(rng.integers(60, 150))
        for x in range(0, w, step):
            d.line([(x, 0), (x, h)], fill=100)
        for y in range(0, h, step):
            d.line([(0, y), (w, y)], fill=100)
    return np.asarray(im)


def _ellipse(yy, xx, cy, cx, ay, ax, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / ax) ** 2 + (v / ay) ** 2 <= 1


def phantom(rng, i):
    """A Shepp-Logan style head phantom with jittered ellipses (CT-like), optionally with noise."""
    s = int(rng.integers(256, 512))
    yy, xx = np.mgrid[-1:1:s * 1j, -1:1:s * 1j]
    ells = [(1, .69, .92, 0, 0, 0), (-.8, .6624, .874, 0, -.0184, 0), (-.2, .11, .31, .22, 0, -18),
            (-.2, .16, .41, -.22, 0, 18), (.1, .21, .25, 0, .35, 0), (.1, .046, .046, 0, .1, 0),
            (.1, .046, .046, 0, -.1, 0), (.1, .046, .023, -.08, -.605, 0), (.1, .023, .023, 0, -.606, 0),
            (.1, .023, .046, .06, -.605, 0)]
    a = np.zeros((s, s))
    for v, ax, ay, x0, y0, ang in ells:
        j = rng.uniform(0.9, 1.1, 4)
        a += v * _ellipse(-yy, xx, y0 * j[0], x0 * j[1], ay * j[2], ax * j[3], np.radians(ang))
    if i % 2:
        a = a + rng.normal(0, 0.03, a.shape)
    return _u8(a)


def ct_chest(rng, i):
    """An axial chest CT-like slice: body, two dark lungs with vessels, spine, table."""
    s = int(rng.integers(300, 520))
    yy, xx = np.mgrid[-1:1:s * 1j, -1:1:s * 1j]
    a = np.full((s, s), 0.0)
    body = _ellipse(yy, xx, 0.05, 0, rng.uniform(0.55, 0.7), rng.uniform(0.8, 0.92))
    a[body] = 0.55
    for sx in (-1, 1):
        lung = _ellipse(yy, xx, -0.02, sx * rng.uniform(0.35, 0.45), rng.uniform(0.4, 0.5), rng.uniform(0.22, 0.3))
        a[lung] = 0.08
    a[_ellipse(yy, xx, 0.45, 0, 0.12, 0.1)] = 1.0  # vertebra
    a[_ellipse(yy, xx, -0.05, 0.05, 0.2, 0.16)] = 0.62  # heart
    a[_ellipse(yy, xx, 0.5, 0, 0.06, 0.05)] = 0.3  # canal
    vessels = (power_noise(rng, (s, s), 1.0) > 2.2) & (a == 0.08)
    a[vessels] = 0.35
    a[(np.abs(yy - 0.82) < 0.02) & (np.abs(xx) < 0.95)] = 0.7  # table
    a = a + rng.normal(0, 0.02, a.shape)
    return _u8(a)


def mri_brain(rng, i):
    """A brain MRI-like slice (axial or sagittal): scalp, dark skull, folded cortex, ventricles."""
    s = int(rng.integers(256, 512))
    yy, xx = np.mgrid[-1:1:s * 1j, -1:1:s * 1j]
    sag = i % 3 == 1
    ay, ax = (0.75, 0.9) if sag else (0.9, 0.72)
    head = _ellipse(yy, xx, 0, 0, ay, ax)
    skull = _ellipse(yy, xx, 0, 0, ay * 0.94, ax * 0.93)
    brain = _ellipse(yy, xx, 0.02, 0, ay * 0.88, ax * 0.86)
    a = np.zeros((s, s))
    a[head] = 0.8
    a[skull] = 0.1
    folds = power_noise(rng, (s, s), 2.0)
    cortex = np.where(np.sin(folds * rng.uniform(4, 8)) > 0, 0.75, 0.5)
    a[brain] = cortex[brain]
    if not sag:
        for sx in (-1, 1):
            a[_ellipse(yy, xx, -0.05, sx * 0.1, 0.3, 0.07, sx * 0.3)] = 0.15  # ventricles
    else:
        a[_ellipse(yy, xx, 0.45, 0.0, 0.22, 0.3) & brain] = 0.6  # cerebellum
    a = np.asarray(Image.fromarray(_u8(a)).filter(ImageFilter.GaussianBlur(s / 300)), np.float64)
    a += rng.normal(0, rng.uniform(2, 8), a.shape)
    if i % 2:  # inverted contrast (T2-like)
        a = np.where(head, 255 - a, a)
    return _u8(a)


WORDS = ("patient report result normal value date clinic the of and to for with total page form name "
         "address signature invoice amount table summary figure data").split()


def document(rng, i):
    w, h = 850, 1100
    im = Image.new("L", (w, h), int(rng.integers(225, 256)))
    d = ImageDraw.Draw(im)
    y = 60
    d.text((60, y), " ".join(rng.choice(WORDS, 4)).upper(), fill=0, font=font(30))
    y += 70
    while y < h - 80:
        if rng.random() < 0.15:  # a table
            rows, cols = int(rng.integers(3, 7)), int(rng.integers(2, 5))
            cw = (w - 120) // cols
            for r in range(rows):
                for c in range(cols):
                    d.rectangle((60 + c * cw, y, 60 + (c + 1) * cw, y + 28), outline=0)
                    d.text((66 + c * cw, y + 6), str(rng.choice(WORDS)), fill=0, font=font(14))
                y += 28
            y += 20
        else:
            d.text((60, y), " ".join(rng.choice(WORDS, int(rng.integers(6, 12)))), fill=int(rng.integers(0, 60)),
                   font=font(int(rng.integers(13, 19))))
            y += int(rng.integers(20, 30))
    if i % 2:  # scanned: slight rotation, blur, noise, grey paper
        im = im.rotate(float(rng.uniform(-3, 3)), fillcolor=90, expand=True).filter(ImageFilter.GaussianBlur(0.8))
        a = np.asarray(im, np.float64) * rng.uniform(0.75, 0.95) + rng.normal(0, 6, im.size[::-1])
        return np.clip(a, 0, 255).astype(np.uint8)
    return np.asarray(im)


def screenshot(rng, i):
    w, h = (1280, 800) if i % 2 else (1024, 768)
    dark = rng.random() < 0.5
    bg, fg = (35, 210) if dark else (240, 20)
    im = Image.new("L", (w, h), bg)
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, w, 30), fill=bg - 20 if dark else 200)
    for k in range(3):
        d.ellipse((10 + 22 * k, 8, 24 + 22 * k, 22), fill=120)
    side = int(rng.integers(150, 300))
    d.rectangle((0, 30, side, h), fill=bg + 15 if dark else 225)
    for k in range(int(rng.integers(6, 16))):
        d.text((16, 50 + 30 * k), " ".join(rng.choice(WORDS, 2)), fill=fg, font=font(14))
    y = 50
    while y < h - 60:
        r = rng.random()
        if r < 0.25:  # a picture (gradient block)
            bw, bh = int(rng.integers(150, 400)), int(rng.integers(80, 220))
            x0 = side + 30
            g = np.linspace(int(rng.integers(0, 255)), int(rng.integers(0, 255)), bw)[None].repeat(bh, 0)
            im.paste(Image.fromarray(g.astype(np.uint8)), (x0, y))
            y += bh + 20
        elif r < 0.4:  # buttons
            for k in range(int(rng.integers(2, 5))):
                x0 = side + 30 + 130 * k
                d.rounded_rectangle((x0, y, x0 + 110, y + 34), 6, fill=int(rng.integers(60, 200)))
                d.text((x0 + 14, y + 9), str(rng.choice(WORDS)), fill=255 if not dark else 0, font=font(14))
            y += 54
        else:
            d.text((side + 30, y), " ".join(rng.choice(WORDS, int(rng.integers(5, 14)))), fill=fg,
                   font=font(int(rng.integers(13, 20))))
            y += int(rng.integers(22, 32))
    return np.asarray(im)


def screen_photo(rng, i):
    """A photo of a screen: a screenshot, perspective-warped into a dark bezel, moire, glare, blur, noise."""
    scr = Image.fromarray(screenshot(rng, i + 1))
    w, h = 1200, 900
    scr = scr.resize((900, 600), Image.Resampling.BILINEAR)
    # perspective: map the output quad back to the screenshot
    j = rng.uniform(-60, 60, 8)
    quad = (150 + j[0], 150 + j[1], 150 + j[2], 750 + j[3], 1050 + j[4], 750 + j[5], 1050 + j[6], 150 + j[7])
    sw, sh = scr.size
    src = np.array([[0, 0], [0, sh], [sw, sh], [sw, 0]], float)
    dst = np.array(quad, float).reshape(4, 2)
    A = []
    for (x, y), (u, v) in zip(dst, src):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.array(A))
    coeffs = (vt[-1] / vt[-1][-1])[:8]
    mask = Image.new("L", scr.size, 255).transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs))
    warped = scr.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BILINEAR)
    room = Image.fromarray(_u8(power_noise(rng, (h, w), 2.5)) // 3 + 20)
    im = Image.composite(warped, room, mask)
    a = np.asarray(im, np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    f1, f2, ang = rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9), rng.uniform(0, np.pi)
    moire = np.sin(f1 * (xx * np.cos(ang) + yy * np.sin(ang))) * np.sin(f2 * (xx * np.sin(ang) - yy * np.cos(ang)))
    a = a + 25 * moire * (np.asarray(mask) > 0)
    gx, gy = rng.uniform(200, 1000), rng.uniform(150, 750)
    a = a + 90 * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * rng.uniform(80, 200) ** 2))  # glare
    a = a + rng.normal(0, 5, a.shape)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return np.asarray(out)


GENERATORS = {
    "texture": texture, "terrain": terrain, "satellite": satellite, "map": map_image, "phantom": phantom,
    "ct": ct_chest, "mri": mri_brain, "document": document, "screenshot": screenshot, "screenphoto": screen_photo,
}


def is_held_out(instance: int) -> bool:
    return instance % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1


def negatives(part: str = "fit", per_kind: int = PER_KIND, kinds=None):
    """Yield (name, category, grey PIL image) for PART: "fit" (development), "held-out" or "all"."""
    if part not in ("fit", "held-out", "all"):
        raise ValueError(f"part must be fit, held-out or all (got {part})")
    for kind, gen in GENERATORS.items():
        if kinds is not None and kind not in kinds:
            continue
        for i in range(per_kind):
            held = is_held_out(i)
            if (part == "fit" and held) or (part == "held-out" and not held):
                continue
            name = f"{kind}-{i}"
            yield name, kind, Image.fromarray(np.ascontiguousarray(gen(_rng(name), i)), mode="L")
