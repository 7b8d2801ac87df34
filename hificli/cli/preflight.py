"""Output names, and the checks of inputs and outputs that run before torch or any model is loaded.

Everything here is cheap (``os.stat``, no file contents, no torch): a usage problem is reported at
once as a :class:`~hificli.errors.UsageError` (exit 2). Naming:

- encode: ``photo.png -> photo.hfc`` next to the input; ``-o DIR``: ``DIR/photo.hfc``.
- decode: ``photo.hfc -> photo.decoded.png`` next to the input, so that the first decode never meets the
  original ``photo.png``; ``-o DIR``: ``DIR/photo.png``.
- ``-o FILE`` names the output of a single input; ``-`` is stdin / stdout.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hificli.errors import UsageError

STDIO = "-"
HFC_SUFFIX = ".hfc"
DECODED_SUFFIX = ".decoded.png"  #: decode's name next to the input (never the original's name)


# ---------------------------------------------------------------------------------------------- names


def encoded_name(source: str) -> str:
    """``photo.png -> photo.hfc`` (``stdin.hfc`` for ``-``)."""
    return "stdin.hfc" if source == STDIO else str(Path(source).with_suffix(HFC_SUFFIX))


def decoded_name(source: str) -> str:
    """``photo.hfc -> photo.decoded.png``, next to the input."""
    return "stdin.png" if source == STDIO else str(Path(source).with_suffix(DECODED_SUFFIX))


def image_name(source: str) -> str:
    """``photo.hfc -> photo.png`` (inside an ``-o`` directory, and encode's --reconstruct)."""
    return "stdin.png" if source == STDIO else str(Path(source).with_suffix(".png"))


# ---------------------------------------------------------------------------------------------- inputs


def _stat_problem(path: str) -> str | None:
    """Why ``path`` cannot be read as an input file, or None."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "no such file"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISDIR(info.st_mode):
        return "is a directory"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def check_inputs(inputs: Sequence[str]) -> None:
    """Every input exists, is not a directory and is readable; ``-`` (stdin) at most once."""
    if list(inputs).count(STDIO) > 1:
        raise UsageError("- (stdin) can be given only once")
    problems = [(p, why) for p in inputs if p != STDIO and (why := _stat_problem(p))]
    if problems:
        path, why = problems[0]
        hint = "pass image files, e.g. DIR/*.png" if why == "is a directory" else None
        if len(problems) > 1:
            more = ", ".join(f"{p} ({w})" for p, w in problems[1:4]) + (", ..." if len(problems) > 4 else "")
            hint = f"{len(problems) - 1} more: {more}"
        raise UsageError(f"{path}: {why}", hint)
    seen: dict[tuple[int, int], str] = {}
    for path in inputs:
        key = _identity(path)
        if key is not None and key in seen:
            raise UsageError(f"{path} is the same file as {seen[key]}: each input can be given once")
        if key is not None:
            seen[key] = path


# ---------------------------------------------------------------------------------------------- outputs


def plan(
    inputs: Sequence[str], output: str | None, *, option: str, default: Callable[[str], str],
    in_dir: Callable[[str], str],
) -> dict[str, str]:
    """Each input's output path for ``option`` (``-o`` or ``--reconstruct``).

    None: ``default(input)`` (stdin goes to stdout). ``-``: stdout (single input). An existing directory,
    a name ending in ``/``, or any value with several inputs: ``DIR/`` + the name of ``in_dir(input)``,
    and DIR must exist. Otherwise the single input's output file.
    """
    many = len(inputs) > 1
    if output is None:
        return {p: STDIO if p == STDIO else default(p) for p in inputs}
    if output == STDIO:
        if many:
            raise UsageError(f"{option} - (stdout) takes a single input")
        return {p: STDIO for p in inputs}
    if many or os.path.isdir(output) or output.endswith(("/", os.sep)):
        _check_directory(output, option, many)
        return {p: os.path.join(output, Path(in_dir(p)).name) for p in inputs}
    return {inputs[0]: output}


def _check_directory(path: str, option: str, many: bool) -> None:
    if os.path.isdir(path):
        return
    if os.path.exists(path) or (many and Path(path).suffix and not path.endswith(("/", os.sep))):
        raise UsageError(
            f"{option} {path}: several inputs need a directory, not a file name",
            f"give one input per file name, or {option} DIR (an existing directory) for all of them",
        )
    raise UsageError(f"{path}: directory does not exist", f"create it first: mkdir -p {path}")


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of an existing file, following links; None otherwise."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _key(path: str) -> tuple[object, ...]:
    """What makes two output names the same file: the inode when it exists, else the resolved path."""
    identity = _identity(path)
    return ("inode", *identity) if identity else ("path", os.path.realpath(path))


def check_outputs(inputs: Sequence[str], *plans: dict[str, str]) -> None:
    """No output is an input (by inode, so links count; refused even with -f), no two outputs share a
    name, at most one goes to stdout, and every output's directory exists and is writable."""
    sources = {key: p for p in inputs if p != STDIO and (key := _identity(p)) is not None}
    seen: dict[tuple[object, ...], tuple[str, str]] = {}
    stdout_users = 0
    for mapping in plans:
        for source, target in mapping.items():
            if target == STDIO:
                stdout_users += 1
                if stdout_users > 1:
                    raise UsageError("only one output can go to stdout (-)")
                continue
            identity = _identity(target)
            if identity is not None and identity in sources:
                raise UsageError(
                    f"refusing to write {target}: it is the input {sources[identity]}",
                    "choose another output name with -o (-f never overwrites an input)",
                )
            key = _key(target)
            if key in seen:
                first, _ = seen[key]
                raise UsageError(
                    f"{first} and {source} would both be written to {target}",
                    "encode them in separate commands or with different -o names",
                )
            seen[key] = (source, target)
            _check_parent(target)


def _check_parent(target: str) -> None:
    parent = os.path.dirname(target) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"{parent}: directory does not exist", f"create it first: mkdir -p {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{parent}: permission denied (cannot create files there)")


