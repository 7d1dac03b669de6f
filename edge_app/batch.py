"""Batches: many inputs screened one by one, with what a person and a file keep of them.

The Screener (edge_xray.screen) screens one scan. A `Batch` owns the rest: finding the inputs of
files and folders (edge_xray.inputs), leaving out the inputs of a resumed result file, the count of
files skipped and why, the names of the heatmap files it writes, and the tally of answers. `run` is
`edge-xray classify`: it prints each row, writes it to the result file and the audit log (both through
output.append_synced), shows a progress line on a terminal and ends with one summary line.

The lines a person sees, all on stderr (stdout holds only rows):
- on a terminal, for more than PROGRESS_MIN_INPUTS inputs, a progress line rewritten in place:
  `screening 120 of 500, 4.1 per second, about 1 min 33 s left` (cleared before any row is printed,
  so that it never mixes into one);
- at the end of every batch, whatever stdout is: `summary: 10 screened (2 refer today, 1 refer,
  7 no pneumonia found), 3 refused, 1 error`, the counts from each row's `urgency` (edge_xray.decision).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .decision import URGENCY_NONE, URGENCY_REFER, URGENCY_TODAY
from .errors import UsageError
from .i18n import localize, translate
from .inputs import Skipped, find_inputs
from .output import NEW, OVERWRITE, RESUME, RowWriter, escape, human_line, json_line, terminal
from .screen import Screened

PROGRESS_MIN_INPUTS = 5  # batches of more inputs than this show a progress line on a terminal
PROGRESS_EVERY = 0.25  # seconds between two redraws of the progress line
EMPTY_FOLDER = "folder holds no images"


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


@dataclass
class Tally:
    """What a batch gave: the summary line's counts."""

    today: int = 0
    refer: int = 0
    none: int = 0
    refused: int = 0  # readable, but not a chest X-ray (status rejected)
    errors: int = 0  # unreadable (status error)
    heatmap_failures: int = 0

    def add(self, s) -> None:
        if s.status == "rejected":
            self.refused += 1
        elif not s.ok:
            self.errors += 1
        elif s.urgency == URGENCY_TODAY:
            self.today += 1
        elif s.urgency == URGENCY_REFER:
            self.refer += 1
        elif s.urgency == URGENCY_NONE:
            self.none += 1
        if s.heatmap_error:
            self.heatmap_failures += 1

    @property
    def screened(self) -> int:
        return self.today + self.refer + self.none

    @property
    def bad(self) -> int:
        """Inputs not screened: the batch's exit code is 3 when there are any."""
        return self.refused + self.errors

    def summary(self) -> str:
        return (f"summary: {self.screened} screened ({self.today} refer today, {self.refer} refer, "
                f"{self.none} no pneumonia found), {self.refused} refused, {_plural(self.errors, 'error')}")


class HeatmapFiles:
    """Overlay files of one batch: NAME.heatmap.jpg in OUT_DIR, NAME-2.heatmap.jpg for a second NAME."""

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self.written: set = set()

    def path_for(self, source) -> Path:
        from .heatmap import SUFFIX

        stem = Path(str(source)).stem
        dest, n = self.out_dir / (stem + SUFFIX), 1
        while dest in self.written:  # the same file name from another folder of this batch
            n += 1
            dest = self.out_dir / f"{stem}-{n}{SUFFIX}"
        return dest

    def write(self, image, source) -> Path:
        """Write IMAGE (the overlay of SOURCE); returns its path. Raises OSError."""
        from .heatmap import jpeg_bytes

        dest = self.path_for(source)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(jpeg_bytes(image))
        self.written.add(dest)
        return dest


class Batch:
    """The inputs of PATHS (files, folders, DICOMDIRs), screened one by one when iterated: Screened
    results, in order, with heatmap files written to HEATMAP_DIR (when given). DONE: the escaped paths
    already in a resumed result file; they are left out and counted in `resumed`. `skipped` counts
    the files of folders that are not inputs, and why; `tally` the answers so far."""

    def __init__(self, screener, paths: Iterable, *, heatmap_dir=None, done=None):
        self.screener = screener
        self.heatmaps = HeatmapFiles(heatmap_dir) if heatmap_dir is not None else None
        self.skipped = Skipped()
        self.resumed = 0
        self.tally = Tally()
        done = done or set()
        self.inputs: list[tuple[object, bool]] = []  # (path, True for a folder with no images)
        for p in [paths] if isinstance(paths, (str, Path)) else paths:
            files = find_inputs(p, self.skipped)
            for f, empty in [(p, True)] if not files else [(f, False) for f in files]:
                if escape(str(f)) in done:
                    self.resumed += 1
                else:
                    self.inputs.append((f, empty))

    def __len__(self) -> int:
        return len(self.inputs)

    def __iter__(self) -> Iterator[Screened]:
        for path, empty in self.inputs:
            r = Screened(self.screener.error_row(path, EMPTY_FOLDER)) if empty else \
                self.screener.assess(path, heatmap=self.heatmaps is not None)
            r = self._write_heatmap(r, path)
            self.tally.add(r.screening)
            yield r

    def _write_heatmap(self, r: Screened, path) -> Screened:
        if r.heatmap is None or self.heatmaps is None:
            return r
        try:
            s = dataclasses.replace(r.screening, heatmap=str(self.heatmaps.write(r.heatmap, path)))
        except OSError as e:
            s = dataclasses.replace(r.screening, heatmap_error=f"cannot write heatmap ({e.strerror or e})")
        return r._replace(screening=s)

    def end_lines(self, output=None) -> list[str]:
        """The lines at the end of the batch: what was skipped, resumed, not drawn, and the summary."""
        lines = [self.skipped.summary()]
        if self.resumed:
            lines.append(f"resumed: {self.resumed} inputs already in {terminal(output)} not screened again")
        if self.tally.heatmap_failures:
            lines.append(f"heatmaps: {self.tally.heatmap_failures} not written (the results stand)")
        return [line for line in lines if line] + [self.tally.summary()]


