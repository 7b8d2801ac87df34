"""Where the float transforms run, in what precision, and with how many CPU threads.

Only the float networks (encoder, hyper-analysis, generator) move to a device. The integer-exact
hyper-synthesis, the scale indexes and the entropy coder always run on the CPU, so how a decoder
parses a file never depends on device floats: a file encoded on a GPU decodes to the same latents on a
CPU and vice versa (the encoder's float y only decides which symbols it writes).

Parsing and checking a device name for ``cpu`` and ``auto`` needs no torch (the CLI validates options
before importing it); ``cuda`` asks torch whether CUDA is there.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from hificli.errors import EXIT_USAGE, HificError

if TYPE_CHECKING:
    import torch

DEVICES = "auto|cpu|cuda[:N]"
_DEVICE_RE = re.compile(r"^(?:auto|cpu|cuda(?::(\d{1,3}))?)$")


class DeviceUnavailableError(HificError):
    """The requested device does not exist here (a usage error: the command line asked for it)."""

    exit_code = EXIT_USAGE


def parse_device(text: str) -> str:
    """Normalise a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``); ValueError otherwise."""
    name = str(text).strip().lower()
    if not _DEVICE_RE.match(name):
        raise ValueError(f"unknown device {text!r}; choose {DEVICES}")
    return name


def resolve_device(name: str) -> str:
    """A concrete torch device name for ``name``: ``auto`` is ``cuda`` when CUDA works, else ``cpu``.
    Raises DeviceUnavailableError for a CUDA device this machine does not have."""
    name = parse_device(name)
    if name == "cpu":
        return name
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise DeviceUnavailableError(f"--device {name}: {why}", "use --device cpu (or auto)")
    index = int(name.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceUnavailableError(
            f"--device {name}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})",
            "choose another index, or --device cuda",
        )
    return name


def check_device(name: str) -> None:
    """Fail now (before any work) if ``name`` cannot be used; imports torch only for ``cuda``."""
    if parse_device(name).startswith("cuda"):
        resolve_device(name)


def prepare(device: str) -> None:
    """Process settings for running on ``device``: on CUDA, fp32 means IEEE fp32 (no TF32 in
    convolutions or matrix products; --half is the fast, reduced-precision choice)."""
    if device.startswith("cuda"):
        import torch

        if hasattr(torch.backends.cudnn, "fp32_precision"):  # torch >= 2.9
            torch.backends.cudnn.fp32_precision = "ieee"
            torch.backends.cuda.matmul.fp32_precision = "ieee"
        else:
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False


def half_dtype(device: str) -> torch.dtype:
    """The reduced precision of ``--half``: bfloat16 on CPUs and on GPUs that support it, else float16."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


# ---------------------------------------------------------------------------------------------- threads


def set_passive_wait_policy(environ: MutableMapping[str, str] | None = None) -> None:
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless the user
    chose a policy. Only effective before torch is imported; spawned workers inherit it."""
    env = os.environ if environ is None else environ
    if not env.get("OMP_WAIT_POLICY"):
        env["OMP_WAIT_POLICY"] = "PASSIVE"


def worker_threads(default: int, workers: int, threads: int | None = None) -> int:
    """Compute threads per worker: ``threads`` if given, else the ``default`` (torch's: $OMP_NUM_THREADS
    or the cores) divided among ``workers``, at least 1."""
    if threads:
        return threads
    return max(1, default // max(1, workers))


def apply_threads(workers: int, threads: int | None = None) -> int:
    """Set this process's torch threads for one of ``workers`` processes; returns the count."""
    import torch

    count = worker_threads(torch.get_num_threads(), workers, threads)
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
    return count


def can_fork_workers(device: str) -> bool:
    """Whether -j workers may be forked from this process for ``device``: only on the CPU (a process
    that has initialised CUDA cannot be forked), where the platform forks, and only if torch is not
    imported yet (then this process cannot have run an OpenMP parallel region, see
    :func:`threads_before_fork`; a caller that ran torch before, such as a test calling the CLI in
    its own process, gets spawned workers). Imports torch for ``auto``."""
    import multiprocessing
    import sys

    if "torch" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return False
    return resolve_device(device) == "cpu"


def threads_before_fork(workers: int, threads: int | None = None) -> int:
    """Before forking ``workers`` processes from this one: the torch threads each of them is to use
    (:func:`worker_threads` of torch's default), and this process set to one thread. Call it before
    any torch work here: GNU OpenMP cannot be forked once it ran a parallel region (the child's next
    parallel region waits forever for threads that did not survive the fork); with one thread the
    parent never starts that pool, and each child starts its own."""
    import torch

    count = worker_threads(torch.get_num_threads(), workers, threads)
    torch.set_num_threads(1)
    return count
