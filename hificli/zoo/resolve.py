"""Turn what the user typed after ``-m`` into the weights file to load (no torch)."""

from __future__ import annotations

import os
from pathlib import Path

from hificli.errors import ModelUnavailableError, UnknownModelError
from hificli.zoo import cache, registry


def resolve_model(
    name_or_path: str | os.PathLike[str],
    *,
    offline: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    from_header: bool = False,
) -> Path:
    """The weights file for a model name or path.

    - the embedded default -> its file inside the package;
    - a registered name -> the cached weights, pulled on first use unless offline (``offline`` None reads
      ``HIFIC_OFFLINE``);
    - a name installed with ``hific models import`` -> its cached weights;
    - an existing file -> itself; a directory -> its ``weights.safetensors`` or newest ``*.safetensors``.
    ``from_header``: the name comes from a .hfc file, which may only name registry entries and installed
    models: it is never looked up as a path (a file must not make hific load ``./<its model id>``).
    Errors: UnknownModelError (lists the known names), ModelUnavailableError (with how to import).
    """
    text = os.fspath(name_or_path)
    entry = registry.find(text)
    root = cache.cache_root(cache_dir)
    if entry is not None:
        return _registered(entry, root, offline, cache_dir, progress)
    if _is_cache_name(text) and cache.is_installed(root, text):
        return cache.weights_path(root, text)
    if from_header:
        raise UnknownModelError(
            f"unknown model {text!r} (named by the file): neither a registered nor an installed model",
            f"install it with 'hific models import {text} FILE', or decode with -m PATH "
            "(a path is only taken from -m, never from a file)",
        )
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _weights_in_dir(path)
    installed = [n for n in cache.installed_names(root) if registry.find(n) is None]
    known = registry.names() + installed
    raise UnknownModelError(
        f"unknown model {text!r}: not a known name nor an existing file",
        f"known models: {', '.join(known)} (see 'hific models')",
    )


def _registered(
    entry: registry.ModelEntry,
    root: Path,
    offline: bool | None,
    cache_dir: str | os.PathLike[str] | None,
    progress: bool,
) -> Path:
    if entry.embedded:
        path = registry.embedded_path(entry)
        if path is None:
            raise ModelUnavailableError(
                f"the built-in model {entry.name} is not built yet in this version of hific",
                "pass another model with -m (see 'hific models')",
            )
        return path
    if cache.is_installed(root, entry.name):
        return cache.weights_path(root, entry.name)
    from hificli.zoo.download import import_hint, pull

    if registry.is_offline(offline):
        raise ModelUnavailableError(
            f"{entry.name} is not installed and hific is offline ({registry.offline_reason(offline)})",
            import_hint(entry),
        )
    return pull(entry.name, cache_dir=cache_dir, offline=False, progress=progress).weights


def _is_cache_name(text: str) -> bool:
    try:
        registry.check_name(text)
    except UnknownModelError:
        return False
    return True


def _weights_in_dir(folder: Path) -> Path:
    """A directory's ``weights.safetensors``, else its newest ``*.safetensors``."""
    preferred = folder / cache.WEIGHTS_NAME
    if preferred.is_file():
        return preferred
    candidates = [p for p in folder.glob("*.safetensors") if p.is_file()]
    if not candidates:
        raise ModelUnavailableError(f"{folder}: no weights.safetensors or other *.safetensors file in it")
    return max(candidates, key=lambda p: p.stat().st_mtime)
