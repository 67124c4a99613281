"""ShuffleSampler: a seeded permutation per epoch, whole batches, disjoint DDP slices, resume."""

from __future__ import annotations

import pytest

from reidgen.data.samplers import ShuffleSampler


def test_epoch_is_a_permutation_cut_into_whole_batches() -> None:
    sampler = ShuffleSampler(list(range(50)), batch_size=16, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 48
    assert len(set(first)) == 48 and set(first) <= set(range(50))
    assert list(ShuffleSampler(list(range(50)), batch_size=16, seed=3)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_ranks_split_every_batch() -> None:
    whole = list(ShuffleSampler([0] * 40, batch_size=8, seed=1, num_replicas=1, rank=0))
    parts = [
        list(ShuffleSampler([0] * 40, batch_size=8, seed=1, num_replicas=2, rank=r)) for r in (0, 1)
    ]
    for b in range(5):
        assert parts[0][4 * b : 4 * b + 4] + parts[1][4 * b : 4 * b + 4] == whole[8 * b : 8 * b + 8]


def test_resume_mid_epoch_and_errors() -> None:
    sampler = ShuffleSampler(list(range(30)), batch_size=5, seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    iterator = iter(sampler)
    taken = [next(iterator) for _ in range(10)]
    state = sampler.state_dict()
    resumed = ShuffleSampler(list(range(30)), batch_size=5, seed=9)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    assert taken + list(resumed) == full
    with pytest.raises(ValueError, match="make no batch of 16"):
        ShuffleSampler([1, 2, 3], batch_size=16)
