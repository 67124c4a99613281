"""QAConv's training losses (``docs/methods/qaconv.md`` §4).

* :class:`ScoreTripletLoss` (QAConv 2.1 / CVPR 2022): batch-hard triplet on the ``[B, B]``
  matching scores, margin 16 in logit units.
* :class:`PairwiseMatchingLoss` (QAConv 2.0): binary cross-entropy on every pair of the batch.
* :class:`ClassMemoryLoss` (QAConv 1.0): every sample matched against a memory holding the latest
  feature map of every class, focal-weighted binary cross-entropy over all classes.

Each returns a :class:`LossOutput` (the loss and a training accuracy for the logs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from reidgen.distributed import world_size
from reidgen.losses import hard_example_mining, triplet_ranking_loss
from reidgen.methods.qaconv.matcher import QAConvMatcher

# Bound on the elements of one correlation block [B * N, chunk * N] of the class-memory scores.
_MEMORY_BLOCK_ELEMENTS = 2**26


@dataclass
class LossOutput:
    """``loss``: scalar to minimise; ``accuracy``: scalar in [0, 1], for logging only."""

    loss: Tensor
    accuracy: Tensor


class ScoreTripletLoss(nn.Module):
    """Batch-hard triplet loss on matching scores (higher = more similar).

    ``forward(scores [B, B], labels [B])``: for every anchor the lowest-scoring positive (itself
    excluded) and the highest-scoring negative, ``relu(s_an - s_ap + margin)``. Anchors whose
    scores are not finite (an fp16 overflow) or who lack a positive or a negative are left out
    of the mean. The shared :func:`~reidgen.losses.hard_example_mining` works on ``-scores``.

    :param margin: in units of the matcher's BN-normalised logits (16 in QAConv 2.1).
    """

    def __init__(self, margin: float = 16.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, scores: Tensor, labels: Tensor) -> LossOutput:
        # float32: the margin and the comparisons must not round in half precision.
        dist_ap, dist_an, _, _ = hard_example_mining(-scores.float(), labels)
        loss = triplet_ranking_loss(dist_ap, dist_an, self.margin)
        valid = torch.isfinite(dist_ap) & torch.isfinite(dist_an)
        correct = (dist_ap <= dist_an) & valid
        accuracy = correct.sum() / valid.sum().clamp(min=1)
        return LossOutput(loss, accuracy.detach())

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class PairwiseMatchingLoss(nn.Module):
    """Binary cross-entropy on every pair of the batch (QAConv 2.0's pairwise matching loss).

    ``forward(scores [B, B], labels [B])``: target 1 for pairs of one class, self-pairs
    included; the loss sums over a row and averages over rows. The accuracy counts anchors whose
    lowest positive score (self excluded) beats their highest negative score.
    """

    def forward(self, scores: Tensor, labels: Tensor) -> LossOutput:
        scores = scores.float()
        same = labels[:, None] == labels[None, :]
        loss = F.binary_cross_entropy_with_logits(scores, same.float(), reduction="none")
        with torch.no_grad():
            dist_ap, dist_an, _, _ = hard_example_mining(-scores, labels)
            valid = torch.isfinite(dist_ap) & torch.isfinite(dist_an)
            accuracy = ((dist_ap < dist_an) & valid).sum() / valid.sum().clamp(min=1)
        return LossOutput(loss.sum(dim=1).mean(), accuracy)


def _last_occurrence(labels: Tensor, num_classes: int) -> Tensor:
    """Positions of the last occurrence of every distinct label in ``[0, num_classes)``:
    ``[U]``, deterministic even where a scatter with repeated indices is not."""
    positions = torch.arange(len(labels), device=labels.device)
    last = torch.full((num_classes,), -1, dtype=positions.dtype, device=labels.device)
    last = last.scatter_reduce(0, labels, positions, reduce="amax")
    return last[last >= 0]


class ClassMemoryLoss(nn.Module):
    """QAConv 1.0's class-memory loss.

    The memory holds one feature map per class, ``[K, D, h, w]``: the most recent training
    sample of that class (overwritten, no momentum; not learned, no gradient). Every batch sample
    is scored against all K entries with the matcher in training mode, one set of BN statistics
    over all ``B x K`` pairs, and the loss is the focal-weighted BCE
    ``sum_k w_ik * BCE(s_ik, [k == y_i])`` averaged over the batch, with ``w = (1 - p)^2`` for the
    true class and ``p^2`` otherwise (``p = sigmoid(s)``, ``gamma = 2``, not detached).

    :param num_classes: ``K``. :param feature_shape: ``(D, h, w)`` of the feature maps.
    :param gamma: focal exponent.
    :param mask_unseen: leave out classes not written yet (QAConv 1.1+); 1.0 (``False``) scores
        them as all-zero maps.

    Under DDP the memory update uses the batches of all processes, so the memory is the same
    everywhere. The correlation is computed a block of classes at a time.
    """

    def __init__(
        self,
        num_classes: int,
        feature_shape: tuple[int, int, int],
        gamma: float = 2.0,
        mask_unseen: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.gamma = gamma
        self.mask_unseen = mask_unseen
        self.register_buffer("memory", torch.zeros(num_classes, *feature_shape))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    def scores(self, features: Tensor, matcher: QAConvMatcher) -> Tensor:
        """``features [B, D, h, w]`` against every memory entry: ``[B, K]`` logits."""
        batch, n = features.shape[0], matcher.num_locations
        chunk = max(1, _MEMORY_BLOCK_ELEMENTS // max(1, batch * n * n))
        memory = self.memory.to(features.dtype)
        maxima = [
            matcher.maxima(features, memory[c : c + chunk]) for c in range(0, len(memory), chunk)
        ]
        a = torch.cat([pair[0] for pair in maxima], dim=1)
        b = torch.cat([pair[1] for pair in maxima], dim=1)
        return matcher.head(a, b)

    def forward(self, features: Tensor, labels: Tensor, matcher: QAConvMatcher) -> LossOutput:
        scores = self.scores(features, matcher).float()
        targets = F.one_hot(labels, self.num_classes).float()
        probability = torch.sigmoid(scores)
        weight = torch.where(targets > 0, 1 - probability, probability).pow(self.gamma)
        loss = F.binary_cross_entropy_with_logits(scores, targets, reduction="none") * weight
        if self.mask_unseen:
            loss = loss * self.seen.to(loss.dtype)
        accuracy = (scores.argmax(dim=1) == labels).float().mean().detach()
        self.update(features.detach(), labels)
        return LossOutput(loss.sum(dim=1).mean(), accuracy)

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Overwrite the memory of ``labels`` with ``features`` (a class's last sample wins)."""
        world = world_size()
        if world > 1:
            all_features = [torch.empty_like(features) for _ in range(world)]
            all_labels = [torch.empty_like(labels) for _ in range(world)]
            dist.all_gather(all_features, features.contiguous())
            dist.all_gather(all_labels, labels.contiguous())
            features, labels = torch.cat(all_features), torch.cat(all_labels)
        keep = _last_occurrence(labels, self.num_classes)
        self.memory[labels[keep]] = features[keep].to(self.memory.dtype)
        self.seen[labels[keep]] = True

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}, mask_unseen={self.mask_unseen}"
