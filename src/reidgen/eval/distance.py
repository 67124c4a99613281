"""Query-gallery distances of embeddings, as a full matrix or one chunk of queries at a time."""

from __future__ import annotations

from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor

from reidgen.eval.ranking import DistanceFn

Metric = Literal["cosine", "euclidean"]
METRICS: tuple[str, ...] = get_args(Metric)


def pairwise_distance(
    query_features: Tensor, gallery_features: Tensor, metric: Metric = "cosine"
) -> Tensor:
    """Distances between every query and every gallery embedding (smaller = more similar).

    :param query_features: ``[Q, D]``.
    :param gallery_features: ``[G, D]``.
    :param metric: ``"cosine"``: 1 - cosine similarity, in [0, 2] and invariant to feature scale;
        ``"euclidean"``: *squared* Euclidean distance (it ranks like the plain one, and is
        what torchreid and fast-reid report as "euclidean").

    :returns: ``[Q, G]`` on the features' device, in their dtype.
    """
    _check_metric(metric)
    if metric == "cosine":
        return 1.0 - F.normalize(query_features, dim=1) @ F.normalize(gallery_features, dim=1).T
    # |q - g|^2 = |q|^2 + |g|^2 - 2 q.g turns the [Q, G, D] difference tensor into one matrix
    # product; rounding can make it slightly negative for (near-)identical vectors, hence the clamp.
    query_norms = query_features.square().sum(dim=1, keepdim=True)  # [Q, 1]
    gallery_norms = gallery_features.square().sum(dim=1)  # [G]
    return (query_norms + gallery_norms - 2.0 * query_features @ gallery_features.T).clamp_min(0.0)


def chunked_distance(
    query_features: Tensor, gallery_features: Tensor, metric: Metric = "cosine"
) -> DistanceFn:
    """The callable form of :func:`pairwise_distance` for :func:`~reidgen.eval.evaluate_ranking`.

    :param query_features: ``[Q, D]``.
    :param gallery_features: ``[G, D]``.
    :param metric: as in :func:`pairwise_distance`.

    :returns: ``distance(start, stop) -> Tensor[stop - start, G]``, which computes only the rows of
        queries ``start:stop``, so the full ``[Q, G]`` matrix never exists.
    """
    _check_metric(metric)  # fail here, not in the middle of an evaluation

    def distance(start: int, stop: int) -> Tensor:
        return pairwise_distance(query_features[start:stop], gallery_features, metric)

    return distance


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}, expected one of {METRICS}")
