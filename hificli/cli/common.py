"""Helpers shared by the command modules: settings, stderr console, error lines."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import click


@dataclass
class Settings:
    """Global options of the ``hific`` group."""

    verbose: int = 0
    quiet: bool = False


def settings() -> Settings:
    """The current command's global settings (defaults outside a click context)."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, Settings) else Settings()


def stderr_console():
    """A rich console on stderr (imported lazily: rich costs ~50 ms)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_error(message: str, hint: str | None = None) -> None:
    """One line ``error: message`` on stderr, plus ``hint: ...`` when there is one."""
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    sys.stderr.flush()


def print_file_error(path: str, message: str, hint: str | None = None) -> None:
    """An error about one file of a batch; the batch goes on."""
    print_error(f"{path}: {message}", hint)


def not_built(name: str, issue: str) -> None:
    """Exit non-zero for a command that exists in the interface but is not implemented yet."""
    from hificli.errors import HificError

    raise HificError(f"'hific {name}' is not available in this version yet", f"tracked as {issue}")


def verbosity_options(func):
    """Accept -v/--quiet after the subcommand too (``hific encode --quiet ...``), updating the global
    settings. Quiet has no short form: ``-q`` is ``encode``'s quality, as in cwebp and avifenc."""

    def set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> int:
        if value:
            settings().verbose += value
            settings().quiet = False
        return value

    def set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value and not settings().verbose:
            settings().quiet = True
        return value

    func = click.option(
        "-v", "--verbose", "_verbose", count=True, expose_value=False, callback=set_verbose,
        help="More output (also accepted before the command).",
    )(func)
    return click.option(
        "--quiet", "_quiet", is_flag=True, expose_value=False, callback=set_quiet,
        help="Print only errors (also accepted before the command).",
    )(func)


@contextlib.contextmanager
def status_line(text: str, enabled: bool) -> Iterator[None]:
    """Show ``text`` on stderr while the block runs (a terminal's status line), then erase it."""
    if not enabled:
        yield
        return
    sys.stderr.write(text)
    sys.stderr.flush()
    try:
        yield
    finally:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
