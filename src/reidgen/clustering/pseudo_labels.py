"""One epoch's pseudo labels: Jaccard graph, DBSCAN, optional reliability filter, size filter.

DomainMix (``docs/methods/domainmix.md``): eps 0.6 with the reliability criteria at eps +- 0.02
(the independence threshold set at the first clustering and then frozen), clusters of fewer than
5 samples and all outliers discarded. GCL: eps adaptive (``rho``), no reliability filter, outliers
discarded. Both: k-reciprocal Jaccard with k1 = 30, k2 = 6, DBSCAN ``min_samples`` 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from reidgen.clustering.dbscan import adaptive_eps, dbscan_labels
from reidgen.clustering.jaccard import jaccard_distance
from reidgen.clustering.reliability import reliability


@dataclass(frozen=True)
class PseudoLabels:
    """:param labels: ``[N]`` cluster ids ``0..num_clusters - 1`` (numbered by each cluster's
    first sample), -1 for samples left out of training this epoch.
    :param eps: the DBSCAN radius used."""

    labels: np.ndarray
    eps: float

    @property
    def num_clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    @property
    def num_kept(self) -> int:
        return int((self.labels >= 0).sum())

    @property
    def num_left_out(self) -> int:
        return int((self.labels < 0).sum())


class PseudoLabeller:
    """Clusters features into pseudo identities, with the filters of DomainMix or GCL.

    :param eps: fixed DBSCAN radius; None for GCL's adaptive one (needs ``rho``).
    :param rho: fraction of the smallest pairwise distances whose mean is the adaptive eps.
    :param eps_gap: reliability criteria at ``eps - eps_gap`` and ``eps + eps_gap`` (DomainMix,
        SpCL); None switches them off.
    :param independence_quantile: where the frozen independence threshold sits among clusters.
    :param min_samples: DBSCAN's core-sample count, the sample itself included.
    :param min_cluster_size: clusters smaller than this (after the reliability filter) are left out.
    :param k1, k2: the Jaccard distance's neighbourhood sizes.
    """

    def __init__(
        self,
        eps: float | None = 0.6,
        rho: float | None = None,
        eps_gap: float | None = 0.02,
        independence_quantile: float = 0.9,
        min_samples: int = 4,
        min_cluster_size: int = 1,
        k1: int = 30,
        k2: int = 6,
    ) -> None:
        if (eps is None) == (rho is None):
            raise ValueError(f"give exactly one of eps (fixed) and rho (adaptive): {eps=}, {rho=}")
        if eps_gap is not None and eps is None:
            raise ValueError("the reliability criteria (eps_gap) need a fixed eps")
        self.eps, self.rho, self.eps_gap = eps, rho, eps_gap
        self.independence_quantile = independence_quantile
        self.min_samples, self.min_cluster_size = min_samples, min_cluster_size
        self.k1, self.k2 = k1, k2
        self.independence_threshold: float | None = None

    def __call__(self, features: Tensor) -> PseudoLabels:
        """Pseudo labels of ``features`` ``[N, D]`` (the model's evaluation embeddings)."""
        largest = 0.999 if self.eps is None else min(0.999, self.eps + (self.eps_gap or 0.0))
        graph = jaccard_distance(features, self.k1, self.k2, max_distance=largest + 1e-6)
        eps = adaptive_eps(graph, self.rho) if self.eps is None else self.eps
        labels = dbscan_labels(graph, eps, self.min_samples)
        if self.eps_gap is not None:
            tight = dbscan_labels(graph, eps - self.eps_gap, self.min_samples)
            loose = dbscan_labels(graph, eps + self.eps_gap, self.min_samples)
            scores = reliability(labels, tight, loose)
            if self.independence_threshold is None:
                self.independence_threshold = scores.independence_threshold(
                    self.independence_quantile
                )
            labels = np.where(scores.reliable(self.independence_threshold), labels, -1)
        return PseudoLabels(renumber(labels, self.min_cluster_size), eps)

    def state_dict(self) -> dict[str, float | None]:
        """What a resumed run needs to label as the interrupted one would have."""
        return {"independence_threshold": self.independence_threshold}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.independence_threshold = state["independence_threshold"]


def true_identity_labels(identities: np.ndarray, min_cluster_size: int = 1) -> PseudoLabels:
    """What a perfect clustering would return for ``[N]`` true identities (>= 0): one cluster per
    identity with at least ``min_cluster_size`` images. A diagnostic: training on these instead
    of the clusters measures what the pseudo labels' errors cost."""
    if len(identities) and identities.min() < 0:
        raise ValueError("true_identity_labels needs every sample's identity (got ids < 0)")
    return PseudoLabels(renumber(identities, min_cluster_size), eps=float("nan"))


def renumber(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Clusters of at least ``min_size`` numbered 0, 1, ... by their first sample; others -1."""
    out = np.full(len(labels), -1, dtype=np.int64)
    clustered = labels >= 0
    if not clustered.any():
        return out
    ids, first, inverse, counts = np.unique(
        labels[clustered], return_index=True, return_inverse=True, return_counts=True
    )
    big = counts >= min_size
    order = np.argsort(first[big], kind="stable")
    new_id = np.full(len(ids), -1, dtype=np.int64)
    new_id[np.flatnonzero(big)[order]] = np.arange(int(big.sum()))
    out[clustered] = new_id[inverse]
    return out
