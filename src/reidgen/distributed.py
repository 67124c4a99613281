"""The one place that asks whether this process is part of a distributed run."""

from __future__ import annotations

import torch.distributed as dist


def world() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, else (1, 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def world_size() -> int:
    return world()[0]
