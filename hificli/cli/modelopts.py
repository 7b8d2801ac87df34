"""Model-selection options shared by encode, decode and eval."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --offline and --cache-dir (the -m option differs per command)."""
    func = click.option(
        "--offline", is_flag=True, default=None, help="Never download models (also HIFIC_OFFLINE=1)."
    )(func)
    func = click.option(
        "--cache-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Model cache directory (default: HIFIC_CACHE_DIR or the user cache dir).",
    )(func)
    return func
