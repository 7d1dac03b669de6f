"""Large images within a bounded memory (a 1 GB device): decoded in strips and box-averaged as they come.

Pillow decodes a PNG whole, and `Image.reduce`/`draft` do not help for 16-bit data: a 9400 x 9400 16-bit
PNG of zeros (a 172 KB file) would take 177 MB as decoded, several times that as float copies. Here a
non-interlaced PNG is decoded DECODE_STRIP_ROWS rows at a time: the zlib stream is inflated with a bounded
output, and each strip is wrapped, with the previous strip's last row (unfiltered, filter type None)
in front, into a small stored (uncompressed) PNG that Pillow unfilters and decodes. Each strip is then
box-averaged (float32) into the reduced image, at most REDUCED_SIDE pixels a side.

Other formats are decoded by Pillow whole when the decoded image and the file together fit
PILLOW_DECODE_BUDGET; then large ones are reduced in strips the same way. Anything over the budget that cannot
be decoded in strips is refused, before decoding, with its size.
"""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
from PIL import Image

from .dicom import reduction
from .errors import ImageError
from .levels import colourfulness, gray8_from_array, reduce_mean
from .limits import DECODE_STRIP_ROWS, PILLOW_DECODE_BUDGET, REDUCED_SIDE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (bit depth, colour type) -> (Pillow mode of a decoded strip, raw mode that packs a row back as PNG bytes)
PNG_STRIP_MODES = {(16, 0): ("I;16", "I;16B"), (8, 0): ("L", "L"), (8, 2): ("RGB", "RGB"),
                   (8, 4): ("LA", "LA"), (8, 6): ("RGBA", "RGBA"), (8, 3): ("P", "P")}
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2, "I;16L": 2,
                   "I;16N": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4,
                   "CMYK": 4, "I": 4, "F": 4}
ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)) & 0xFFFFFFFF)


def _stored_zlib(parts) -> list:
    """PARTS (bytes) as the pieces of one zlib stream of stored (uncompressed) deflate blocks, to be
    joined once: a copy and a checksum, several times faster than zlib.compress(data, 0)."""
    out, adler, blocks = [b"\x78\x01"], 1, []
    for p in parts:
        view = memoryview(p)
        adler = zlib.adler32(view, adler)
        blocks.extend(view[i:i + 65535] for i in range(0, len(view), 65535))
    for i, b in enumerate(blocks):
        out.append(struct.pack("<BHH", 1 if i == len(blocks) - 1 else 0, len(b), 0xFFFF ^ len(b)))
        out.append(b)
    if not blocks:
        out.append(struct.pack("<BHH", 1, 0, 0xFFFF))
    out.append(struct.pack(">I", adler & 0xFFFFFFFF))
    return out


