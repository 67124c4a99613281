"""Reusable losses: label-smoothed cross-entropy and batch-hard triplet."""

from reidgen.losses.cross_entropy import CrossEntropyLabelSmooth
from reidgen.losses.triplet import (
    BatchHardTripletLoss,
    hard_example_mining,
    pairwise_euclidean,
    triplet_ranking_loss,
)

__all__ = [
    "BatchHardTripletLoss",
    "CrossEntropyLabelSmooth",
    "hard_example_mining",
    "pairwise_euclidean",
    "triplet_ranking_loss",
]
