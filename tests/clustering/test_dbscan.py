"""DBSCAN on the sparse Jaccard graph against DBSCAN on the dense matrix; GCL's adaptive eps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

from reidgen.clustering.dbscan import adaptive_eps, dbscan_labels
from reidgen.clustering.jaccard import jaccard_distance


def _graph_and_dense(seed: int) -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(15, 16))
    features = centres[rng.integers(0, 15, 150)] + 0.4 * rng.normal(size=(150, 16))
    features = np.concatenate([features, rng.normal(size=(20, 16)) * 2])  # scattered outliers
    graph = jaccard_distance(torch.from_numpy(features), k1=20, k2=6, max_distance=0.8)
    dense = np.ones(graph.shape)
    stored = graph.tocoo()
    dense[stored.row, stored.col] = stored.data
    return graph, dense


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("eps", [0.5, 0.6, 0.7])
def test_sparse_dbscan_finds_the_dense_clusters(seed: int, eps: float) -> None:
    graph, dense = _graph_and_dense(seed)
    labels = dbscan_labels(graph, eps=eps, min_samples=4)
    expected = DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(dense)
    assert labels.tolist() == expected.tolist()
    assert labels.max() >= 5  # real clusters
    assert (labels == -1).any() or eps > 0.5  # and, at the tightest eps, real outliers


def test_adaptive_eps_is_the_mean_of_the_smallest_fraction_of_nonzero_distances() -> None:
    graph, dense = _graph_and_dense(2)
    upper = dense[np.triu_indices(len(dense), k=1)]
    values = np.sort(upper[upper != 0])
    for rho in (0.002, 0.0016, 0.05, 0.3):
        expected = values[: round(rho * len(values))].mean()
        assert adaptive_eps(graph, rho) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="selects no pair"):
        adaptive_eps(graph, 1e-9)
