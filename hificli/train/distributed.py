"""Process layout: single process, or torchrun (DDP) on CUDA (nccl) or CPU (gloo).

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; with WORLD_SIZE > 1 we join the process group. Rank 0
logs, validates and writes checkpoints; the others train their shard of every batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Layout:
    """Where this process sits: rank among ``world`` processes, its device."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def env_world() -> tuple[int, int, int, int]:
    """(rank, world, local_rank, local_world) from torchrun's environment (0, 1, 0, 1 without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return rank, world, local_rank, local_world


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` = CUDA when available; ``cuda`` uses GPU ``local_rank``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            from hificli.errors import HificError

            raise HificError("--device cuda: no CUDA device is available", "use --device cpu")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"unknown device {name!r}")
    return torch.device("cpu")


def setup(device: str) -> Layout:
    """Join the process group when launched by torchrun; choose this process's device."""
    rank, world, local_rank, local_world = env_world()
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Layout(rank, world, local_rank, local_world, dev)


def teardown(layout: Layout) -> None:
    if layout.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mean_scalar(value: float, layout: Layout) -> float:
    """Mean of a Python float over all processes (the value itself when single-process)."""
    if not layout.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device(layout))
    dist.all_reduce(t)
    return float(t.item()) / layout.world


def any_flag(flag: bool, layout: Layout) -> bool:
    """True on every process if ``flag`` is true on any."""
    if not layout.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device(layout))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj: Any, layout: Layout) -> list[Any]:
    """``obj`` from every process, in rank order."""
    if not layout.distributed:
        return [obj]
    out: list[Any] = [None] * layout.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, layout: Layout) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not layout.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(layout: Layout) -> None:
    if layout.distributed:
        dist.barrier()


def _comm_device(layout: Layout) -> torch.device:
    return layout.device if layout.device.type == "cuda" else torch.device("cpu")
