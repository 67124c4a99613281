"""DBSCAN on the sparse Jaccard graph, and GCL's adaptive ``eps``.

Pairs left out of the graph are at distance 1 (or beyond the caller's largest ``eps``), so for any
``eps`` below the graph's threshold scikit-learn's DBSCAN on the sparse precomputed matrix finds
exactly the clusters it finds on the dense one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from sklearn.cluster import DBSCAN


def dbscan_labels(distance: scipy.sparse.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """``[N]`` cluster ids (0, 1, ...; -1 for outliers) of DBSCAN on a sparse distance graph.

    :param distance: ``[N, N]`` CSR from :func:`~reidgen.clustering.jaccard.jaccard_distance`,
        holding every pair closer than ``eps``.
    :param eps: neighbourhood radius (inclusive, as scikit-learn's).
    :param min_samples: neighbours (the sample itself included) that make a core sample.
    """
    if eps <= 0 or min_samples < 1:
        raise ValueError(f"need eps > 0 and min_samples >= 1, got eps={eps}, min={min_samples}")
    model = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed")
    return model.fit_predict(distance).astype(np.int64)


def adaptive_eps(distance: scipy.sparse.csr_matrix, rho: float) -> float:
    """GCL's ``eps``: the mean of the smallest ``round(rho * count)`` of the ``count`` nonzero
    pairwise distances (upper triangle), pairs missing from the graph counting as 1.

    :param distance: ``[N, N]`` sparse distances as :func:`dbscan_labels` takes.
    :param rho: the fraction (GCL: 1.6e-3 by default, 2e-3 Market and Duke, 1.2e-3 MSMT17).
    """
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    num = distance.shape[0]
    upper = scipy.sparse.triu(distance, k=1, format="coo")
    stored = np.sort(upper.data[upper.data != 0])
    zeros = int((upper.data == 0).sum())
    count = num * (num - 1) // 2 - zeros
    smallest = round(rho * count)
    if smallest == 0:
        raise ValueError(f"rho={rho} selects no pair of {count}; raise rho or cluster more samples")
    values = stored[:smallest]
    padding = smallest - len(values)  # the rest of the selection are pairs at distance 1
    return float((values.astype(np.float64).sum() + padding) / smallest)
