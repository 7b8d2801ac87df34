"""--device, --half and --threads, shared by encode, decode and eval (validated without torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from hificli.device import parse_device


class DeviceType(click.ParamType):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, normalised; a usage error otherwise."""

    name = "DEVICE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return parse_device(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def device_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --device, --half and --threads."""
    func = click.option(
        "--threads", type=click.IntRange(min=1), default=None, metavar="N",
        help="CPU compute threads per process [default: $OMP_NUM_THREADS or the cores, divided among "
        "-j workers].",
    )(func)
    func = click.option(
        "--half", is_flag=True,
        help="Run the generator in bfloat16 (float16 on GPUs without bf16): faster where the hardware "
        "supports it; decoded latents and files are unchanged, pixels change by rounding.",
    )(func)
    return click.option(
        "--device", type=DeviceType(), default="auto", show_default=True, metavar="DEVICE",
        help="Where the networks run: auto (CUDA if available, else CPU), cpu, cuda or cuda:N. Entropy "
        "coding stays on the CPU, so files decode the same on any device.",
    )(func)
