"""`hific info` (placeholder until its issue lands)."""

from __future__ import annotations

import click

from hificli.cli.common import not_built


@click.command("info", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> None:
    """Not built yet."""
    not_built("info", "an open issue")
