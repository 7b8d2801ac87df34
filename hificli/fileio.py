"""Safe file handling for the CLI: stdin/stdout as ``-``, output naming, no silent overwrite, atomic
writes (temporary file + rename, so an interrupted run never leaves a partial output)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

from hificli.errors import HificError, InvalidInputError, OutputExistsError

STDIO = "-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_input(path: str) -> bytes:
    """Read a whole input file, or stdin for ``-``."""
    if path == STDIO:
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidInputError("no such file") from None
    except IsADirectoryError:
        raise InvalidInputError("is a directory") from None
    except PermissionError:
        raise InvalidInputError("permission denied") from None


def output_path(input_path: str, suffix: str, output: str | None, many: bool) -> str:
    """Where the result for ``input_path`` goes.

    No ``-o``: next to the input with the extension replaced (``photo.png -> photo.hfc``); stdin input
    then goes to stdout. ``-o DIR`` (an existing directory, or any ``-o`` with several inputs): inside
    DIR with the default name. Otherwise ``-o`` is the file itself (or ``-`` for stdout).
    """
    if output is None:
        return STDIO if input_path == STDIO else str(Path(input_path).with_suffix(suffix))
    if output == STDIO:
        return STDIO
    out = Path(output)
    if many or out.is_dir() or output.endswith(os.sep):
        name = "stdin" + suffix if input_path == STDIO else Path(input_path).with_suffix(suffix).name
        return str(out / name)
    return output


def check_writable(path: str, force: bool) -> None:
    """Refuse early (before any work) when the output exists and ``--force`` was not given."""
    if path != STDIO and not force and os.path.lexists(path):
        raise OutputExistsError(f"{path} exists", "use -f/--force to overwrite, or -o to choose another name")


def write_output(path: str, data: bytes, force: bool) -> None:
    """Write ``data`` to ``path`` atomically, or to stdout for ``-``.

    Without ``force`` the final step is a hard link, which fails if the name appeared meanwhile: an
    existing file is never replaced, even by a race.
    """
    if path == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise HificError(f"{target.parent}: directory does not exist")
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise OutputExistsError(f"{path} exists", "use -f/--force to overwrite") from None
            except OSError:  # file systems without hard links
                if os.path.lexists(target):
                    raise OutputExistsError(f"{path} exists", "use -f/--force to overwrite") from None
                os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
