"""The protocol every training sampler shares: a seeded epoch plan of whole groups, sliced per
DDP rank, with an exact length, a position and a resumable state."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from reidgen.distributed import world

__all__ = ["EpochPlanSampler", "label_array", "resolve_replicas"]


def resolve_replicas(
    num_replicas: int | None, rank: int | None, num_instances: int, batch_size: int
) -> tuple[int, int]:
    """(world size, rank), defaulting to the process group, checked so that a global batch of
    ``batch_size`` splits into whole groups of ``num_instances`` images per identity on every rank.
    """
    world_count, this_rank = world()
    num_replicas = world_count if num_replicas is None else int(num_replicas)
    rank = this_rank if rank is None else int(rank)
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
    if num_instances < 1:
        raise ValueError(f"num_instances (K) must be >= 1, got {num_instances}")
    if batch_size < 1 or batch_size % (num_instances * num_replicas) != 0:
        raise ValueError(
            f"batch_size ({batch_size}) must be a positive multiple of num_instances * "
            f"num_replicas ({num_instances} * {num_replicas} = {num_instances * num_replicas})"
            " so that every rank gets whole groups of K images of an identity"
        )
    return num_replicas, rank


def label_array(labels: Sequence[int]) -> np.ndarray:
    """Labels as an int64 array [N]; refuses empty or non-1-D input."""
    array = np.asarray(labels, dtype=np.int64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {array.shape}")
    return array


class EpochPlanSampler(Sampler[int]):
    """The protocol the training samplers share: an epoch is a seeded plan of whole groups.

    A subclass sets ``epoch``, ``seed``, ``rank``, ``num_batches``, ``per_rank_batch_size``,
    ``_groups_per_rank`` (groups of one batch taken by each rank) and ``_position`` (indices
    already yielded on this rank in the current epoch), and implements ``_plan(epoch)``: int64
    ``[num_batches, groups per batch, K]`` dataset indices, identical on every rank.
    """

    epoch: int
    seed: int
    rank: int
    num_batches: int
    per_rank_batch_size: int
    _groups_per_rank: int
    _position: int
    # Where the next iteration starts, set by load_state_dict only (None: at 0).
    _resume_position: int | None = None

    def _plan(self, epoch: int) -> np.ndarray:
        raise NotImplementedError

    def rank_indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's whole epoch, int64 ``[len(self)]`` (ignores ``position``)."""
        plan = self._plan(self.epoch if epoch is None else int(epoch))
        lo = self.rank * self._groups_per_rank
        return plan[:, lo : lo + self._groups_per_rank].reshape(-1)

    def __len__(self) -> int:
        return self.num_batches * self.per_rank_batch_size

    def __iter__(self) -> Iterator[int]:
        # Plan eagerly, so that a plan that cannot be made raises at iter(), not at next().
        indices = self.rank_indices().tolist()
        # Every iteration starts at 0, except the first one after a mid-epoch restore. So an
        # iterator made and dropped early (Lightning makes one per reloaded loader before its
        # second, and loader workers prefetch from it) shifts no later iteration.
        start, self._resume_position = self._resume_position or 0, None
        self._position = start
        return self._iterate(indices, start)

    def _iterate(self, indices: list[int], start: int) -> Iterator[int]:
        for i in range(start, len(indices)):
            # Count before yielding: a state_dict taken after receiving index i resumes at i + 1.
            self._position = i + 1
            yield indices[i]
        self._position = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch. A *different* epoch starts at position 0 and drops a restored
        position; setting the current epoch again changes nothing, so a restored mid-epoch state
        survives Lightning's ``set_epoch`` call at the start of the resumed epoch."""
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self.epoch = epoch
            self._position = 0
            self._resume_position = None

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "seed", "position"}``; ``position`` = indices already yielded by the
        current (or last) iteration of this epoch."""
        return {"epoch": self.epoch, "seed": self.seed, "position": self._position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next iteration yields the epoch's remaining indices
        (later ones the whole epoch again)."""
        position = int(state.get("position", 0))
        if not 0 <= position <= len(self):
            raise ValueError(f"position {position} outside this sampler's epoch [0, {len(self)}]")
        epoch = int(state["epoch"])
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.seed = int(state["seed"])
        self.epoch = epoch
        self._position = position
        self._resume_position = position
