"""The per-epoch pseudo-label record: numbers from the labels, CSV and PNG written."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from reidgen.clustering.history import EpochLabels, write_history
from reidgen.clustering.pseudo_labels import PseudoLabels


def test_record_counts_clusters_and_scores_against_true_ids(tmp_path: Path) -> None:
    labels = PseudoLabels(np.array([0, 0, 1, 1, -1, 1]), eps=0.6)
    true_ids = np.array([7, 7, 8, 8, 8, 9])
    record = EpochLabels.of(3, labels, true_ids)
    assert (record.epoch, record.clusters, record.kept, record.left_out) == (3, 2, 5, 1)
    # Pairs put together: (0,1), (2,3), (2,5), (3,5); of one identity: (0,1), (2,3). Pairs of
    # one identity overall: (0,1), (2,3), (2,4), (3,4).
    assert record.precision == 2 / 4 and record.recall == 2 / 4 and record.f_score == 0.5
    unscored = EpochLabels.of(4, labels)
    assert unscored.precision is None and unscored.nmi is None

    write_history([record, unscored], tmp_path, "pseudo_labels")
    with open(tmp_path / "pseudo_labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["3", "4"]
    assert float(rows[0]["precision"]) == 0.5 and rows[1]["precision"] == ""
    with Image.open(tmp_path / "pseudo_labels.png") as picture:
        assert picture.width > 500
    write_history([unscored], tmp_path / "counts_only", "pseudo_labels")
    with Image.open(tmp_path / "counts_only" / "pseudo_labels.png") as picture:
        assert picture.width < 600  # one panel: no true identities to score against
