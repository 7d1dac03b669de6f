"""Texts made in English by other modules, listed here so that `pybabel extract -k N_` puts them in
the catalogue: advice (edge_app/decision.py), refusal reasons (gate, orientation, preprocess, DICOM,
the intended-use and DICOM-tag checks) and notes. Nothing imports this module at run time;
edge_xray.i18n.translate matches these texts, placeholders included, against the English it is given.

A msgid with `{name}` placeholders matches any text with words or numbers in their place. When a module
words a new reason, add it here (tests/test_i18n.py finds the reasons in the code and fails until it
is in the catalogue), then update and translate the catalogue (docs/screen.md).
"""

from .i18n import N_

ADVICE = (
    N_("REFER TODAY: signs of pneumonia, likely bacterial (may need antibiotics now)"),
    N_("REFER WITHIN 2 DAYS: signs of pneumonia, likely viral"),
    N_("REFER TODAY: signs of pneumonia, bacterial or viral uncertain (may need antibiotics now)"),
    N_("REFER TODAY: signs of pneumonia (this model does not tell bacterial from viral; may need antibiotics now)"),
    N_("No pneumonia found by the screen; follow clinical signs and re-check if unwell"),
    N_("Not screened: {reason}"),
)

ANSWERS = (
    N_("REFER TODAY"),
    N_("REFER WITHIN 2 DAYS"),
    N_("No pneumonia found"),
    N_("Not screened"),
    N_("very likely pneumonia"),
    N_("likely pneumonia"),
    N_("possible pneumonia"),
    N_("pneumonia unlikely"),
    N_("pneumonia very unlikely"),
    N_("bacterial"),
    N_("viral"),
)

# edge_app/gate.py
GATE = (
    N_("colour image: not a radiograph (X-rays are grey)"),
    N_("too long and narrow for a chest X-ray (aspect ratio {ratio} > {limit})"),
    N_("blank or nearly uniform image"),
    N_("does not look like a frontal chest X-ray: its layout does not match (correlation {value} < {limit})"),
    N_("does not look like a chest X-ray: its content is unlike the training X-rays (distance {value} > {limit})"),
    N_("does not look like a chest X-ray: {what} ({detail})"),
    N_("its light and dark areas are not where a chest X-ray has them"),
    N_("no bright column down the middle (spine and heart) between two darker lung fields"),
    N_("its left and right halves do not mirror each other as a chest does"),
    N_("too much fine detail or sharp edges for a radiograph (text, texture, a photo or a screen?)"),
    N_("too many or too few edges for a radiograph"),
    N_("parts of the image are unlike any part of the training X-rays"),
    N_("its content is unlike the chest X-rays the model was trained on"),
    N_("its layout does not match that of a frontal chest X-ray"),
)

# edge_app/orientation.py, the intended-use check and the DICOM tags
VIEW_AND_AGE = (
    N_("image appears rotated or flipped"),
    N_("lateral view: screen a frontal (front-to-back) chest X-ray"),
    N_("looks like an adult chest X-ray: this screen is made for children aged 1 to 5"),
    N_("not a chest X-ray (another body part)"),
    N_("does not look like a chest X-ray"),
    N_("not a chest X-ray (body part: {part})"),
    N_("patient aged {age} years: this screen is made for children aged 1 to 5"),
    N_("patient aged {age} months: this screen is made for children aged 1 to 5"),
    N_("patient aged {age} weeks: this screen is made for children aged 1 to 5"),
    N_("patient aged {age} days: this screen is made for children aged 1 to 5"),
    N_("CT image, not a radiograph: screen a chest X-ray"),
    N_("{modality} image, not a radiograph: screen a chest X-ray"),
)

# edge_app/preprocess.py, largeimage.py, dicom.py, screen.py: files that cannot be read
UNREADABLE = (
    N_("no such file"),
    N_("permission denied"),
    N_("cannot read file ({detail})"),
    N_("is a folder, not an image"),
    N_("not a regular file (a pipe, device or socket)"),
    N_("empty file"),
    N_("file too large ({size} MB)"),
    N_("image too large (over {limit} pixels)"),
    N_("not an image file (unknown or corrupt format)"),
    N_("not enough memory to decode this image on this device"),
    N_("corrupt or truncated image ({detail})"),
    N_("image too small ({width}x{height} pixels, need at least {side} on each side)"),
    N_("image too large to decode on this device ({detail})"),
    N_("unsupported image mode {mode}"),
    N_("DICOM file unreadable ({detail})"),
    N_("DICOM input needs pydicom (pip install pydicom)"),
    N_("not a readable DICOM file ({detail})"),
    N_("DICOM file holds no image"),
    N_("DICOM image size unreadable"),
    N_("DICOM file gives no image size"),
    N_("unsupported DICOM image shape {shape}"),
    N_("DICOM pixel data is shorter than the image size it gives (truncated file)"),
    N_("DICOM image too large to decode on this device ({detail})"),
    N_("DICOM compressed as {name}: no decoder installed for it"),
    N_("DICOM pixel data unreadable ({detail})"),
    N_("folder holds no images"),
    N_("upload could not be saved on this device ({detail})"),
    N_("expected a 2-D grayscale array, got shape {shape}"),
)

NOTES = (
    N_("first of {n} pages screened"),
    N_("first of {n} frames screened"),
)

ALL = ADVICE + ANSWERS + GATE + VIEW_AND_AGE + UNREADABLE + NOTES

# edge_app/web_access.py and the page's refusals
WEB = (
    N_("refused: a request from another web site"),
    N_("this server answers only on this device; to serve the network start it with --host (an access code is then needed)"),
    N_("too many wrong access codes: wait {seconds} seconds"),
    N_("access code needed: enter the code shown on the device (programs: send it in the {header} header)"),
    N_("wrong access code"),
    N_("visit number: at most {n} letters, digits, spaces or . / # -, starting with a letter or digit"),
)

ALL = ALL + WEB

# edge_app/batch.py: the lines at the end of a batch (`classify --lang`). The summary's counts are
# numbers; its two msgids differ by the errors' plural (one pattern each, so that no short pattern
# such as "{n} errors" matches other texts). The list of skipped files stays in English.
BATCH = (
    N_("summary: {screened} screened ({today} refer today, {refer} refer, {none} no pneumonia found), {refused} refused, 1 error"),
    N_("summary: {screened} screened ({today} refer today, {refer} refer, {none} no pneumonia found), {refused} refused, {errors} errors"),
    N_("resumed: {n} inputs already in {output} not screened again"),
    N_("heatmaps: {n} not written (the results stand)"),
)

ALL = ALL + BATCH
