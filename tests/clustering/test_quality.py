"""Pseudo-label quality against hand-counted pairs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from reidgen.clustering.quality import label_quality


def test_pairwise_scores_count_pairs_by_hand() -> None:
    true_ids = np.array([7, 7, 7, 8, 8, 9])
    pseudo = np.array([0, 0, 1, 1, 1, -1])
    # Clustered pairs: (0,1) same id; (2,3) no, (2,4) no, (3,4) same id -> precision 2/4.
    # Same-id pairs: (0,1) (0,2) (1,2) (3,4) -> recall 2/4.
    quality = label_quality(pseudo, true_ids)
    assert quality.precision == pytest.approx(0.5)
    assert quality.recall == pytest.approx(0.5)
    assert quality.f_score == pytest.approx(0.5)
    assert 0.0 < quality.nmi < 1.0


@pytest.mark.parametrize("seed", range(3))
def test_pairwise_scores_equal_a_loop_over_pairs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true_ids = rng.integers(0, 12, 80)
    pseudo = np.where(rng.random(80) < 0.2, -1, (true_ids + (rng.random(80) < 0.2)) % 12)
    pairs = list(itertools.combinations(range(80), 2))
    together = [(i, j) for i, j in pairs if pseudo[i] >= 0 and pseudo[i] == pseudo[j]]
    correct = sum(true_ids[i] == true_ids[j] for i, j in together)
    same_id = sum(true_ids[i] == true_ids[j] for i, j in pairs)
    quality = label_quality(pseudo, true_ids)
    assert quality.precision == pytest.approx(correct / len(together))
    assert quality.recall == pytest.approx(correct / same_id)


def test_perfect_labels_score_one_and_all_outliers_zero() -> None:
    true_ids = np.array([3, 3, 5, 5, 5])
    assert label_quality(np.array([1, 1, 0, 0, 0]), true_ids).as_dict() == pytest.approx(
        {"pair_precision": 1.0, "pair_recall": 1.0, "pair_f": 1.0, "nmi": 1.0}
    )
    none = label_quality(np.full(5, -1), true_ids)
    assert (none.precision, none.recall, none.f_score) == (0.0, 0.0, 0.0)
