"""Sparse k-reciprocal Jaccard distance against a dense computation of SpCL's definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidgen.clustering.jaccard import jaccard_distance


def _dense_jaccard(features: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """The definition, one sample at a time over [N, N] matrices (as SpCL writes it)."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    dist = np.clip(2.0 - 2.0 * unit @ unit.T, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    num = len(unit)
    initial_rank = np.argsort(dist, axis=1, kind="stable")[:, :k1]  # k1 nearest, self included

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = initial_rank[i, : k + 1]
        backward = initial_rank[forward, : k + 1]
        return forward[(backward == i).any(axis=1)]

    encoding = np.zeros((num, num))
    for i in range(num):
        members = reciprocal(i, k1)
        expanded = members
        for candidate in members:
            theirs = reciprocal(candidate, int(np.around(k1 / 2)))
            if len(np.intersect1d(theirs, members)) > 2.0 / 3.0 * len(theirs):
                expanded = np.append(expanded, theirs)
        expanded = np.unique(expanded)
        weights = np.exp(-dist[i, expanded])
        encoding[i, expanded] = weights / weights.sum()
    if k2 != 1:
        encoding = np.stack([encoding[initial_rank[i, :k2]].mean(axis=0) for i in range(num)])
    jaccard = np.empty((num, num))
    for i in range(num):
        shared = np.minimum(encoding[i], encoding).sum(axis=1)
        jaccard[i] = 1.0 - shared / (2.0 - shared)
    return np.clip(jaccard, 0.0, None)


def _clustered_features(seed: int, num: int = 90, dim: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    return centres[rng.integers(0, 12, num)] + 0.35 * rng.normal(size=(num, dim))


@pytest.mark.parametrize(("seed", "k1", "k2"), [(0, 30, 6), (1, 20, 6), (2, 7, 1), (3, 5, 3)])
def test_sparse_jaccard_equals_the_dense_definition(seed: int, k1: int, k2: int) -> None:
    features = _clustered_features(seed)
    expected = _dense_jaccard(features, k1, k2)
    sparse = jaccard_distance(torch.from_numpy(features), k1, k2, max_distance=0.9, chunk_size=32)
    dense = np.ones_like(expected)
    stored = sparse.tocoo()  # explicit zeros included (the diagonal, identical encodings)
    dense[stored.row, stored.col] = stored.data
    kept = expected < 0.9 - 1e-4
    np.testing.assert_allclose(dense[kept], expected[kept], atol=1e-5)
    assert (dense[expected > 0.9 + 1e-4] == 1.0).all()  # nothing beyond the threshold is kept
    assert (sparse.diagonal() == 0).all() and sparse.has_sorted_indices
    assert kept.sum() > 3 * len(features)  # the clusters give each sample neighbours to keep


def test_jaccard_is_deterministic_and_checks_its_input() -> None:
    features = torch.from_numpy(_clustered_features(4))
    first, second = jaccard_distance(features, 10, 3), jaccard_distance(features, 10, 3)
    assert (first != second).nnz == 0
    with pytest.raises(ValueError, match="max_distance"):
        jaccard_distance(features, max_distance=1.0)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        jaccard_distance(features[0])
