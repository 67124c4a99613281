"""Batch-hard triplet loss (Hermans et al., "In Defense of the Triplet Loss", 2017).

The pieces are public on their own because methods recombine them: AlignedReID mines the
hardest pairs on the global distance and reuses those indices for its local distance, then
applies :func:`triplet_ranking_loss` to the local distances of the same pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Squared distances are clamped to this before sqrt: round-off can make them slightly negative,
# and sqrt'(0) is infinite; the clamp zeroes the gradient of (near-)identical pairs instead.
_MIN_SQUARED_DISTANCE = 1e-12


def pairwise_euclidean(x: Tensor, y: Tensor) -> Tensor:
    """Euclidean (not squared) distances between the rows of ``x [B, D]`` and ``y [M, D]``.

    Returns ``[B, M]``. Uses ``|x|^2 + |y|^2 - 2 x.y`` (one matmul) and always runs in float32
    with autocast off: in float16 the subtraction loses most digits for nearby points.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.float(), y.float()
        squared = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1) - 2.0 * x @ y.T
        return squared.clamp(min=_MIN_SQUARED_DISTANCE).sqrt()


def hard_example_mining(distance: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For every anchor, the farthest positive and the closest negative in the batch.

    :param distance: ``[B, B]`` distances between the batch's samples (anchor rows).
    :param labels: ``[B]`` identity labels.

    :returns: ``(dist_ap [B], dist_an [B], pos_index [B], neg_index [B])``. Positives are the other
        samples with the anchor's label (the anchor itself is not its own positive); ties go to
        the lowest index. An anchor with no positive gets ``dist_ap = -inf`` (max over nothing)
        and one with no negative ``dist_an = +inf``; their index is the anchor itself, so the
        indices are always valid. Gradients flow to the selected entries of ``distance``.
    """
    batch = distance.shape[0]
    own = torch.arange(batch, device=distance.device)
    same = labels[:, None] == labels[None, :]
    is_pos = same & (own[:, None] != own[None, :])
    is_neg = ~same
    with torch.no_grad():
        pos_index = distance.masked_fill(~is_pos, float("-inf")).argmax(dim=1)
        neg_index = distance.masked_fill(~is_neg, float("inf")).argmin(dim=1)
    has_pos, has_neg = is_pos.any(dim=1), is_neg.any(dim=1)
    pos_index = torch.where(has_pos, pos_index, own)
    neg_index = torch.where(has_neg, neg_index, own)
    dist_ap = distance.gather(1, pos_index[:, None]).squeeze(1)
    dist_an = distance.gather(1, neg_index[:, None]).squeeze(1)
    dist_ap = dist_ap.masked_fill(~has_pos, float("-inf"))
    dist_an = dist_an.masked_fill(~has_neg, float("inf"))
    return dist_ap, dist_an, pos_index, neg_index


def triplet_ranking_loss(dist_ap: Tensor, dist_an: Tensor, margin: float | None) -> Tensor:
    """Mean over anchors of ``relu(dist_ap - dist_an + margin)``, or of the soft-margin
    ``softplus(dist_ap - dist_an)`` when ``margin`` is ``None``.

    ``dist_ap, dist_an [B] -> scalar``. Anchors whose distances are not finite (no positive or
    no negative in the batch, see :func:`hard_example_mining`) are left out of the mean rather
    than counted as zero, so the loss scale does not depend on how many of them a batch holds.
    A batch without any valid anchor gives 0 (still attached to the graph).
    """
    valid = torch.isfinite(dist_ap) & torch.isfinite(dist_an)
    gap = dist_ap[valid] - dist_an[valid]
    losses = F.softplus(gap) if margin is None else F.relu(gap + margin)
    return losses.sum() / valid.sum().clamp(min=1)


class BatchHardTripletLoss(nn.Module):
    """Batch-hard triplet loss on euclidean distances.

    ``forward(features [B, D], labels [B]) -> scalar``: every sample is an anchor paired with its
    hardest positive and hardest negative in the batch (:func:`hard_example_mining`); anchors
    lacking either are excluded from the mean (:func:`triplet_ranking_loss`). Batches should come
    from an identity (P x K) sampler so that every anchor has positives.

    :param margin: hinge margin, or ``None`` for the soft-margin (softplus) variant.
    :param normalize: L2-normalise the features first (distances then lie in [0, 2]).
    """

    def __init__(self, margin: float | None = 0.3, normalize: bool = False) -> None:
        super().__init__()
        self.margin = margin
        self.normalize = normalize

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        if self.normalize:
            features = F.normalize(features, dim=1)
        distance = pairwise_euclidean(features, features)
        dist_ap, dist_an, _, _ = hard_example_mining(distance, labels)
        return triplet_ranking_loss(dist_ap, dist_an, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, normalize={self.normalize}"
