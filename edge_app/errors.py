"""The project's errors: one base class whose `exit_code` the CLI turns into the process's exit code.

Every message is one line, written for the person at the device.
"""

from __future__ import annotations

EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_MODEL = 4


class EdgeXrayError(Exception):
    """Base of every error the project raises on purpose; `exit_code` is the CLI's exit code."""

    exit_code = EXIT_OTHER


class UsageError(EdgeXrayError):
    """A call that cannot be carried out as given (an output file that exists, a bad option value)."""

    exit_code = EXIT_USAGE


class InputError(EdgeXrayError):
    """An input that cannot be used: a data folder in the wrong layout, an empty calibration set."""

    exit_code = EXIT_INPUT


class ImageError(InputError):
    """One input that cannot be read as an image (screened as `status: error`)."""


class ModelError(EdgeXrayError):
    """A model, card or site file that is missing, unreadable, not ours, or does not match its card."""

    exit_code = EXIT_MODEL
