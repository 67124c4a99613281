"""ShuffleSampler: plain shuffled batches (no identity structure), seeded, exact length, DDP-aware,
resumable: GCL's loader (random shuffle, drop the last incomplete batch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reidgen.data.samplers.base import EpochPlanSampler, label_array, resolve_replicas


class ShuffleSampler(EpochPlanSampler):
    """Every epoch a seeded permutation of the ``N`` training images cut into global batches of
    ``batch_size`` (the incomplete last one dropped); rank ``r`` of ``R`` takes the ``r``-th
    ``batch_size / R`` of every batch.

    Takes the data module's sampler arguments; ``num_instances`` is accepted and ignored (there
    are no identity groups), and ``labels`` only set ``N``. The plan is ``[B, batch_size, 1]``:
    groups of one image, so the shared protocol slices and resumes it.
    """

    def __init__(
        self,
        labels: Sequence[int],
        num_instances: int = 1,
        batch_size: int = 16,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        num_replicas, rank = resolve_replicas(num_replicas, rank, 1, batch_size)
        self.num_images = len(label_array(labels))
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.num_batches = self.num_images // batch_size
        if self.num_batches == 0:
            raise ValueError(
                f"{self.num_images} training images make no batch of {batch_size}; lower "
                "data.batch_size"
            )
        self.per_rank_batch_size = batch_size // num_replicas
        self._groups_per_rank = self.per_rank_batch_size
        self.epoch = 0
        self._position = 0

    def _plan(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & (2**64 - 1), epoch]))
        order = rng.permutation(self.num_images)[: self.num_batches * self.batch_size]
        return order.reshape(self.num_batches, self.batch_size, 1).astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"ShuffleSampler(N={self.num_images}, batch_size={self.batch_size}, "
            f"batches={self.num_batches})"
        )
