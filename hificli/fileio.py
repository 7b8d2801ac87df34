"""Safe file handling for the CLI: stdin/stdout as ``-``, output naming, no silent overwrite, atomic
writes (temporary file + rename, so an interrupted run never leaves a partial output)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def atomic_target(target: str | Path, *, overwrite: bool = True) -> Iterator[str]:
    """Yield a temporary path next to ``target``; on success move it into place, else delete it.

    With ``overwrite=False`` the final step is a hard link, which fails if the name appeared
    meanwhile: an existing file is never replaced, even by a race.
    """
    target = Path(target)
    if not target.parent.is_dir():
        raise HificError(f"{target.parent}: directory does not exist")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        if overwrite:
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise OutputExistsError(f"{target} exists", "use -f/--force to overwrite") from None
        except OSError:  # file systems without hard links
            if os.path.lexists(target):
                raise OutputExistsError(f"{target} exists", "use -f/--force to overwrite") from None
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_output(path: str, data: bytes, force: bool) -> None:
    """Write ``data`` to ``path`` atomically (never replacing a file without ``force``), or to stdout."""
    if path == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with atomic_target(path, overwrite=force) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
