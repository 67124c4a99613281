"""RandomIdentitySampler: P x K structure, exact length, seeding, DDP slicing, resume, domains."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reidgen.data.samplers.identity import RandomIdentitySampler, max_full_batches


def make_labels(num_ids: int = 40, lo: int = 1, hi: int = 12, seed: int = 0) -> np.ndarray:
    """Labels 0..num_ids-1 with lo..hi-1 images each, in a shuffled dataset order."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_ids), rng.integers(lo, hi, num_ids))
    return rng.permutation(labels)


def batches_of(indices: list[int], batch: int) -> list[list[int]]:
    assert len(indices) % batch == 0
    return [indices[i : i + batch] for i in range(0, len(indices), batch)]


def check_pk(labels: np.ndarray, batch: list[int], p: int, k: int) -> list[int]:
    """Assert one batch is p groups of k images of one identity, p distinct; return the ids."""
    groups = np.asarray(labels)[np.asarray(batch)].reshape(p, k)
    assert (groups == groups[:, :1]).all(), groups
    ids = groups[:, 0].tolist()
    assert len(set(ids)) == p, ids
    return ids


@pytest.mark.parametrize(("k", "batch_size"), [(4, 32), (2, 16), (1, 8), (5, 20)])
def test_batches_are_p_identities_times_k_images(k: int, batch_size: int) -> None:
    labels = make_labels()
    sampler = RandomIdentitySampler(labels, num_instances=k, batch_size=batch_size, seed=3)
    indices = list(sampler)
    assert len(indices) == len(sampler) > 0
    for batch in batches_of(indices, batch_size):
        check_pk(labels, batch, batch_size // k, k)


def test_len_is_exact_known_before_iterating_and_constant_over_epochs() -> None:
    labels = make_labels(num_ids=30, lo=1, hi=20)
    sampler = RandomIdentitySampler(labels, num_instances=4, batch_size=24)
    n = len(sampler)  # before any iteration
    assert n % sampler.per_rank_batch_size == 0
    assert n == sampler.num_batches * 24
    for epoch in range(4):
        sampler.set_epoch(epoch)
        assert len(list(sampler)) == n == len(sampler)


def test_number_of_batches_is_the_maximum_possible() -> None:
    # Brute force: the largest B with sum(min(c, B)) >= P * B.
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(1, 15, rng.integers(1, 30))
        p = int(rng.integers(1, 8))
        best = max(b for b in range(counts.sum() + 1) if np.minimum(counts, b).sum() >= p * b)
        assert max_full_batches(counts, p) == best


def test_every_image_appears_when_no_identity_dominates() -> None:
    # Identities with K..3K-1 images (plus some with fewer than K); enough identities that no
    # identity has more chunks than there are batches, and a chunk total divisible by P, so the
    # plan uses every chunk and hence every image.
    k, p = 4, 8
    rng = np.random.default_rng(1)
    counts = rng.integers(k, 3 * k, 64)
    counts[:8] = [1, 2, 3, 1, 2, 3, 1, 2]
    chunks = np.maximum(1, -(-counts // k))
    counts[-1] += (p - chunks.sum() % p) % p * k  # top up the last identity to a multiple of P
    labels = rng.permutation(np.repeat(np.arange(64), counts))
    sampler = RandomIdentitySampler(labels, num_instances=k, batch_size=p * k, seed=5)
    assert sampler.num_batches * p == np.maximum(1, -(-counts // k)).sum()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        seen = set(sampler)
        assert seen == set(range(len(labels)))  # small identities too: all images, once each


def test_only_excess_chunks_of_a_dominant_identity_are_dropped() -> None:
    k, p = 4, 4
    counts = np.full(19, 8)  # 18 identities with 2 chunks each: B = 36 / (P - 1) = 12 batches
    counts[0] = 400  # 100 chunks, far more than the number of batches
    labels = np.repeat(np.arange(19), counts)
    sampler = RandomIdentitySampler(labels, num_instances=k, batch_size=p * k)
    seen = set(sampler)
    missing_ids = {int(labels[i]) for i in set(range(len(labels))) - seen}
    assert missing_ids == {0}
    # The dominant identity is in every batch (one chunk each), the others are used fully.
    for batch in batches_of(list(sampler), p * k):
        assert 0 in check_pk(labels, batch, p, k)


def test_small_identities_fill_k_with_replacement() -> None:
    labels = np.repeat(np.arange(10), 2)  # every identity has 2 < K images
    sampler = RandomIdentitySampler(labels, num_instances=4, batch_size=8)
    indices = list(sampler)
    for batch in batches_of(indices, 8):
        check_pk(labels, batch, 2, 4)
    assert set(indices) == set(range(20))


def test_same_seed_and_epoch_identical_other_epochs_and_seeds_differ() -> None:
    labels = make_labels()
    a = RandomIdentitySampler(labels, num_instances=4, batch_size=32, seed=11)
    b = RandomIdentitySampler(labels, num_instances=4, batch_size=32, seed=11)
    c = RandomIdentitySampler(labels, num_instances=4, batch_size=32, seed=12)
    torch.manual_seed(0)
    np.random.seed(0)
    first = list(a)
    torch.manual_seed(123)  # global RNGs must not matter
    np.random.seed(123)
    assert list(b) == first
    assert list(a) == first  # iterating again without set_epoch repeats the epoch
    assert list(c) != first
    a.set_epoch(1)
    second = list(a)
    assert second != first
    b.set_epoch(1)
    assert list(b) == second


@pytest.mark.parametrize("replicas", [2, 4])
def test_ranks_get_disjoint_whole_groups_whose_union_is_the_global_batch(replicas: int) -> None:
    labels = make_labels(num_ids=50)
    k, batch_size = 4, 32
    single = RandomIdentitySampler(
        labels, num_instances=k, batch_size=batch_size, seed=7, num_replicas=1, rank=0
    )
    ranks = [
        RandomIdentitySampler(
            labels, num_instances=k, batch_size=batch_size, seed=7, num_replicas=replicas, rank=r
        )
        for r in range(replicas)
    ]
    per_rank = batch_size // replicas
    assert all(s.per_rank_batch_size == per_rank for s in ranks)
    assert {len(s) for s in ranks} == {len(single) // replicas}
    for epoch in (0, 1):
        for s in (single, *ranks):
            s.set_epoch(epoch)
        global_batches = batches_of(list(single), batch_size)
        rank_batches = [batches_of(list(s), per_rank) for s in ranks]
        assert all(len(rb) == len(global_batches) for rb in rank_batches)
        for b, global_batch in enumerate(global_batches):
            parts = [rb[b] for rb in rank_batches]
            ids = [check_pk(labels, part, per_rank // k, k) for part in parts]
            assert len(set(itertools.chain(*ids))) == batch_size // k  # disjoint identities
            assert list(itertools.chain(*parts)) == global_batch  # union is the global batch


def test_state_dict_resumes_mid_epoch_with_exactly_the_remaining_indices() -> None:
    labels = make_labels()
    kwargs = {"num_instances": 4, "batch_size": 32, "seed": 9, "num_replicas": 2, "rank": 1}
    sampler = RandomIdentitySampler(labels, **kwargs)
    sampler.set_epoch(3)
    full = list(sampler)
    for cut in (0, 16, 37, len(full) - 1):  # batch-aligned or not
        it = iter(sampler)
        consumed = [next(it) for _ in range(cut)]
        state = sampler.state_dict()
        assert state == {"epoch": 3, "seed": 9, "position": cut}
        fresh = RandomIdentitySampler(labels, **{**kwargs, "seed": 0})  # seed comes from state
        fresh.load_state_dict(state)
        fresh.set_epoch(3)  # Lightning calls this on resume: same epoch keeps the position
        assert consumed + list(fresh) == full
        assert list(fresh) == full  # the next pass is a whole epoch again
        rest = list(it)  # finish the original iterator: position goes back to 0
        assert consumed + rest == full
        assert sampler.state_dict()["position"] == 0


def test_set_epoch_to_a_new_epoch_resets_the_position() -> None:
    sampler = RandomIdentitySampler(make_labels(), num_instances=4, batch_size=32)
    it = iter(sampler)
    next(it)
    sampler.set_epoch(0)
    assert sampler.state_dict()["position"] == 1
    sampler.set_epoch(1)
    assert sampler.state_dict() == {"epoch": 1, "seed": 0, "position": 0}
    with pytest.raises(ValueError, match="position"):
        sampler.load_state_dict({"epoch": 0, "seed": 0, "position": len(sampler) + 1})


def test_dataloader_with_per_rank_batch_size_yields_pk_batches() -> None:
    labels = make_labels()
    sampler = RandomIdentitySampler(labels, num_instances=4, batch_size=32, num_replicas=2, rank=0)
    loader = DataLoader(
        torch.arange(len(labels)), batch_size=sampler.per_rank_batch_size, sampler=sampler
    )
    assert len(loader) == sampler.num_batches
    for batch in loader:
        check_pk(labels, batch.tolist(), 4, 4)


def test_domain_balanced_batches_have_equal_identities_per_domain() -> None:
    rng = np.random.default_rng(2)
    # Three domains of very different sizes; identity -> domain is fixed.
    id_domain = np.repeat([0, 1, 2], [10, 30, 60])
    labels = rng.permutation(np.repeat(np.arange(100), rng.integers(2, 12, 100)))
    domains = id_domain[labels]
    k, p, replicas = 2, 12, 2
    samplers = [
        RandomIdentitySampler(
            labels,
            num_instances=k,
            batch_size=p * k,
            domains=domains,
            domain_balanced=True,
            num_replicas=replicas,
            rank=r,
        )
        for r in range(replicas)
    ]
    assert samplers[0].domain_ids == [0, 1, 2]
    per_rank = p * k // replicas
    for s in samplers:
        assert len(s) == len(list(s)) > 0
        for batch in batches_of(list(s), per_rank):
            ids = check_pk(labels, batch, p // replicas, k)
            # (P / R) % D == 0 here, so every rank's slice is balanced too.
            assert np.bincount(id_domain[ids], minlength=3).tolist() == [2, 2, 2]


def test_domain_balanced_errors() -> None:
    labels = np.repeat(np.arange(12), 4)
    domains = np.repeat(np.arange(12) % 3, 4)
    with pytest.raises(ValueError, match="needs `domains`"):
        RandomIdentitySampler(labels, 4, 24, domain_balanced=True)
    with pytest.raises(ValueError, match="divisible by the number of domains"):
        RandomIdentitySampler(labels, 4, 16, domains=domains, domain_balanced=True)
    with pytest.raises(ValueError, match="one entry per label"):
        RandomIdentitySampler(labels, 4, 24, domains=domains[:-1], domain_balanced=True)
    mixed = domains.copy()
    mixed[0] = 1  # identity 0 now has images in domains 0 and 1
    with pytest.raises(ValueError, match="several domains"):
        RandomIdentitySampler(labels, 4, 24, domains=mixed, domain_balanced=True)
    with pytest.raises(ValueError, match="domains needs at least"):
        RandomIdentitySampler(labels, 4, 60, domains=domains, domain_balanced=True)
    # Ignored without domain_balanced.
    RandomIdentitySampler(labels, 4, 16, domains=domains)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_instances": 4, "batch_size": 30}, "multiple of num_instances"),
        ({"num_instances": 4, "batch_size": 0}, "multiple of num_instances"),
        ({"num_instances": 4, "batch_size": 24, "num_replicas": 4, "rank": 0}, "whole groups"),
        ({"num_instances": 0, "batch_size": 24}, "num_instances"),
        ({"num_instances": 4, "batch_size": 32, "num_replicas": 2, "rank": 2}, "rank"),
        ({"num_instances": 4, "batch_size": 32, "num_replicas": 0, "rank": 0}, "num_replicas"),
        ({"num_instances": 2, "batch_size": 64}, "12 identities < P = 32"),
    ],
)
def test_invalid_configurations_raise_clear_errors(kwargs: dict, match: str) -> None:
    labels = np.repeat(np.arange(12), 4)
    with pytest.raises(ValueError, match=match):
        RandomIdentitySampler(labels, **kwargs)
    with pytest.raises(ValueError, match="non-empty"):
        RandomIdentitySampler([], 4, 16)


def test_label_values_do_not_matter_beyond_their_order() -> None:
    labels = make_labels()
    base = list(RandomIdentitySampler(labels, num_instances=4, batch_size=32, seed=1))
    # An order-preserving relabelling (sparse, negative, large) gives the very same plan,
    # because identities are processed in sorted order.
    monotone = labels * 1_000_003 - 7
    assert list(RandomIdentitySampler(monotone, num_instances=4, batch_size=32, seed=1)) == base
    # Any other bijection still gives valid batches over the same identity groups.
    perm = np.random.default_rng(0).permutation(labels.max() + 1) * 13 - 100
    permuted = perm[labels]
    sampler = RandomIdentitySampler(permuted.tolist(), num_instances=4, batch_size=32, seed=1)
    indices = list(sampler)
    assert len(indices) == len(base)
    for batch in batches_of(indices, 32):
        check_pk(permuted, batch, 8, 4)


def test_defaults_to_a_single_process_without_a_process_group() -> None:
    sampler = RandomIdentitySampler(make_labels(), num_instances=4, batch_size=32)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    assert "P=8, K=4" in repr(sampler)


@pytest.mark.parametrize("fixed", [1, 5, 23])
def test_batches_per_epoch_fixes_the_length_and_keeps_p_x_k_batches(fixed: int) -> None:
    labels = make_labels(num_ids=20, lo=2, hi=9)
    natural = RandomIdentitySampler(labels, num_instances=4, batch_size=16, seed=2)
    sampler = RandomIdentitySampler(
        labels, num_instances=4, batch_size=16, seed=2, batches_per_epoch=fixed
    )
    assert natural.num_batches < 23  # so 23 needs a second plan of the same epoch
    for epoch in (0, 1):
        natural.set_epoch(epoch)
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(indices) == len(sampler) == fixed * 16
        for batch in batches_of(indices, 16):
            check_pk(labels, batch, 4, 4)
        # The first plan is the natural epoch's, so batches_per_epoch=None is the special case.
        shared = min(fixed, natural.num_batches) * 16
        assert indices[:shared] == list(natural)[:shared]
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_batches_per_epoch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batches_per_epoch must be positive"):
        RandomIdentitySampler(make_labels(), batches_per_epoch=0)
