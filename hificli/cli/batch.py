"""Running one job per input file: progress bar, per-file errors that do not stop the batch, summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hificli.cli.common import print_file_error, settings, stderr_console
from hificli.errors import EXIT_ERROR, HificError


@dataclass
class JobResult:
    """What one file's job reports for the summary table."""

    source: str
    target: str
    in_bytes: int
    out_bytes: int
    width: int
    height: int
    seconds: float = 0.0


def run_batch(
    inputs: Sequence[str], job: Callable[[str], JobResult], *, verb: str, hfc_is_output: bool
) -> int:
    """Run ``job`` on every input in order; return the exit code (0, or the first failure's code)."""
    opts = settings()
    show_progress = len(inputs) > 1 and not opts.quiet and sys.stderr.isatty()
    results: list[JobResult] = []
    exit_code = 0
    progress = None
    if show_progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn(f"{verb} [bold]{{task.fields[name]}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=stderr_console(),
            transient=True,
        )
        progress.start()
        task = progress.add_task(verb, total=len(inputs), name="")
    try:
        for path in inputs:
            if progress is not None:
                progress.update(task, name=path)
            start = time.perf_counter()
            try:
                result = job(path)
                result.seconds = time.perf_counter() - start
                results.append(result)
            except HificError as exc:
                print_file_error(path, exc.message, exc.hint)
                exit_code = exit_code or exc.exit_code
            except OSError as exc:
                print_file_error(path, exc.strerror or str(exc))
                exit_code = exit_code or EXIT_ERROR
            if progress is not None:
                progress.advance(task)
    finally:
        if progress is not None:
            progress.stop()
    if results and not opts.quiet:
        print_summary(results, hfc_is_output=hfc_is_output)
    failed = len(inputs) - len(results)
    if failed and len(inputs) > 1:
        print_file_error("summary", f"{failed} of {len(inputs)} files failed")
    return exit_code


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_summary(results: Sequence[JobResult], *, hfc_is_output: bool) -> None:
    """A table on stderr: file, size in, size out, bpp (from the real .hfc size), ratio, time."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("input", "output", "pixels", "in", "out", "bpp", "ratio", "time"):
        table.add_column(column, justify="left" if column in ("input", "output") else "right")
    for r in results:
        hfc = r.out_bytes if hfc_is_output else r.in_bytes
        bpp = 8.0 * hfc / (r.width * r.height)
        ratio = r.in_bytes / r.out_bytes if r.out_bytes else float("inf")
        table.add_row(
            r.source, r.target, f"{r.width}x{r.height}", _size(r.in_bytes), _size(r.out_bytes),
            f"{bpp:.3f}", f"{ratio:.1f}x", f"{r.seconds:.2f}s",
        )
    stderr_console().print(table)
