"""Pretrained models: the registry (names, sources), the on-disk cache, downloads and name resolution.

Nothing here imports torch at import time; only converting a downloaded or imported checkpoint does.
"""

from __future__ import annotations

from typing import Any

from hificli.zoo.cache import cache_root
from hificli.zoo.registry import DEFAULT_MODEL, MODELS, ModelEntry

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelEntry", "cache_root", "resolve_model", "pull", "import_model"]


def __getattr__(name: str) -> Any:
    if name == "resolve_model":
        from hificli.zoo.resolve import resolve_model

        return resolve_model
    if name in ("pull", "import_model"):
        from hificli.zoo import download

        return getattr(download, name)
    raise AttributeError(f"module 'hificli.zoo' has no attribute {name!r}")
