"""Reliable clusters (SpCL's criteria, as DomainMix uses them), in O(N) from contingency tables.

A clustering at ``eps`` is compared with clusterings of the same samples at a tighter and a looser
``eps``. For a sample i with cluster C(i) at ``eps``, T(i) at the tight and L(i) at the loose one:

* compactness ``R_comp(i) = 1 - |C(i) & T(i)| / |C(i) | T(i)|`` (0: the cluster does not split
  when ``eps`` shrinks);
* independence ``R_indep(i) = 1 - |C(i) & L(i)| / |C(i) | L(i)|`` (0: it does not merge with
  others when ``eps`` grows).

The reference computes these as IoUs of rows of ``[N, N]`` label-equality matrices (about 13 GB
each at MSMT17 size). Every sample of one cluster has the same row, so ``|C(i) & T(i)|`` is the
number of samples labelled ``(C(i), T(i))``: one count per cell of the contingency table of the two
labelings, and ``|C(i) | T(i)| = |C(i)| + |T(i)| - |C(i) & T(i)|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def singletons_for_outliers(labels: np.ndarray) -> np.ndarray:
    """``labels`` ``[N]`` with every outlier (-1) given its own label, numbered after the clusters
    in sample order (as the reference numbers them)."""
    labels = np.asarray(labels, dtype=np.int64)
    out = labels.copy()
    outliers = np.flatnonzero(labels < 0)
    first = int(labels.max()) + 1 if (labels >= 0).any() else 0
    out[outliers] = first + np.arange(len(outliers))
    return out


def cell_sizes(*labelings: np.ndarray) -> np.ndarray:
    """``[N]`` for every sample, how many samples share all its labels: the size of its cell in
    the contingency table of the labelings (``[N]`` arrays of the same samples). O(N log N)."""
    _, cell, counts = np.unique(
        np.stack(labelings, axis=1), axis=0, return_inverse=True, return_counts=True
    )
    return counts[cell.reshape(-1)]


def set_iou(labels: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``[N]`` IoU of sample i's set under ``labels`` with its set under ``other``.

    :param labels, other: ``[N]`` labelings of the same samples, outliers already singletons.
    """
    labels, other = np.asarray(labels), np.asarray(other)
    if labels.shape != other.shape or labels.ndim != 1:
        raise ValueError(f"labelings must be two [N] arrays, got {labels.shape} and {other.shape}")
    both = cell_sizes(labels, other)
    return both / (cell_sizes(labels) + cell_sizes(other) - both)


@dataclass(frozen=True)
class Reliability:
    """Per-sample scores and per-cluster minima of one clustering against its tight and loose
    neighbours.

    :param labels: ``[N]`` cluster ids at ``eps``, outliers as singletons.
    :param compactness: ``[N]`` ``R_comp``; independence: ``[N]`` ``R_indep``.
    :param cluster_compactness, cluster_independence: ``[K]`` the minimum over each cluster's
        members (K = ``labels.max() + 1``).
    """

    labels: np.ndarray
    compactness: np.ndarray
    independence: np.ndarray
    cluster_compactness: np.ndarray
    cluster_independence: np.ndarray

    def independence_threshold(self, quantile: float = 0.9) -> float:
        """The reference's threshold: the cluster independence at index
        ``min(n - 1, round(quantile * n))`` of the sorted values over clusters of two or more."""
        sizes = np.bincount(self.labels)
        values = np.sort(self.cluster_independence[sizes > 1])
        if len(values) == 0:
            raise ValueError("no cluster of two or more samples: nothing to set a threshold on")
        return float(values[min(len(values) - 1, round(quantile * len(values)))])

    def reliable(self, independence_threshold: float) -> np.ndarray:
        """``[N]`` bool: the sample's cluster is independent enough and the sample is among its
        most compact members."""
        cluster = self.labels
        return (self.cluster_independence[cluster] <= independence_threshold) & (
            self.compactness <= self.cluster_compactness[cluster]
        )


def reliability(labels: np.ndarray, tight: np.ndarray, loose: np.ndarray) -> Reliability:
    """Compactness and independence of ``labels`` (DBSCAN at ``eps``; -1 = outlier) against the
    clusterings at the tight and the loose ``eps``. O(N) time and memory.
    """
    labels, tight, loose = (singletons_for_outliers(x) for x in (labels, tight, loose))
    compactness = 1.0 - set_iou(labels, tight)
    independence = 1.0 - set_iou(labels, loose)
    count = int(labels.max()) + 1
    cluster_compactness = np.full(count, np.inf)
    cluster_independence = np.full(count, np.inf)
    np.minimum.at(cluster_compactness, labels, compactness)
    np.minimum.at(cluster_independence, labels, independence)
    return Reliability(labels, compactness, independence, cluster_compactness, cluster_independence)
