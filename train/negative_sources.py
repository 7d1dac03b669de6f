"""Rebuild the intended-use check's extra negatives (public radiographs from other collections) from
the manifests in train/negatives/ and local clones of the repositories they name.

    python -m edge_xray.train.negative_sources train/negatives/chest.csv --repos CLONES --out NEG_DIR

A manifest is the labels.csv of a negatives folder (train/intended_use.negative_files reads it): one row
per image, with `file` (kind folder and name), `patientid`, `collection`, `image_license` and
`source` as `owner/name@commit:path`. CLONES holds a git clone (bare or not) of each repository named
there, as `owner+name`, `owner/name` or `name` (with its `repo` folder inside, if any). The images are
never part of this repository: this is how anyone gets the same ones (see docs/intended-use.md,
"Training data").

Each image is made as it was for the bundled model: 16-bit images are rescaled to 8 bits as the
screen rescales them (edge_xray.levels), grey stored as RGB becomes grey, a source stored turned by 90 degrees
(the manifest's `view` says so) is turned back, the long side is brought down to MAX_SIDE px (Lanczos),
and the image is saved as the manifest's file name says (JPEG at JPEG_QUALITY, or PNG); DICOM files
are copied byte for byte. Rows whose source is missing are reported and skipped (exit code 1).
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from edge_xray.levels import gray8_from_array

MAX_SIDE = 1024
JPEG_QUALITY = 92
TURNED_BACK = "rotated 90deg CCW; rotated back"  # in `view`: the source file is turned 90 degrees counter-clockwise


def git_dir(repos: Path, repo: str) -> Path | None:
    """The clone of REPO ("owner/name") under REPOS, or None."""
    owner, name = repo.split("/", 1)
    for d in (repos / f"{owner}+{name}", repos / owner / name, repos / name):
        for g in (d / "repo", d / "repo" / ".git", d / ".git", d):
            if (g / "HEAD").is_file() and (g / "objects").is_dir():
                return g
    return None


def source_bytes(repos: Path, source: str) -> bytes:
    """The bytes of SOURCE ("owner/name@commit:path") from its clone under REPOS. Raises LookupError."""
    repo, rest = source.split("@", 1)
    commit, path = rest.split(":", 1)
    g = git_dir(repos, repo)
    if g is None:
        raise LookupError(f"no clone of {repo} under {repos}")
    r = subprocess.run(["git", "--git-dir", str(g), "show", f"{commit}:{path}"], capture_output=True)
    if r.returncode != 0:
        raise LookupError(f"{source}: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def to_8bit(im: Image.Image) -> Image.Image:
    """An 8-bit L (or RGB, for real colour) image: 16-bit and float rescaled, grey-as-RGB made grey."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return gray8_from_array(np.asarray(im))  # the screen's own rescale of high bit depths
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB" if im.mode in ("P", "RGBA", "CMYK", "YCbCr") else "L")
    if im.mode == "RGB":
        a = np.asarray(im).astype(np.int16)
        if np.abs(a[..., 0] - a[..., 1]).max() <= 8 and np.abs(a[..., 1] - a[..., 2]).max() <= 8:
            return im.convert("L")
    return im


def make_image(data: bytes, turned: bool) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    im = to_8bit(im)
    if turned:
        im = im.transpose(Image.Transpose.ROTATE_270)
    w, h = im.size
    if max(w, h) > MAX_SIDE:
        s = MAX_SIDE / max(w, h)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
    return im


def rebuild(manifest, repos, out) -> tuple[int, list[str]]:
    """Write the images of MANIFEST into OUT (kind folders and labels.csv) from the clones under REPOS.
    Returns (images written, the problems of rows skipped)."""
    manifest, repos, out = Path(manifest), Path(repos), Path(out)
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    done, problems = 0, []
    for row in rows:
        dest = out / row["file"]
        try:
            data = source_bytes(repos, row["source"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.suffix.lower() == ".dcm":
                dest.write_bytes(data)
            else:
                im = make_image(data, TURNED_BACK in row.get("view", ""))
                if dest.suffix.lower() in (".jpg", ".jpeg"):
                    im.save(dest, "JPEG", quality=JPEG_QUALITY)
                else:
                    im.save(dest)
            done += 1
        except (LookupError, OSError, ValueError) as e:
            problems.append(f"{row['file']}: {e}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0].keys()) if rows else ["file"])
        w.writeheader()
        w.writerows(rows)
    return done, problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", help="train/negatives/chest.csv or train/negatives/body.csv")
    ap.add_argument("--repos", required=True, help="folder of git clones of the repositories the manifest names")
    ap.add_argument("--out", required=True, help="the negatives folder to write (give it to --negatives)")
    args = ap.parse_args(argv)
    done, problems = rebuild(args.manifest, args.repos, args.out)
    for p in problems:
        print(f"skipped {p}", file=sys.stderr)
    print(f"{args.out}: {done} images written, {len(problems)} skipped")
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
