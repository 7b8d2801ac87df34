"""What every benchmark prints beside its figures: the machine and how busy it was.

A figure is only comparable with another measured in the same run; a ratio between two runs (or with
a figure copied from elsewhere) mostly measures how loaded the machine was. So each measured row
carries the 1-minute load average at the time, and figures from earlier runs are shown in their own
column, never divided into today's.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

EARLIER = "figure measured earlier, on the same kind of machine"


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe() -> str:
    """One line: CPU count, processor, torch threads and the load now."""
    try:
        import torch

        threads = f", torch {torch.__version__} with {torch.get_num_threads()} threads"
    except ImportError:
        threads = ""
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    return (f"{cores()} CPUs ({platform.processor() or platform.machine()}){threads}, "
            f"OMP_WAIT_POLICY={policy}, load average (1 min) {load_average():.2f} at start")


def load_note(loads: list[float]) -> str:
    """``load 0.4`` or ``load 0.4-1.9``: the 1-minute load averages seen while a figure was measured."""
    lo, hi = f"{min(loads):.1f}", f"{max(loads):.1f}"
    return f"load {lo}" if lo == hi else f"load {lo}-{hi}"


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """(median seconds over ``repeats`` calls, the load averages seen, the last result)."""
    times, loads, result = [], [load_average()], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        loads.append(load_average())
    return statistics.median(times), loads, result


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, list[float]]]:
    """Time the variants alternately (A B A B ...), so that a change of load hits them alike:
    name -> (median seconds, load averages seen)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    loads = [load_average()]
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            loads.append(load_average())
    return {name: (statistics.median(values), loads) for name, values in times.items()}
