"""What a batch screens: files given, and the files of folders found by their content, not their suffix.

Folders are walked in name order (the order of `sorted(rglob)`). A file is screened when its first bytes
are those of an image format (PNG, JPEG, GIF, WebP, TIFF, BMP, JPEG 2000, DICOM with its `DICM` preamble,
or a DICOM data set without preamble, as older ACR-NEMA style exports write, whose first elements parse
and in which pydicom finds pixel data) or its suffix is one of IMAGE_SUFFIXES (a broken file named `.png`
gets its own error row); anything else is skipped and counted. A `DICOMDIR` (the index of a CD or USB
export) stands for the images it references; they are screened once, in its place. Symbolic links to folders are followed once: a link back into a
folder already walked (a loop) is skipped. Hidden files and folders (`.name`) are skipped.
`Skipped` counts what was not screened, and why, for the one summary line at the end of a batch.
`list_images` is the same walk for benchmarks and tools that want a plain list of files.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path

from .dicom import has_preamble, looks_like_dataset
from .preprocess import IMAGE_SUFFIXES

SNIFF_BYTES = 512  # a DICM preamble needs 132; a data set without one, its first elements
DICOMDIR_NAME = "DICOMDIR"

# reasons, as counted in the summary line: key -> (one, several)
NOT_IMAGE, UNSUPPORTED, LOOP, BROKEN_LINK, HIDDEN, SPECIAL, UNREADABLE = (
    "not_image", "unsupported", "loop", "broken_link", "hidden", "special", "unreadable")
REASONS = {NOT_IMAGE: ("not an image", "not images"),
           UNSUPPORTED: ("an unsupported image format", "unsupported image formats"),
           LOOP: ("symlink loop", "symlink loops"), BROKEN_LINK: ("broken link", "broken links"),
           HIDDEN: ("hidden", "hidden"), SPECIAL: ("not a regular file", "not regular files"),
           UNREADABLE: ("unreadable", "unreadable")}


class Skipped(Counter):
    """Files of folders that were not screened: reason -> count."""

    def add(self, reason: str, n: int = 1):
        self[reason] += n

    def summary(self) -> str | None:
        """'skipped 3 files: 2 not images, 1 symlink loop', or None when nothing was skipped."""
        total = sum(self.values())
        if not total:
            return None
        parts = ", ".join(f"{n} {REASONS[reason][n != 1]}"
                          for reason, n in sorted(self.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"skipped {total} file{'s' if total != 1 else ''}: {parts}"


def sniff(head: bytes) -> str | None:
    """The image format that HEAD (a file's first bytes) begins with, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 26:
        return "BMP"
    if has_preamble(head):
        return "DICOM"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG2000"
    return None


def _readable_formats() -> set:
    formats = {"PNG", "JPEG", "GIF", "TIFF", "BMP", "DICOM"}
    try:
        from PIL import features

        if features.check("webp"):
            formats.add("WEBP")
        if features.check("jpg_2000"):
            formats.add("JPEG2000")
    except Exception:  # a missing feature module means: not readable
        pass
    return formats


def _head(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(SNIFF_BYTES)
    except OSError:
        return None


def dicomdir_files(path) -> list[Path]:
    """The image files a DICOMDIR references (in its order), as paths beside it. ValueError if unreadable."""
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        records = ds.DirectoryRecordSequence
    except Exception as e:  # pydicom raises many types on corrupt files
        raise ValueError(f"not a readable DICOMDIR ({type(e).__name__})") from None
    out = []
    for rec in records:
        fid = rec.get("ReferencedFileID")
        if fid is None or str(rec.get("DirectoryRecordType", "")).upper() not in ("IMAGE", ""):
            continue
        parts = [fid] if isinstance(fid, str) else list(fid)
        out.append(path.parent.joinpath(*[str(p) for p in parts]))
    return out


def _has_pixel_data(path: Path) -> bool:
    """A data set without preamble that pydicom (forced) reads with pixel data and an image size."""
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), force=True, defer_size=1024)
        return "PixelData" in ds and int(ds.get("Rows", 0) or 0) > 0 and int(ds.get("Columns", 0) or 0) > 0
    except Exception:  # pydicom raises many types on what is not DICOM: not an image
        return False


def list_images(paths) -> list[Path]:
    """Files and folders -> the files to screen, in order (find_inputs on each); missing paths are kept."""
    return [f for p in paths for f in find_inputs(p)]


def find_inputs(path, skipped: Skipped | None = None) -> list[Path]:
    """PATH (a file, a DICOMDIR or a folder) -> the files to screen, in order. A missing path is kept
    (to be reported as such); what a folder holds but is not screened is counted in SKIPPED."""
    skipped = Skipped() if skipped is None else skipped
    p = Path(path)
    if p.name.upper() == DICOMDIR_NAME and p.is_file():
        try:
            return dicomdir_files(p)
        except ValueError:
            return [p]
    if not p.is_dir():
        return [p]
    files: list[Path] = []
    _walk(p, files, skipped, set(), _readable_formats())
    # a DICOMDIR stands for its images: they are screened once, where it is listed
    out, seen = [], set()
    referenced = {}
    for f in files:
        if f.name.upper() == DICOMDIR_NAME:
            try:
                referenced[f] = dicomdir_files(f)
            except ValueError:
                skipped.add(UNREADABLE)
                referenced[f] = []
    listed = {_key(r) for refs in referenced.values() for r in refs}
    for f in files:
        if f in referenced:
            for r in referenced[f]:
                k = _key(r)
                if k not in seen:
                    seen.add(k)
                    out.append(r)
        elif _key(f) not in listed and _key(f) not in seen:
            seen.add(_key(f))
            out.append(f)
    return out


def _key(p: Path):
    try:
        return os.path.realpath(p)
    except OSError:
        return str(p)


def _walk(folder: Path, out: list, skipped: Skipped, ancestors: set, formats: set):
    try:
        st = folder.stat()
    except OSError:
        skipped.add(UNREADABLE)
        return
    ident = (st.st_dev, st.st_ino)
    if ident in ancestors:
        skipped.add(LOOP)
        return
    ancestors = ancestors | {ident}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        skipped.add(UNREADABLE)
        return
    for e in entries:
        p = folder / e.name
        if e.name.startswith("."):
            skipped.add(HIDDEN)
            continue
        try:
            st = os.stat(p)  # follows links
        except OSError:
            skipped.add(BROKEN_LINK if e.is_symlink() else UNREADABLE)
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(p, out, skipped, ancestors, formats)
            continue
        if not stat.S_ISREG(st.st_mode):
            skipped.add(SPECIAL)
            continue
        if e.name.upper() == DICOMDIR_NAME:
            out.append(p)
            continue
        head = _head(p) or b""
        kind = sniff(head)
        if kind is None and looks_like_dataset(head) and _has_pixel_data(p):
            kind = "DICOM"  # no preamble (ACR-NEMA style), but pydicom reads an image from it
        if kind in formats or p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p)
        elif kind is not None:
            skipped.add(UNSUPPORTED)
        else:
            skipped.add(NOT_IMAGE)
