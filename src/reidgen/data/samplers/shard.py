"""Evaluation sharding across DDP processes without padding samples."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler


class ShardSampler(Sampler[int]):
    """Evaluation sharding without padding: rank r takes indices r, r + R, r + 2R, ...

    Unlike ``DistributedSampler`` it never repeats samples to even out ranks, so gathered features
    hold each sample exactly once (the gather keys them by ``index``).
    """

    def __init__(self, length: int, num_replicas: int, rank: int) -> None:
        super().__init__()
        self.indices = list(range(rank, length, num_replicas))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