def check_image_names(targets: Iterable[str], option: str) -> None:
    """Image outputs need an extension hific can write (the format follows it)."""
    from hificli.imageio import OUTPUT_FORMATS

    for target in targets:
        if target == STDIO:
            continue
        suffix = Path(target).suffix.lower()
        if suffix not in OUTPUT_FORMATS:
            raise UsageError(
                f"{option} {target}: cannot write images with extension {suffix or '(none)'!r}",
                f"use one of {', '.join(sorted(OUTPUT_FORMATS))}",
            )


def hfc_name_warnings(targets: Iterable[str]) -> list[str]:
    """Warnings for .hfc data written under a name that does not end in .hfc (e.g. ``-o out/a.png``)."""
    return [
        f"{t}: writing .hfc data under a name that does not end in .hfc"
        for t in targets
        if t != STDIO and not t.lower().endswith(HFC_SUFFIX)
    ]


def existing(targets: Iterable[str]) -> list[str]:
    """The outputs that already exist (stdout never does)."""
    return [t for t in targets if t != STDIO and os.path.lexists(t)]


def check_stdout(targets: dict[str, str], what: str, as_json: bool) -> None:
    """Binary ``what`` (e.g. "a .hfc file") never goes to a terminal, and --json needs stdout to itself."""
    if STDIO not in targets.values():
        return
    if as_json:
        raise UsageError("--json prints to stdout, which -o - already uses", "write the output to a file with -o")
    if sys.stdout.isatty():
        raise UsageError(f"refusing to write {what} to a terminal", "use -o FILE or redirect stdout")


