"""Decode limits: what reading one scan may cost on a 1 GB device. One place for all of them (issue 23);
the decoders (preprocess.py, largeimage.py, dicom.py, levels.py) import them from here."""

from __future__ import annotations

from PIL import Image

# A file is held in memory once (decoded from, and hashed for the audit log): 180 MiB takes a 16-bit
# image up to the pixel limit (179 MB) and keeps a 1 GB device within its memory bound (hardening).
MAX_FILE_BYTES = 180 * 1024 * 1024
# Pillow's decompression-bomb limit is kept as it is (about 89 M pixels); larger images are refused.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
LARGE_PIXELS = 4096 * 4096  # above this, images are box-averaged to REDUCED_SIDE before any float copy
REDUCED_SIDE = 2048
PILLOW_DECODE_BUDGET = 200 * 1024 * 1024  # bytes: a file held in memory plus its image decoded whole by Pillow
DICOM_DECODE_BUDGET = 96 * 1024 * 1024  # bytes a compressed DICOM frame may take once decoded by pydicom
DECODE_STRIP_ROWS = 128  # rows of a large image decoded at a time (largeimage.py): a few MB per strip
FLOAT_STRIP_ROWS = 256  # rows converted to float32 at a time (levels.py): bounds the float working copy
