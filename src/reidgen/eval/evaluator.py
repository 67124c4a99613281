"""Test-time options in one place: flip test, query expansion, re-ranking, the target's protocol.

The base method extracts and gathers features; :class:`Evaluator` turns one target's features into
metrics. Configured by the ``eval`` config group, e.g. ``eval.rerank=true eval.aqe=true``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from reidgen.eval.protocols import MarketProtocol, PooledProtocol, QueryGalleryProtocol
from reidgen.eval.query_expansion import average_query_expansion
from reidgen.eval.ranking import DistanceFn
from reidgen.eval.rerank import RowsFn, rerank


class Describer(Protocol):
    """What the evaluator needs from a method: its distance, and its distance for re-ranking."""

    def distance(self, query_features: Tensor, gallery_features: Tensor) -> DistanceFn: ...

    def rerank_rows(self, features: Tensor) -> RowsFn: ...


class Evaluator:
    """Scores one target.

    :param flip: average the features of each image and its mirror image (used by the method
        when it extracts features).
    :param aqe: average query expansion on embeddings ([N, D] features) before ranking.
    :param rerank: k-reciprocal re-ranking (Zhong et al. 2017) with ``k1``, ``k2`` and
        ``lambda_value``; exact in memory up to ``rerank_memory_gb``, then the top-k path.
    """

    def __init__(
        self,
        flip: bool = False,
        aqe: bool = False,
        aqe_top_k: int = 5,
        aqe_alpha: float = 3.0,
        rerank: bool = False,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        rerank_memory_gb: float = 2.0,
    ) -> None:
        self.flip = flip
        self.aqe = aqe
        self.aqe_top_k = aqe_top_k
        self.aqe_alpha = aqe_alpha
        self.rerank = rerank
        self.k1 = k1
        self.k2 = k2
        self.lambda_value = lambda_value
        self.rerank_memory_gb = rerank_memory_gb

    def evaluate(
        self,
        method: Describer,
        features: Tensor,
        pids: Tensor,
        camids: Tensor,
        num_query: int,
        protocol: QueryGalleryProtocol | PooledProtocol | None = None,
    ) -> dict[str, float]:
        """Metrics of one target whose ``features`` [N, ...] hold its queries first.

        A pooled protocol (VehicleID) draws its own query/gallery splits from all N samples and
        ignores ``num_query``.
        """
        protocol = protocol or MarketProtocol()
        if self.aqe:
            if features.dim() != 2:
                raise ValueError(
                    f"query expansion needs embeddings [N, D], got features {tuple(features.shape)}"
                )
            features = torch.cat(
                average_query_expansion(
                    features[:num_query], features[num_query:], self.aqe_top_k, self.aqe_alpha
                )
            )
        if protocol.pooled:
            if self.rerank:
                raise ValueError(
                    f"re-ranking needs a fixed query/gallery split; {protocol!r} draws its own"
                )
            return protocol.evaluate_all(method.distance(features, features), pids)
        if self.rerank:
            distance = rerank(
                method.rerank_rows(features),
                num_query,
                self.k1,
                self.k2,
                self.lambda_value,
                num_total=len(features),
                memory_budget=int(self.rerank_memory_gb * 1024**3),
            )
        else:
            distance = method.distance(features[:num_query], features[num_query:])
        return protocol.evaluate(
            distance, pids[:num_query], camids[:num_query], pids[num_query:], camids[num_query:]
        )

    def settings(self) -> dict[str, object]:
        """For metrics.json: what the numbers were computed with."""
        return dict(vars(self))
