"""One epoch's pseudo labels on features whose identities are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidgen.clustering.pseudo_labels import PseudoLabeller, renumber, true_identity_labels
from reidgen.clustering.quality import label_quality


def _identities(seed: int, count: int = 30, per_id: int = 8, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(count, 32))
    ids = np.repeat(np.arange(count), per_id)
    features = centres[ids] + spread * rng.normal(size=(len(ids), 32))
    order = rng.permutation(len(ids))
    return torch.from_numpy(features[order]).float(), ids[order]


def test_renumbering_keeps_large_clusters_in_order_of_their_first_sample() -> None:
    labels = np.array([4, 4, -1, 2, 2, 2, 9, 4, 2])
    assert renumber(labels, 2).tolist() == [0, 0, -1, 1, 1, 1, -1, 0, 1]
    assert renumber(labels, 4).tolist() == [-1, -1, -1, 0, 0, 0, -1, -1, 0]
    assert renumber(np.array([-1, -1]), 1).tolist() == [-1, -1]


def test_true_identity_labels_are_a_perfect_clustering_with_the_size_filter() -> None:
    identities = np.array([7, 3, 7, 3, 9, 7, 3, 3])
    labels = true_identity_labels(identities, min_cluster_size=3)
    # 7 (first at 0) and 3 (first at 1) have 3 and 4 images; 9 has one and is left out.
    assert labels.labels.tolist() == [0, 1, 0, 1, -1, 0, 1, 1]
    quality = label_quality(labels.labels, identities)
    assert quality.precision == 1.0
    with pytest.raises(ValueError, match="identity"):
        true_identity_labels(np.array([0, -1]))


def test_domainmix_labelling_recovers_identities_and_freezes_its_threshold() -> None:
    features, ids = _identities(0)
    labeller = PseudoLabeller(eps=0.6, eps_gap=0.02, min_cluster_size=5)
    first = labeller(features)
    quality = label_quality(first.labels, ids)
    assert quality.precision > 0.95 and quality.recall > 0.7, quality
    assert first.num_clusters >= 20 and first.num_kept + first.num_left_out == len(ids)
    assert np.bincount(first.labels[first.labels >= 0]).min() >= 5
    threshold = labeller.independence_threshold
    assert threshold is not None

    # Later epochs keep the first threshold; a resumed labeller restores it.
    noisier, _ = _identities(1, spread=0.45)
    labeller(noisier)
    assert labeller.independence_threshold == threshold
    resumed = PseudoLabeller(eps=0.6, eps_gap=0.02, min_cluster_size=5)
    resumed.load_state_dict(labeller.state_dict())
    assert resumed(noisier).labels.tolist() == labeller(noisier).labels.tolist()


def test_gcl_labelling_uses_an_adaptive_eps_without_reliability() -> None:
    features, ids = _identities(2)
    # rho is about the share of same-identity pairs: 0.002 on Market (751 identities), 2.9% here.
    labeller = PseudoLabeller(eps=None, rho=0.03, eps_gap=None)
    result = labeller(features)
    assert 0.0 < result.eps < 1.0
    assert label_quality(result.labels, ids).f_score > 0.8
    assert labeller.independence_threshold is None
    assert result.labels.tolist() == labeller(features).labels.tolist()  # deterministic


def test_labeller_rejects_contradictory_settings() -> None:
    with pytest.raises(ValueError, match="exactly one of eps"):
        PseudoLabeller(eps=0.6, rho=0.002)
    with pytest.raises(ValueError, match="need a fixed eps"):
        PseudoLabeller(eps=None, rho=0.002, eps_gap=0.02)
