"""Gathering evaluation outputs across processes, keyed by sample index.

Each rank evaluates a disjoint shard of a target (no padding samples); the gather puts every row
back at its sample's index and checks that each sample was seen exactly once, so neither
duplicated nor missing nor reordered samples can reach the metrics.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from reidgen.distributed import world_size


def _all_gather_variable(tensor: Tensor) -> list[Tensor]:
    """``all_gather`` for tensors whose first dimension differs between ranks."""
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return [part[: int(s.item())] for part, s in zip(parts, sizes, strict=True)]


def gather_by_index(values: Tensor, index: Tensor, total: int) -> Tensor:
    """Rows of all ranks, placed at their sample index: ``[n, ...]`` per rank -> ``[total, ...]``.

    Raises ``RuntimeError`` naming the first offending index if a sample is missing or repeated.
    """
    if world_size() > 1:
        values = torch.cat(_all_gather_variable(values))
        index = torch.cat(_all_gather_variable(index))
    index_cpu = index.long().cpu()
    if index_cpu.numel() and (int(index_cpu.min()) < 0 or int(index_cpu.max()) >= total):
        outside = index_cpu[(index_cpu < 0) | (index_cpu >= total)][0]
        raise RuntimeError(
            f"evaluation produced sample index {int(outside)} outside 0..{total - 1}"
        )
    counts = torch.bincount(index_cpu, minlength=total)
    if not bool((counts == 1).all()):
        wrong = int(torch.nonzero(counts != 1)[0].item())
        raise RuntimeError(
            f"evaluation saw sample {wrong} {int(counts[wrong])} times (expected once each of "
            f"{total}); the evaluation sampler must shard without padding"
        )
    result = values.new_empty((total, *values.shape[1:]))
    result[index.long().to(values.device)] = values
    return result
