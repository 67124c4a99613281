"""Reusable losses: label-smoothed cross-entropy, batch-hard triplet, domain balance."""

from reidgen.losses.cross_entropy import CrossEntropyLabelSmooth
from reidgen.losses.domain_balance import DomainBalanceLoss
from reidgen.losses.triplet import (
    BatchHardTripletLoss,
    hard_example_mining,
    pairwise_euclidean,
    triplet_ranking_loss,
)

__all__ = [
    "BatchHardTripletLoss",
    "CrossEntropyLabelSmooth",
    "DomainBalanceLoss",
    "hard_example_mining",
    "pairwise_euclidean",
    "triplet_ranking_loss",
]
