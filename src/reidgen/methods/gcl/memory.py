"""GCL's instance memory: one L2-normalised feature per training image, its pseudo labels, the
three-term InfoNCE loss and the momentum update (``docs/methods/gcl.md``, "Contrastive module").

For a batch with original features ``f`` and generated-view features ``g`` (normalised), memory
rows ``n`` of its images and their cluster labels ``y``, each term is a cross-entropy over
``[positive, K negatives] / tau`` with the positive first:

* view invariance: ``<g_i, M[n_i]>``, the generated view against its own image's slot;
* generated-view cluster positive: ``<g_i, M[p]>``, ``p`` a uniform draw from ``y_i``'s cluster;
* original cluster positive: ``<f_i, M[p']>``, an independent draw from the same cluster.

The negatives are ``K`` uniform draws without replacement from the rows whose label differs from
``y_i`` (outliers, ``-1``, included), scored against ``g_i`` in all three terms, as the official
code does (the third term's original-positive / generated-negative asymmetry included). With
fewer than ``K`` such rows, all of them are used. Without generated views (the "memory loss on
originals only" ablation) only the third term is computed, its negatives scored against ``f_i``.

The update writes the original features, not the generated ones: ``M[n] <- normalise(momentum
* M[n] + (1 - momentum) * f)``; the official momentum 0.2 keeps 20 % of the old slot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class InstanceMemory(nn.Module):
    """Memory rows ``features`` ``[N, D]`` and ``labels`` ``[N]`` (buffers: they checkpoint).

    :param num_samples: ``N``, the training images.
    :param num_features: ``D``.
    :param temperature: tau (official 0.04).
    :param num_negatives: K (official 8192).
    :param momentum: weight of the old slot in the update (official 0.2).
    """

    def __init__(
        self,
        num_samples: int,
        num_features: int,
        temperature: float = 0.04,
        num_negatives: int = 8192,
        momentum: float = 0.2,
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.temperature = temperature
        self.num_negatives = num_negatives
        self.momentum = momentum
        self.register_buffer("features", torch.zeros(num_samples, num_features))
        self.register_buffer("labels", torch.full((num_samples,), -1, dtype=torch.long))

    @torch.no_grad()
    def initialise(self, features: Tensor) -> None:
        """Sets every row from ``features`` ``[N, D]`` (normalised here)."""
        if features.shape != self.features.shape:
            raise ValueError(
                f"memory holds {tuple(self.features.shape)} features, got {tuple(features.shape)}"
            )
        self.features.copy_(F.normalize(features.float(), dim=1))

    @torch.no_grad()
    def set_labels(self, labels: Tensor) -> None:
        """The epoch's pseudo labels ``[N]``, ``-1`` = outlier."""
        self.labels.copy_(torch.as_tensor(labels, dtype=torch.long))

    @torch.no_grad()
    def update(self, features: Tensor, indices: Tensor) -> None:
        """Moves rows ``indices`` ``[B]`` towards the original features ``[B, D]``."""
        mixed = self.momentum * self.features[indices] + (1 - self.momentum) * F.normalize(
            features.detach().float(), dim=1
        )
        self.features[indices] = F.normalize(mixed, dim=1)

    def prototypes(self) -> Tensor:
        """GCL+'s cluster prototypes ``[C, D]``: the mean memory feature of each cluster ``0..C-1``
        (not re-normalised)."""
        num_clusters = int(self.labels.max()) + 1
        if num_clusters <= 0:
            raise RuntimeError("no clusters: set_labels() with at least one cluster first")
        kept = self.labels >= 0
        sums = torch.zeros(num_clusters, self.features.shape[1], device=self.features.device)
        sums.index_add_(0, self.labels[kept], self.features[kept])
        counts = torch.bincount(self.labels[kept], minlength=num_clusters).clamp(min=1)
        return sums / counts[:, None]

    def _draw(self, allowed: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
        """``count`` distinct uniform draws of column indices per row where ``allowed`` ``[B, N]``
        is True; ``[B, count]``, ``-1`` where a row has fewer allowed columns."""
        scores = torch.rand(allowed.shape, generator=generator, device=allowed.device)
        scores = scores.masked_fill(~allowed, -1.0)
        values, indices = scores.topk(min(count, allowed.shape[1]), dim=1)
        return indices.masked_fill(values < 0, -1)

    def loss(
        self,
        original: Tensor,
        generated: Tensor | None,
        indices: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The contrastive loss of a batch: ``original`` ``[B, D]`` features of the images,
        ``generated`` ``[B, D]`` of their generated views (or None), ``indices`` ``[B]`` their
        memory rows; every image must be in a cluster. Random draws use ``generator``."""
        labels = self.labels[indices]
        if bool((labels < 0).any()):
            raise ValueError("a batch image is an outlier (label -1); outliers are not trained")
        original = F.normalize(original, dim=1)
        same = labels[:, None] == self.labels[None, :]
        negatives = self._draw(~same, self.num_negatives, generator)
        # Two independent draws (they may coincide); an image's own row is always in its cluster.
        generated_positive = self._draw(same, 1, generator)[:, 0]
        original_positive = self._draw(same, 1, generator)[:, 0]

        anchor = original if generated is None else F.normalize(generated, dim=1)
        negative_logits = torch.einsum(
            "bd,bkd->bk", anchor, self.features[negatives.clamp(min=0)].to(anchor.dtype)
        ).masked_fill(negatives < 0, float("-inf"))

        def info_nce(query: Tensor, rows: Tensor) -> Tensor:
            positive = (query * self.features[rows].to(query.dtype)).sum(1, keepdim=True)
            logits = torch.cat([positive, negative_logits], dim=1) / self.temperature
            return F.cross_entropy(logits, torch.zeros_like(rows))

        loss = info_nce(original, original_positive)
        if generated is not None:
            loss = loss + info_nce(anchor, indices) + info_nce(anchor, generated_positive)
        return loss
