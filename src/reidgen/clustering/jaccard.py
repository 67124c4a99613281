"""k-reciprocal Jaccard distances among training features, sparse, for DBSCAN.

The definition is SpCL's ``compute_jaccard_distance``, which DomainMix and GCL cluster with; it is
re-ranking's Jaccard term (:mod:`reidgen.eval.rerank`, whose sparse encoding this reuses) with
three differences: ``R(i, k1)`` comes from the ``k1`` nearest samples (self included) rather than
``k1 + 1``; the Gaussian weights use the squared distance ``2 - 2 cos`` of L2-normalised
features as it is, not divided by its row maximum; and every sample is both query and gallery.
Two samples whose encodings share no neighbour are at distance exactly 1, so keeping only the
pairs below a threshold ``< 1`` loses nothing a clustering with ``eps`` up to it can see, and the
``[N, N]`` matrix (4 GB at MSMT17 size, times the several copies the reference makes) never exists.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F
from torch import Tensor

from reidgen.eval.rerank import (
    DISTANCE_BLOCK,
    FeatureRows,
    JaccardGraph,
    near_lookup,
    scan_blocks,
)


def jaccard_distance(
    features: Tensor,
    k1: int = 30,
    k2: int = 6,
    max_distance: float = 0.999,
    *,
    chunk_size: int = 256,
) -> scipy.sparse.csr_matrix:
    """Sparse k-reciprocal Jaccard distances of all pairs closer than ``max_distance``.

    :param features: ``[N, D]`` embeddings; L2-normalised here, so the base distance is
        ``2 - 2 cos``.
    :param k1, k2: the neighbourhood and query-expansion sizes (SpCL and DomainMix: 30 and 6).
    :param max_distance: pairs at or beyond it are left out (distance 1 by the definition, or
        farther than any ``eps`` the caller will use); below 1.
    :param chunk_size: rows of the ``[chunk_size, N]`` temporary of one step.

    :returns: ``[N, N]`` CSR float32 matrix of the kept distances, the diagonal (0) included,
        columns sorted within each row, symmetric up to float rounding.
    """
    if features.dim() != 2 or len(features) < 2:
        raise ValueError(f"features must be [N, D] with N >= 2, got {tuple(features.shape)}")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be positive, got k1={k1}, k2={k2}")
    if not 0.0 < max_distance < 1.0:
        raise ValueError(f"max_distance must be in (0, 1), got {max_distance}")
    num_total = len(features)
    source = FeatureRows(F.normalize(features.float(), dim=1))
    needed = min(num_total, max(k1, k2))
    kept = min(num_total, 2 * needed)
    ranks, normalised, row_max = scan_blocks(
        source, kept, DISTANCE_BLOCK, "clustering: nearest neighbours"
    )
    squared = normalised.mul_(row_max[:, None])
    graph = JaccardGraph(
        ranks[:, :needed],
        near_lookup(ranks, squared),
        source.pair_squared,
        0,
        k1,
        k2,
        near_count=k1,
    )
    rows, cols, data = [], [], []
    for start in range(0, num_total, chunk_size):
        stop = min(start + chunk_size, num_total)
        block = graph.jaccard(start, stop).clamp_min_(0.0)
        block[torch.arange(stop - start), torch.arange(start, stop)] = 0.0
        row, col = torch.nonzero(block < max_distance, as_tuple=True)
        rows.append(row + start)
        cols.append(col)
        data.append(block[row, col])
    matrix = scipy.sparse.csr_matrix(
        (torch.cat(data).numpy(), (torch.cat(rows).numpy(), torch.cat(cols).numpy())),
        shape=(num_total, num_total),
        dtype=np.float32,
    )
    matrix.sort_indices()
    return matrix
