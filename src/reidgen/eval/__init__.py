"""Retrieval evaluation in plain tensor code (no Lightning): distances and ranking metrics.

``evaluate_ranking`` takes a ``[Q, G]`` distance matrix, or a callable that computes it a chunk of
queries at a time, and returns CMC rank-k, mAP and mINP under the Market-1501 protocol.
"""

from reidgen.eval.distance import Metric, chunked_distance, pairwise_distance
from reidgen.eval.ranking import DistanceFn, evaluate_ranking

__all__ = ["DistanceFn", "Metric", "chunked_distance", "evaluate_ranking", "pairwise_distance"]
