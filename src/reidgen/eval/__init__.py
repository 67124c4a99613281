"""Retrieval evaluation in plain tensor code (no Lightning).

- :func:`evaluate_ranking`: CMC rank-k, mAP and mINP under the Market-1501 protocol, from a
  ``[Q, G]`` distance or a callable that computes it a chunk of queries at a time;
- :mod:`~reidgen.eval.protocols`: Market / VeRi-776 / CUHK03 classic / VehicleID protocols;
- :mod:`~reidgen.eval.rerank`: exact and memory-bounded k-reciprocal re-ranking;
- :mod:`~reidgen.eval.query_expansion`: average query expansion;
- :class:`~reidgen.eval.evaluator.Evaluator`: the test-time options that tie them together.
"""

from reidgen.eval.distance import Metric, chunked_distance, pairwise_distance
from reidgen.eval.ranking import DistanceFn, evaluate_ranking

__all__ = ["DistanceFn", "Metric", "chunked_distance", "evaluate_ranking", "pairwise_distance"]
