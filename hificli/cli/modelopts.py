"""Model-selection options shared by encode, decode and eval, and a per-process model cache."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from hificli.cli.common import settings


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


class ModelCache:
    """Loads each model at most once per process."""

    def __init__(self, offline: bool | None, cache_dir: str | None) -> None:
        self.offline = offline
        self.cache_dir = cache_dir
        self._models: dict[str, Any] = {}

    def get(self, name: str | None) -> Any:
        from hificli.api import load_model
        from hificli.zoo.registry import DEFAULT_MODEL

        key = name or DEFAULT_MODEL
        if key not in self._models:
            quiet = settings().quiet or not os.isatty(2)
            self._models[key] = load_model(
                key, offline=self.offline, cache_dir=self.cache_dir, progress=not quiet
            )
        return self._models[key]
