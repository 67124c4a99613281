"""Putting evaluation rows back in sample order, checking that each sample came exactly once.

Each process evaluates a disjoint shard of a target (no padding samples) and torchmetrics gathers
the shards' rows and sample indices (:mod:`reidgen.eval.metric`); this puts every row at its
sample's index, so neither duplicated nor missing nor reordered samples can reach the metrics.
"""

from __future__ import annotations

import torch
from torch import Tensor


def place_by_index(values: Tensor, index: Tensor, total: int) -> Tensor:
    """Rows ``[n, ...]`` placed at their sample index: ``[total, ...]``.

    Raises ``RuntimeError`` naming the first offending index if a sample is missing or repeated.
    """
    index_cpu = index.long().cpu()
    if len(values) != len(index_cpu):
        raise RuntimeError(f"{len(values)} evaluation rows but {len(index_cpu)} sample indices")
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