def check_memory(max_memory: int, workers: int) -> None:
    """--max-memory must leave every worker process hific's runtime plus the smallest tile work."""
    from hificli.tiling import MIN_WORK_BYTES, RUNTIME_BYTES, memory_size

    need = RUNTIME_BYTES + MIN_WORK_BYTES
    each = max_memory // max(1, workers)
    if each >= need:
        return
    if workers > 1:
        raise UsageError(
            f"--max-memory {memory_size(max_memory)} shared by {workers} workers leaves {memory_size(each)} "
            f"each; each needs at least {memory_size(need)}",
            f"raise it to --max-memory {-(-need * workers // 2**20)}M or use fewer -j workers",
        )
    raise UsageError(
        f"--max-memory {memory_size(max_memory)} is below the {memory_size(need)} hific needs at least "
        f"(about {memory_size(RUNTIME_BYTES)} for the runtime alone)",
        "the default is 3G; large images are tiled to fit the limit",
    )


@dataclass
class ExistingOutputs:
    """The job of a run whose every output already exists (no -f): each file fails at once with the
    usual 'exists' error (exit 5), without loading any model."""

    targets: dict[str, str]
    extra: dict[str, str] = field(default_factory=dict)

    def __call__(self, path: str) -> Any:
        from hificli import fileio

        for target in (self.targets[path], self.extra.get(path)):
            if target:
                fileio.check_writable(target, False)
        raise AssertionError(f"{path}: no output exists")  # all_exist() said otherwise


def all_exist(inputs: Sequence[str], *plans: dict[str, str]) -> bool:
    """True when every input has at least one output that already exists."""
    return all(existing(mapping[p] for mapping in plans if p in mapping) for p in inputs)


def check_model(name: str | None, cache_dir: str | None, offline: bool | None) -> None:
    """A -m value that cannot load fails now, before torch (exit 4 with the known names or how to
    import it): no registered name, installed model or existing path, or a registered model that is not
    installed while hific is offline. Other registered models are fetched when they load."""
    from hificli.zoo import registry

    if name is None:
        return
    entry = registry.find(name)
    if entry is not None and not registry.is_offline(offline):
        return
    from hificli.zoo.resolve import resolve_model

    resolve_model(name, offline=True if entry is None else offline, cache_dir=cache_dir, progress=False)


#: An image whose pixels alone need this many times --max-memory is refused before any model loads.
HOPELESS_FACTOR = 4


def image_pixels(path: str) -> int:
    """An image file's pixel count from its header (Pillow, no torch); 0 if it cannot tell."""
    from hificli.errors import HificError
    from hificli.imageio import header_size

    try:
        width, height = header_size(path)
    except (HificError, OSError):
        return 0
    return width * height


def hfc_pixels(path: str) -> int:
    """A .hfc file's image size in pixels from its header; 0 if it cannot tell."""
    from hificli import container
    from hificli.errors import HificError

    try:
        header = container.read_file(path).header
    except (HificError, OSError):
        return 0
    return header.width * header.height


def check_image_header(inputs: Sequence[str], max_memory: int) -> None:
    """One image file: read its header (Pillow only, no torch) and refuse a size the format or
    ``--max-memory`` cannot take before any model loads (a decompression bomb fails at once). With
    several inputs each file is judged in its own job, so one bad file does not stop the others."""
    import os

    if len(inputs) != 1 or inputs[0] == "-" or not os.path.isfile(inputs[0]):
        return
    from hificli.errors import BadImageError
    from hificli.imageio import READ_BYTES_PER_PIXEL, header_size
    from hificli.tiling import memory_size

    try:
        width, height = header_size(inputs[0])
    except (BadImageError, OSError):
        return  # not an image, empty, unreadable: the encode job says so in its usual words
    need = READ_BYTES_PER_PIXEL * width * height  # a lower bound: the model comes on top
    if need > HOPELESS_FACTOR * max_memory:  # nearer the limit, the job's model-aware check says what will do
        raise BadImageError(
            f"{inputs[0]}: reading a {width}x{height} image needs more than {memory_size(need)}, far above the "
            f"memory limit of {memory_size(max_memory)}",
            f"raise the limit with --max-memory (reading alone needs {-(-need // 1024**3)}G; the model comes on top)",
        )
