"""``hific encode`` rate options: -q/--quality, --bpp, --size (parsed without torch)."""

from __future__ import annotations

import re
from typing import Any

import click

from hificli.errors import UsageError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(|b|k|kb|kib|m|mb|mib)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 2**20}


def parse_size(text: str) -> int:
    """``20000``, ``20k`` / ``20kB`` (x1000), ``20KiB`` (x1024), ``1.5M`` / ``1.5MiB`` -> bytes (>= 1)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 20000, 20k, 1.5M, 64KiB)")
    value = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if value < 1:
        raise ValueError(f"size {text!r} is below 1 byte")
    return value


def _size_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def rate_options(func: Any) -> Any:
    """The three mutually exclusive rate options of ``hific encode``."""
    func = click.option(
        "--size", "target_size", metavar="BYTES", callback=_size_callback,
        help="Largest file not above this size (k/M = 1000/10^6, KiB/MiB = 1024/2^20), e.g. --size 20k.",
    )(func)
    func = click.option(
        "--bpp", "target_bpp", type=click.FloatRange(min=0, min_open=True), metavar="BPP",
        help="Largest file not above this many bits per pixel (whole file).",
    )(func)
    return click.option(
        "-q", "--quality", type=click.FloatRange(0, 100), metavar="Q",
        help="Quality 0-100, higher is better and larger (variable-rate models; default 50, about "
             "0.3 bpp on typical photos).",
    )(func)


def rate_request(quality: float | None, target_bpp: float | None, target_size: int | None) -> Any:
    """The RateRequest of the options, or a usage error when more than one is given."""
    from hificli.ratecontrol import RateRequest

    given = [name for name, v in (("-q/--quality", quality), ("--bpp", target_bpp), ("--size", target_size))
             if v is not None]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} cannot be combined", "give one of -q, --bpp, --size")
    return RateRequest(quality, target_bpp, target_size)


def check_model_takes(request: Any, model: Any, model_name: str | None) -> None:
    """Refuse a quality for a fixed-rate model, naming the variable-rate models to use instead."""
    from hificli.zoo.registry import variable_rate_names

    if request.quality is not None and not model.variable_rate:
        names = ", ".join(variable_rate_names())
        raise UsageError(
            f"model {model_name or model.model_id!r} is fixed-rate: -q/--quality needs a variable-rate model",
            f"use --bpp or --size with it, or -m {names}",
        )


def family_names(request: Any, model_name: str | None, cache_dir: str | None) -> list[str]:
    """Other installed members of a fixed-rate family that a --bpp/--size target may choose from."""
    from hificli.zoo import cache, registry

    entry = registry.find(model_name) if model_name else None
    if not request.has_target or entry is None or entry.family is None:
        return []
    root = cache.cache_root(cache_dir)
    return [m.name for m in registry.family(entry.family) if m.name != entry.name and cache.is_installed(root, m.name)]
