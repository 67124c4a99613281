"""How good pseudo labels are, where the true identities are known (SynthPerson, or a labelled
dataset used as unlabelled): pairwise precision, recall and F-score, and NMI."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from reidgen.clustering.reliability import cell_sizes, singletons_for_outliers


@dataclass(frozen=True)
class LabelQuality:
    """Pairwise precision: of the pairs put in one cluster, the share of one identity; recall: of
    the pairs of one identity (among all samples, outliers included), the share put in one
    cluster; F: their harmonic mean; NMI over all samples, each outlier its own cluster."""

    precision: float
    recall: float
    f_score: float
    nmi: float

    def as_dict(self) -> dict[str, float]:
        return {
            "pair_precision": self.precision,
            "pair_recall": self.recall,
            "pair_f": self.f_score,
            "nmi": self.nmi,
        }


def _same_pairs(*labelings: np.ndarray) -> int:
    """Unordered pairs of samples that agree on every labeling: a cell of c samples holds
    c (c - 1) / 2, and each of its samples counts c - 1 of them twice over."""
    if len(labelings[0]) == 0:
        return 0
    return int((cell_sizes(*labelings) - 1).sum()) // 2


def label_quality(pseudo_labels: np.ndarray, true_ids: np.ndarray) -> LabelQuality:
    """Scores of ``pseudo_labels`` ``[N]`` (-1 = outlier, in no cluster) against ``true_ids``."""
    pseudo_labels, true_ids = np.asarray(pseudo_labels), np.asarray(true_ids)
    if pseudo_labels.shape != true_ids.shape or pseudo_labels.ndim != 1:
        raise ValueError(f"need two [N] arrays, got {pseudo_labels.shape} and {true_ids.shape}")
    clustered = pseudo_labels >= 0
    together = _same_pairs(pseudo_labels[clustered])
    both = _same_pairs(pseudo_labels[clustered], true_ids[clustered])
    same_id = _same_pairs(true_ids)
    precision = both / together if together else 0.0
    recall = both / same_id if same_id else 0.0
    f_score = 2 * precision * recall / (precision + recall) if both else 0.0
    nmi = normalized_mutual_info_score(true_ids, singletons_for_outliers(pseudo_labels))
    return LabelQuality(precision, recall, f_score, float(nmi))
