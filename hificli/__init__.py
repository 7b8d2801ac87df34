"""hific: High-Fidelity Generative Image Compression as a command-line codec.

Python API (imports torch lazily, on first use)::

    import hificli
    model = hificli.load_model()             # the built-in default; or a name from `hific models`, a path
    data = hificli.encode(image, model)      # PIL.Image -> bytes of a .hfc file
    image = hificli.decode(data, model)      # bytes -> PIL.Image
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "encode", "decode"]


def __getattr__(name: str) -> Any:
    if name in ("load_model", "encode", "decode"):
        from hificli import api

        return getattr(api, name)
    raise AttributeError(f"module 'hificli' has no attribute {name!r}")
