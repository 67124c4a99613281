"""Tagging every training index with its epoch, rank and position, so that the dataset seeds each
draw's augmentation from them (the same whatever the loader workers, and after a resume)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Sampler


class EpochTaggedSampler(Sampler):
    """Wraps an index sampler and tags each index with ``(epoch, rank, position)``.

    Forwards ``set_epoch``, ``state_dict`` and ``load_state_dict`` so Lightning and the data module
    still drive the wrapped sampler.
    """

    def __init__(self, sampler: Any) -> None:
        super().__init__()
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        indices = iter(self.sampler)
        # Read after iter(): the wrapped sampler decides there where this iteration starts.
        start = self.sampler.state_dict()["position"]
        epoch, rank = self.sampler.epoch, self.sampler.rank
        return ((epoch, rank, start + offset, int(index)) for offset, index in enumerate(indices))

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