# the progress line -----------------------------------------------------------------------------------
def duration(seconds: float) -> str:
    """'8 s', '1 min 33 s', '2 h 05 min'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """The progress line of a batch of TOTAL inputs on STREAM (stderr), rewritten in place; `clear`
    before anything else is printed. Shown only when SHOWN."""

    def __init__(self, total: int, shown: bool, stream=None, clock=time.monotonic):
        self.total, self.shown, self.stream, self.clock = total, shown, stream, clock
        self.start = clock()
        self.done = 0
        self.drawn = ""
        self.last = None

    def line(self) -> str:
        text = f"screening {self.done} of {self.total}"
        elapsed = self.clock() - self.start
        if self.done and elapsed > 0:
            rate = self.done / elapsed
            text += f", {rate:.1f} per second, about {duration((self.total - self.done) / rate)} left"
        return text

    def _put(self, text: str):
        stream = self.stream or sys.stderr
        stream.write(text)
        stream.flush()

    def update(self, done: int, force: bool = False):
        self.done = done
        if not self.shown:
            return
        now = self.clock()
        if force or self.last is None or now - self.last >= PROGRESS_EVERY:
            self.last = now
            self.drawn = self.line()
            self._put("\r" + self.drawn + "\x1b[K")

    def clear(self):
        if self.shown and self.drawn:
            self._put("\r\x1b[K")
            self.drawn = ""


# `edge-xray classify` -----------------------------------------------------------------------------------
def _echo(text: str, err: bool = False):
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_targets(paths, output, audit_log, resume, overwrite):
    if resume and overwrite:
        raise UsageError("give --resume or --overwrite, not both")
    if (resume or overwrite) and not output:
        raise UsageError("--resume and --overwrite need --output")
    for given in (output, audit_log):
        for p in paths if given else ():
            if Path(p).is_file() and _same_file(p, given):
                raise UsageError(f"{terminal(p)} is an input and also the file to write: choose another")


def _row_lines(s, as_json: bool, lang: str | None = None) -> list[tuple[str, bool]]:
    """(line, to stderr) of one row: refusals on stderr, results (or every JSON row) on stdout; the
    human lines and the JSON row's advice in LANG."""
    lines = [] if s.ok else [(human_line(s, lang), True)]
    if as_json:
        lines.append((json_line(localize(s, lang)), False))
    elif s.ok:
        lines.append((human_line(s, lang), False))
    if s.heatmap_error:
        lines.append((f"{terminal(s.path)}: heatmap not written - {terminal(s.heatmap_error)}", True))
    return lines


def run(screener, paths, *, as_json: bool = False, output=None, resume: bool = False, overwrite: bool = False,
        heatmap_dir=None, audit_log=None, echo=_echo, progress: bool | None = None, lang: str | None = None) -> Tally:
    """Screen PATHS with SCREENER as `edge-xray classify` does: each row printed (ECHO(line, err=...)),
    written to OUTPUT (.csv or .jsonl; RESUME or OVERWRITE an existing one) and appended to AUDIT_LOG;
    heatmaps into HEATMAP_DIR. LANG: the advice of printed and written rows in that language (the audit
    log keeps the English row). PROGRESS: show the progress line (None: when stderr is a terminal).
    Returns the Tally; raises UsageError for bad targets and WriteError when a file cannot be written
    mid-batch (the rows written are kept). The end lines are printed however the batch ends."""
    from .audit import AuditLog

    _check_targets(paths, output, audit_log, resume, overwrite)
    audit = AuditLog(audit_log, screener.model) if audit_log else None  # first: creating it changes nothing
    writer = None
    try:
        writer = RowWriter(output, RESUME if resume else OVERWRITE if overwrite else NEW) if output else None
        batch = Batch(screener, paths, heatmap_dir=heatmap_dir, done=writer.done if (writer and resume) else None)
        shown = (_stderr_is_terminal() if progress is None else progress) and len(batch) > PROGRESS_MIN_INPUTS
        bar = Progress(len(batch), shown)
        bar.update(0, force=True)
        try:
            for n, r in enumerate(batch, 1):
                lines = _row_lines(r.screening, as_json, lang)
                if lines:
                    bar.clear()
                for line, err in lines:
                    echo(line, err=err)
                if writer:
                    writer.write(localize(r.screening, lang))
                if audit:
                    audit.write(r.screening)
                bar.update(n, force=bool(lines))
        finally:
            bar.clear()
            for line in batch.end_lines(output):
                echo(translate(line, lang), err=True)
        return batch.tally
    finally:
        if writer:
            writer.close()
        if audit:
            audit.close()
