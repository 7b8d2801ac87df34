"""Safe file handling for the CLI: stdin/stdout as ``-``, output naming, no silent overwrite, atomic
writes (temporary file + rename, so an interrupted run never leaves a partial output)."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from hificli.errors import HificError, InputTooLargeError, InvalidInputError, OutputExistsError, UnsafeOutputError

STDIO = "-"
MAX_INPUT_BYTES = 1 << 31  #: no input is read beyond this (the .hfc format's MAX_FILE_BYTES too)
HEAD_BYTES = 0xFFFF + 5  #: what read_input's ``size_of`` sees: a .hfc header and its ICC length varint
_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_input(
    path: str, *, max_bytes: int = MAX_INPUT_BYTES, size_of: Callable[[bytes], int | None] | None = None
) -> bytes:
    """Read a whole input file, or stdin for ``-``, never more than ``max_bytes``.

    A regular file is refused by its size before anything is read; stdin, pipes and devices are read in
    chunks and refused as soon as they pass the limit (``hific encode /dev/zero`` stops at once).
    ``size_of(head)``, given the first ``HEAD_BYTES`` of a longer stream, may raise for input that cannot
    be right, or return how many bytes the input declares (one more is read, so that trailing data is
    seen), or None to read on to the end.
    """
    try:
        if path == STDIO:
            return read_bounded(sys.stdin.buffer, max_bytes, size_of=size_of)
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISREG(info.st_mode):
                _check_size(info.st_size, max_bytes)
                return handle.read(info.st_size + 1)
            return read_bounded(handle, max_bytes, size_of=size_of)
    except FileNotFoundError:
        raise InvalidInputError("no such file") from None
    except IsADirectoryError:
        raise InvalidInputError("is a directory") from None
    except PermissionError:
        raise InvalidInputError("permission denied") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read: {exc.strerror or exc}") from None


def read_bounded(
    stream: BinaryIO, max_bytes: int, *, size_of: Callable[[bytes], int | None] | None = None
) -> bytes:
    """Read ``stream`` to its end in chunks, refusing it as soon as it passes ``max_bytes``;
    ``size_of``: see :func:`read_input`."""
    data = bytearray()
    if size_of is not None:
        if _read_upto(stream, data, min(HEAD_BYTES, max_bytes + 1)):
            return bytes(data)
        declared = size_of(bytes(data)) if len(data) == HEAD_BYTES else None
        if declared is not None:
            _check_size(declared, max_bytes, f"input declares {declared} bytes")
            _read_upto(stream, data, declared + 1)  # one more: trailing data is for the parser to report
            return bytes(data)
    _read_upto(stream, data, max_bytes + 1)
    _check_size(len(data), max_bytes, f"input has more than {max_bytes} bytes")
    return bytes(data)


def _read_upto(stream: BinaryIO, data: bytearray, total: int) -> bool:
    """Append to ``data`` from ``stream`` until it holds ``total`` bytes; True if the stream ended first."""
    while len(data) < total:
        chunk = stream.read(min(_CHUNK, total - len(data)))
        if not chunk:
            return True
        data += chunk
    return False


def _check_size(size: int, max_bytes: int, what: str | None = None) -> None:
    if size > max_bytes:
        hint = None if max_bytes >= MAX_INPUT_BYTES else "an input may use a quarter of --max-memory; raise it"
        raise InputTooLargeError(f"{what or f'input has {size} bytes'}, over the limit of {max_bytes} bytes", hint)


def input_limit(max_memory: int) -> int:
    """Most bytes of one input that encode and decode read under ``--max-memory``: a quarter of it (an
    input is held a few times over while it is parsed), never more than MAX_INPUT_BYTES."""
    return max(1, min(MAX_INPUT_BYTES, max_memory // 4))


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
    """Refuse early (before any work) when the output exists and ``--force`` was not given, and, even
    with it, when the output is not a regular file (see :func:`check_replaceable`)."""
    if path == STDIO:
        return
    if not force and os.path.lexists(path):
        raise OutputExistsError(f"{path} exists", "use -f/--force to overwrite, or -o to choose another name")
    check_replaceable(path)


def check_replaceable(path: str | Path) -> None:
    """Refuse, even with ``--force``, to replace anything but a regular file (or a link to one): a
    device such as /dev/null, a FIFO, a socket, a directory, or a link to any of them
    (``/proc/self/fd/1``). As root, ``-o /dev/null -f`` would otherwise replace /dev/null."""
    try:
        mode = os.stat(path).st_mode  # follows links: a link is judged by what it points to
    except FileNotFoundError:
        return  # nothing there, or a dangling link (replacing the link itself is harmless)
    except OSError as exc:
        raise UnsafeOutputError(f"{path}: cannot check the output ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        link = " (through a link)" if os.path.islink(path) else ""
        raise UnsafeOutputError(
            f"{path} is {_kind(mode)}{link}, not a regular file: hific never replaces it, even with -f",
            "write to a regular file, or to stdout with -o -",
        )


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


@contextlib.contextmanager
def atomic_target(target: str | Path, *, overwrite: bool = True) -> Iterator[str]:
    """Yield a temporary path next to ``target``; on success move it into place, else delete it.

    With ``overwrite=False`` the final step is a hard link, which fails if the name appeared
    meanwhile: an existing file is never replaced, even by a race. Only regular files are replaced
    (:func:`check_replaceable`). The temporary name ``.NAME.PID.XXXXXXXX.part`` says which process
    wrote it: those of killed runs are deleted by the next write of NAME (:func:`clean_stale_parts`).
    """
    target = Path(target)
    if not target.parent.is_dir():
        raise HificError(f"{target.parent}: directory does not exist")
    check_replaceable(target)
    clean_stale_parts(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".part")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        if overwrite:
            check_replaceable(target)  # again: it may have changed while we worked
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


#: A temporary output of a live process is renamed within seconds; one whose process is gone (and at
#: least PART_MIN_AGE old), or any older than PART_MAX_AGE, was left by a killed run.
PART_MIN_AGE = 2.0
PART_MAX_AGE = 3600.0
_scanned: dict[str, list[str]] = {}  # per directory: the hidden ``*.part`` files seen when first written to


def clean_stale_parts(target: Path) -> list[str]:
    """Delete the temporary files ``.NAME[.PID].XXXXXXXX.part`` of ``target`` left by killed runs (a
    SIGKILL gives no chance to clean up): ours only (same owner), regular files only, and only when
    their process is gone or they are over PART_MAX_AGE old. Each directory is listed once per process.
    Returns the names deleted."""
    directory = os.path.abspath(target.parent)
    if directory not in _scanned:
        _scanned[directory] = _part_files(directory)
    pattern = re.compile(re.escape(f".{target.name}.") + r"(?:(\d+)\.)?[a-z0-9_]{8}\.part")
    removed = []
    for entry in _scanned[directory]:
        match = pattern.fullmatch(entry)
        if match is None:
            continue
        path = os.path.join(directory, entry)
        with contextlib.suppress(OSError):
            info = os.lstat(path)
            age = time.time() - info.st_mtime
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                continue
            pid = int(match[1]) if match[1] else None
            if age > PART_MAX_AGE or (pid is not None and age > PART_MIN_AGE and not process_alive(pid)):
                os.unlink(path)
                removed.append(entry)
    _scanned[directory] = [e for e in _scanned[directory] if e not in removed]
    return removed


def _part_files(directory: str) -> list[str]:
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        return [e.name for e in entries if e.name.startswith(".") and e.name.endswith(".part")]
    return []


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (an unknown answer counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def write_output(path: str, data: bytes, force: bool) -> None:
    """Write ``data`` to ``path`` atomically (never replacing a file without ``force``, nor anything but
    a regular file), or to stdout. A command never writes one name twice (two inputs ``a/x.png`` and
    ``b/x.png`` under ``-o DIR``): the second write is refused, even with ``force``."""
    if path == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    _claim(path)
    with atomic_target(path, overwrite=force) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def _claim(path: str) -> None:
    """Remember the outputs of the running click command; refuse one it has written already."""
    try:
        import click
    except ImportError:
        return
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return
    written = ctx.find_root().meta.setdefault("hific.fileio.written", set())
    key = os.path.realpath(path)
    if key in written:
        raise OutputExistsError(
            f"{path} was already written by this command (two inputs with the same output name)",
            "give the inputs distinct names, or encode them in separate commands",
        )
    written.add(key)
