"""Exceptions the user can act on, each mapped to one process exit code.

The CLI catches :class:`HificError` and prints ``error: <message>`` plus an optional hint; anything else
is a bug (exit 1). Keep this module free of heavy imports: ``hific info`` and ``hific --help`` load it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # general failure (I/O error, internal error)
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_INVALID_INPUT = 3  # corrupt/truncated .hfc, unreadable or unsupported image
EXIT_MODEL = 4  # unknown model, model not installed / not downloadable, weights mismatch
EXIT_EXISTS = 5  # output exists and --force was not given, or is not a regular file (even with -f)
EXIT_TARGET = 6  # --size / --bpp target below the smallest file the model can make
EXIT_INTERRUPTED = 130  # Ctrl-C


class HificError(Exception):
    """Base class: a failure with a one-line message, an optional hint and an exit code."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(HificError):
    """The command line cannot work as given (missing input, output equal to an input, bad option value);
    found before any model is loaded."""

    exit_code = EXIT_USAGE


class InvalidInputError(HificError):
    """Input the user gave us cannot be used (bad image, bad .hfc)."""

    exit_code = EXIT_INVALID_INPUT


class InputTooLargeError(InvalidInputError):
    """An input is larger than hific reads (refused before reading it, or as soon as it passes the limit)."""


class CorruptFileError(InvalidInputError):
    """A .hfc file is truncated, damaged, hostile or not a .hfc file at all."""


class UnsupportedVersionError(CorruptFileError):
    """A .hfc file made by a newer hific (unknown major version)."""


class BadImageError(InvalidInputError):
    """An input image cannot be read or converted."""


class ModelError(HificError):
    """Unknown model, model not available, or weights that do not match a file."""

    exit_code = EXIT_MODEL


class UnknownModelError(ModelError):
    """The name is neither a registered model nor an existing path."""


class ModelUnavailableError(ModelError):
    """A registered model is not installed and cannot be fetched (offline, network, checksum)."""


class ModelMismatchError(ModelError):
    """A checkpoint or weights file does not have the expected structure, or a .hfc file was made by
    other weights than the ones offered to decode it."""


class OutputExistsError(HificError):
    """Refused to overwrite an existing file without --force."""

    exit_code = EXIT_EXISTS


class UnsafeOutputError(OutputExistsError):
    """The output is a device, FIFO, socket, directory or a link to one: never replaced, even with
    --force (hific writes regular files, or stdout with ``-``)."""


class TargetUnreachableError(HificError):
    """A --size / --bpp target is smaller than the lowest quality's file."""

    exit_code = EXIT_TARGET