def png_chunks(data: bytes):
    """(header fields, [IDAT bodies as memoryviews], [other chunks needed to decode: PLTE, tRNS])."""
    pos, idat, extra, header, extra_exif = 8, [], [], None, []
    view = memoryview(data)
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = view[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", bytes(body[:13]))
        elif kind == b"IDAT":
            idat.append(body)
        elif kind in (b"PLTE", b"tRNS"):
            extra.append(_chunk(kind, bytes(body)))
        elif kind == b"eXIf":
            extra_exif.append(bytes(body))
        elif kind == b"IEND":
            break
        pos += 12 + n
    return header, idat, extra, (extra_exif[0] if extra_exif else None)


def strip_rows(factor: int) -> int:
    """Rows per strip: about DECODE_STRIP_ROWS, a whole number of boxes of FACTOR rows."""
    return max(factor, (DECODE_STRIP_ROWS // factor) * factor)


def png_strips(data: bytes, rows: int = DECODE_STRIP_ROWS):
    """Decoded strips (Pillow images of ROWS rows, the last shorter) of a non-interlaced PNG whose
    depth and colour type are in PNG_STRIP_MODES; None when this PNG cannot be decoded in strips."""
    header, idat, extra, _ = png_chunks(data)
    if header is None or not idat:
        return None
    w, h, depth, ctype, _, _, interlace = header
    if interlace or (depth, ctype) not in PNG_STRIP_MODES:
        return None
    return _strips(w, h, depth, ctype, idat, extra, rows)


def _strips(w, h, depth, ctype, idat, extra, strip_rows):
    mode, rawmode = PNG_STRIP_MODES[(depth, ctype)]
    row_bytes = 1 + math.ceil(w * depth * PNG_CHANNELS[ctype] / 8)
    inflate = zlib.decompressobj()
    chunks = iter(idat)
    pending = b""
    prev = None  # the previous strip's last row, unfiltered, with the filter byte 0 in front
    for y in range(0, h, strip_rows):
        k = min(strip_rows, h - y)
        need = k * row_bytes
        parts, have = [], 0
        while have < need:
            if not pending:
                if inflate.unconsumed_tail:
                    pending = inflate.unconsumed_tail
                else:
                    try:
                        pending = bytes(next(chunks))
                    except StopIteration:
                        raise ImageError("corrupt or truncated image (PNG data ends early)") from None
            try:
                out = inflate.decompress(pending, need - have)
            except zlib.error as e:
                raise ImageError(f"corrupt or truncated image ({e})") from None
            pending = b""
            parts.append(out)
            have += len(out)
            if not out and not inflate.unconsumed_tail and inflate.eof:
                raise ImageError("corrupt or truncated image (PNG data ends early)")
        rows = k if prev is None else k + 1
        ihdr = struct.pack(">IIBBBBB", w, rows, depth, ctype, 0, 0, 0)
        stream = _stored_zlib(parts if prev is None else [prev] + parts)
        size = sum(len(x) for x in stream)
        # one copy: the IDAT chunk's CRC is left 0 (Pillow does not check it; zlib checked the file's data)
        png = b"".join([PNG_SIGNATURE, _chunk(b"IHDR", ihdr), *extra, struct.pack(">I", size), b"IDAT", *stream,
                        b"\0\0\0\0", _chunk(b"IEND", b"")])
        del stream, parts
        try:
            strip = Image.open(io.BytesIO(png))
            strip.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"corrupt or truncated image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        if prev is not None:
            strip = strip.crop((0, 1, w, rows))
        prev = b"\x00" + strip.crop((0, k - 1, w, k)).tobytes("raw", rawmode)
        yield strip


def _reduced_strip(strip: Image.Image, factor: int) -> np.ndarray:
    """A decoded strip box-averaged by FACTOR: float32 (rows, cols) for grey, (rows, cols, 3) for colour
    (alpha composited on black, as for small images). 8-bit strips are reduced by Pillow (in C)."""
    if strip.mode in ("I;16", "I", "F"):
        return reduce_mean(np.asarray(strip), factor)
    if strip.mode in ("LA", "RGBA", "P", "PA"):
        rgba = strip.convert("RGBA")
        strip = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if strip.mode not in ("L", "RGB"):
        strip = strip.convert("RGB")
    small = strip.reduce(factor) if factor > 1 else strip
    return np.asarray(small, dtype=np.float32)


def reduce_strips(strips, w: int, h: int, factor: int, high_depth: bool):
    """Box-average decoded strips (each a multiple of FACTOR rows but the last) into (gray8, chroma)."""
    out = None
    y = 0
    for strip in strips:
        red = _reduced_strip(strip, factor)[:, : w // factor]
        if out is None:
            out = np.zeros((h // factor, w // factor) + red.shape[2:], np.float32)
        n = min(red.shape[0], out.shape[0] - y)
        out[y:y + n] = red[:n]
        y += n
        del red, strip
    if out is None:
        raise ImageError("corrupt or truncated image (no image data)")
    if out.ndim == 3:
        np.rint(out, out=out)
        np.clip(out, 0, 255, out=out)
        rgb = Image.fromarray(out.astype(np.uint8), "RGB")
        del out
        return rgb.convert("L"), colourfulness(rgb)
    if high_depth:
        return gray8_from_array(out), 0.0
    return gray8_from_array(out, (0.0, 255.0)), 0.0


def decoded_bytes(im: Image.Image) -> int:
    w, h = im.size
    return w * h * BYTES_PER_PIXEL.get(im.mode, 4)


def too_big_to_decode_whole(im: Image.Image, data: bytes) -> bool:
    """True when the file, its image decoded whole and one converted copy would not fit PILLOW_DECODE_BUDGET."""
    return len(data) + 2 * decoded_bytes(im) > PILLOW_DECODE_BUDGET


def _orientation(im: Image.Image, data: bytes):
    """The transpose that makes the image upright (EXIF orientation), or None. For a PNG the eXIf chunk
    is read directly: Pillow's getexif() would decode the whole image to find it."""
    try:
        if im.format == "PNG":
            raw = png_chunks(data)[3]
            if raw is None:
                return None
            exif = Image.Exif()
            exif.load(raw)
            return ORIENTATION.get(exif.get(0x0112))
        return ORIENTATION.get(im.getexif().get(0x0112))
    except Exception:  # unreadable EXIF: no orientation
        return None


def decode_large(im: Image.Image, data: bytes):
    """(8-bit grey image, chroma) of an opened, not yet decoded image over LARGE_PIXELS, within memory
    bounds; ImageError when it cannot be decoded within PILLOW_DECODE_BUDGET, or is corrupt."""
    try:
        return _decode_large(im, data)
    except (ImageError, MemoryError):
        raise
    except Exception as e:  # a corrupt file may fail anywhere in a decoder: one clean line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"corrupt or truncated image ({msg})") from None


def _decode_large(im: Image.Image, data: bytes):
    w, h = im.size
    factor = max(reduction(h, w), math.ceil(max(w, h) / REDUCED_SIDE))  # this path always reduces
    turn = _orientation(im, data)
    strips = png_strips(data, strip_rows(factor)) if im.format == "PNG" else None
    view = raw_view(im, data) if strips is None else None
    if strips is not None:
        gray, chroma = reduce_strips(strips, w, h, factor, im.mode.startswith("I"))
    elif view is not None:  # uncompressed grey pixels, in place in the file's bytes
        small = reduce_mean(view, factor)
        gray, chroma = gray8_from_array(small, (0.0, 255.0) if view.dtype == np.uint8 else None), 0.0
    else:
        need = decoded_bytes(im) + len(data)
        if need > PILLOW_DECODE_BUDGET:
            raise ImageError(f"image too large to decode on this device ({w}x{h} {im.mode}, "
                             f"{need // (1024 * 1024)} MB decoded; limit {PILLOW_DECODE_BUDGET // (1024 * 1024)} MB)")
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F", "L", "RGB", "RGBA", "LA", "P", "PA", "CMYK",
                       "YCbCr", "1"):
            gray, chroma = reduce_strips(_pillow_strips(im, factor), w, h, factor,
                                         im.mode.startswith("I") or im.mode == "F")
        else:
            raise ImageError(f"unsupported image mode {im.mode}")
    if turn is not None:
        gray = gray.transpose(turn)
    return gray, chroma


RAW_DTYPES = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "L": "u1"}


def raw_view(im: Image.Image, data: bytes):
    """The pixels of an uncompressed grey TIFF viewed in place in DATA (no copy), or None: its strips
    must be Pillow "raw" tiles of the full width, top to bottom, stored one after the other."""
    if im.format != "TIFF" or im.mode not in ("I;16", "I;16B", "L"):
        return None
    w, h = im.size
    tiles = sorted(im.tile, key=lambda t: t[1][1])
    expect_y, expect_offset = 0, tiles[0][2] if tiles else 0
    for t in tiles:
        codec, (x0, y0, x1, y1), offset, args = t[0], t[1], t[2], t[3]
        rawmode = args[0] if isinstance(args, tuple) else args
        stride = args[1] if isinstance(args, tuple) and len(args) > 1 else 0
        if (codec != "raw" or rawmode not in RAW_DTYPES or (x0, x1) != (0, w) or y0 != expect_y
                or offset != expect_offset or stride not in (0, w * np.dtype(RAW_DTYPES[rawmode]).itemsize)):
            return None
        expect_y, expect_offset = y1, offset + (y1 - y0) * w * np.dtype(RAW_DTYPES[rawmode]).itemsize
    dtype = np.dtype(RAW_DTYPES[(tiles[0][3][0] if isinstance(tiles[0][3], tuple) else tiles[0][3])])
    if expect_y != h or tiles[0][2] + w * h * dtype.itemsize > len(data):
        return None
    return np.frombuffer(data, dtype=dtype, count=w * h, offset=tiles[0][2]).reshape(h, w)


def _pillow_strips(im: Image.Image, factor: int):
    rows = strip_rows(factor)
    w, h = im.size
    for y in range(0, h, rows):
        s = im.crop((0, y, w, min(h, y + rows)))
        if s.mode in ("1", "CMYK", "YCbCr", "PA"):
            s = s.convert("RGBA" if s.mode == "PA" else "RGB" if s.mode != "1" else "L")
        elif s.mode in ("I;16B", "I;16L", "I;16N"):
            s = s.convert("I")
        yield s
