"""Reliability criteria by contingency tables against the [N, N] IoU definition."""

from __future__ import annotations

import numpy as np
import pytest

from reidgen.clustering.reliability import reliability, set_iou, singletons_for_outliers


def _dense_iou(labels: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The reference's definition: IoU of the rows of two label-equality matrices."""
    same = labels[:, None] == labels[None, :]
    same_other = other[:, None] == other[None, :]
    return (same & same_other).sum(1) / (same | same_other).sum(1)


def _random_labelings(rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    """A clustering with outliers, a tighter one (splits and more outliers) and a looser one
    (merges and fewer outliers), as DBSCAN at three eps values would give."""
    labels = rng.integers(-1, size // 4, size)
    tight = np.where(rng.random(size) < 0.2, -1, labels * 2 + rng.integers(0, 2, size))
    tight[labels < 0] = -1
    loose = np.where(labels < 0, np.where(rng.random(size) < 0.5, -1, 0), labels // 3)
    return labels, tight, loose


def test_outliers_become_singletons_numbered_after_the_clusters() -> None:
    labels = np.array([1, -1, 0, -1, 1])
    assert singletons_for_outliers(labels).tolist() == [1, 2, 0, 3, 1]
    assert singletons_for_outliers(np.array([-1, -1])).tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(5))
def test_contingency_iou_equals_the_dense_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels, tight, loose = _random_labelings(rng, 300)
    ready = [singletons_for_outliers(x) for x in (labels, tight, loose)]
    np.testing.assert_allclose(set_iou(ready[0], ready[1]), _dense_iou(ready[0], ready[1]))
    np.testing.assert_allclose(set_iou(ready[0], ready[2]), _dense_iou(ready[0], ready[2]))

    scores = reliability(labels, tight, loose)
    np.testing.assert_allclose(scores.compactness, 1 - _dense_iou(ready[0], ready[1]))
    np.testing.assert_allclose(scores.independence, 1 - _dense_iou(ready[0], ready[2]))
    for cluster in np.unique(ready[0]):
        members = ready[0] == cluster
        assert scores.cluster_compactness[cluster] == scores.compactness[members].min()
        assert scores.cluster_independence[cluster] == scores.independence[members].min()


def test_reliable_samples_follow_the_threshold_and_each_clusters_most_compact_members() -> None:
    # Clusters at eps: A = {0..3}, B = {4, 5, 6}, C = {7, 8}; 9 is an outlier.
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, -1])
    # Tight: A splits into {0, 1, 2} and {3}; B and C stay.
    tight = np.array([0, 0, 0, -1, 1, 1, 1, 2, 2, -1])
    # Loose: B and C merge; A stays.
    loose = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, -1])
    scores = reliability(labels, tight, loose)
    np.testing.assert_allclose(scores.compactness[:4], [0.25, 0.25, 0.25, 0.75])
    np.testing.assert_allclose(scores.independence[[0, 4, 7]], [0.0, 0.4, 0.6])
    # Over the clusters of two or more (A, B, C: 0, 0.4, 0.6), index round(0.9 * 3) = 3 -> the
    # last, 0.6; at quantile 0.5, index round(1.5) = 2 (half to even) -> 0.6; at 0.3 -> 0.4.
    assert scores.independence_threshold() == pytest.approx(0.6)
    assert scores.independence_threshold(0.3) == pytest.approx(0.4)
    keep = scores.reliable(0.4)
    # A keeps its compact core (3 is the member that splits off), B is independent enough,
    # C merges too easily, the outlier is its own cluster and stays (the size filter drops it).
    assert keep.tolist() == [True, True, True, False, True, True, True, False, False, True]


def test_threshold_needs_a_cluster_of_two() -> None:
    scores = reliability(np.array([-1, -1]), np.array([-1, -1]), np.array([-1, -1]))
    with pytest.raises(ValueError, match="no cluster of two or more"):
        scores.independence_threshold()
