"""Test-time options in one place: flip test, query expansion, re-ranking, TLift, the protocol.

A method extracts :class:`~reidgen.eval.features.Features` and says how to compare them
(:class:`Comparison`); :class:`Evaluator` turns one target's features into metrics, with the
target's identities, cameras, times and protocol from its
:class:`~reidgen.eval.target.EvalTarget`. Configured by the ``eval`` config group, e.g.
``eval.rerank=true eval.tlift=true``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from reidgen.eval.features import Features
from reidgen.eval.protocols import PooledProtocol, QueryGalleryProtocol
from reidgen.eval.query_expansion import average_query_expansion
from reidgen.eval.ranking import DistanceFn
from reidgen.eval.rerank import RowsFn, rerank
from reidgen.eval.target import EvalTarget
from reidgen.eval.tlift import tlift_distance

log = logging.getLogger(__name__)

# tlift_distance accepts distances up to 1 + 1e-4 (float rounding); the range check here agrees.
_TLIFT_RANGE_SLACK = 1e-4


@dataclass(frozen=True)
class Comparison:
    """How a method compares two feature records: what the evaluator needs from it.

    :param distance: ``(query, gallery) -> DistanceFn``, the test distance computed a chunk of
        queries at a time (smaller = more similar).
    :param rerank_input: ``(features, num_query) -> RowsFn``, the distances among all N samples
        (queries first) as re-ranking takes them (plain: it squares them), ``rows(start, stop) ->
        Tensor[stop - start, N]``.
    """

    distance: Callable[[Features, Features], DistanceFn]
    rerank_input: Callable[[Features, int], RowsFn]


class Evaluator:
    """Scores one target.

    :param flip: average the features of each image and its mirror image (used by the method
        when it extracts features).
    :param aqe: average query expansion of the plain embedding (the ``"embedding"`` part,
        ``[N, D]``) before ranking; a method without one is a clear error.
    :param rerank: k-reciprocal re-ranking (Zhong et al. 2017) with ``k1``, ``k2`` and
        ``lambda_value``; exact in memory up to ``rerank_memory_gb``, then the top-k path.
    :param tlift: TLift temporal lifting (Liao & Shao, ECCV 2020; :mod:`reidgen.eval.tlift`)
        with ``tlift_tau`` and ``tlift_sigma`` (seconds), ``tlift_k`` and ``tlift_alpha`` (the
        ECCV defaults). It follows the official chain (``docs/methods/qaconv.md`` §7.3): the
        distance is the re-ranked one if ``rerank`` is set, else the method's; TLift lifts the
        scores ``1 - distance``, and the protocol ranks the lifted distance.

    **TLift needs time.** It applies to a target whose every sample has a timestamp. A target
    without them (any timestamp NaN), or with a pooled protocol (VehicleID: the
    protocol draws its own queries each round, while TLift's co-occurrence evidence comes from a
    fixed query set), is evaluated without TLift and a warning is logged: one such target among
    several must not end a run. Whenever ``tlift`` is set, each target's metrics carry
    ``"tlift": True`` or ``False``, so ``metrics.json`` says which numbers are lifted.

    **TLift needs distances in [0, 1]** (scores ``1 - d`` in ``[0, 1]``, what its defaults are
    tuned for). Re-ranked distances and QAConv's ``1 - sigmoid(s / 10)`` are; the cosine distance
    of embedding methods lies in ``[0, 2]``. A distance outside ``[0, 1]`` raises ``ValueError``
    rather than being rescaled: ``1 - d / 2`` would be a score with a mean near 0.5, unlike the
    re-ranked scores the published numbers and the defaults come from. Embedding methods use
    ``eval.rerank=true eval.tlift=true``, the published "+RR+TLift" chain. The check is on the
    values, so a cosine distance that happens to stay within ``[0, 1]`` (correlated features) is
    lifted as it is; its scores ``1 - d`` are large for every pair, the temporal weight then
    dominates the ranking, and the metrics can collapse.

    **Memory.** TLift needs the whole ``[Q, G]`` distance: it is computed a protocol chunk of
    queries at a time into one matrix (float32 at least, so half-precision distances do not
    round the lifted ones into ties), and lifting holds about four ``[Q, G]`` matrices at its
    peak (Market-1501: under 1 GB in float32), which ``rerank_memory_gb`` does not bound.
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
        tlift: bool = False,
        tlift_tau: float = 100.0,
        tlift_sigma: float = 200.0,
        tlift_k: int = 10,
        tlift_alpha: float = 0.2,
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
        self.tlift = tlift
        self.tlift_tau = tlift_tau
        self.tlift_sigma = tlift_sigma
        self.tlift_k = tlift_k
        self.tlift_alpha = tlift_alpha

    def evaluate(
        self, features: Features, target: EvalTarget, comparison: Comparison
    ) -> dict[str, float]:
        """Metrics of one target.

        :param features: ``[N, ...]`` parts, the target's ``num_query`` queries first, then its
            gallery, in the order of ``target``.
        :param target: identities, cameras, timestamps, query count and protocol.
        :param comparison: the method's distance and re-ranking input.

        :returns: The protocol's metrics, plus ``"tlift"`` (bool) when TLift was asked for.

        :raises ValueError: on features whose length differs from the target's, query expansion
            without a plain embedding, re-ranking under a pooled protocol, or TLift on a
            distance outside ``[0, 1]`` (see the class docstring).
        """
        if len(features) != len(target):
            raise ValueError(
                f"{target.name} has {len(target)} images but {len(features)} feature rows"
            )
        protocol, num_query = target.protocol, target.num_query
        pids, camids = target.pids, target.camids
        lift = self.tlift and self._tlift_applies(protocol, target)
        if self.aqe:
            embedding = features.require_embedding("query expansion (eval.aqe)")
            features = features.replace(
                embedding=torch.cat(
                    average_query_expansion(
                        embedding[:num_query], embedding[num_query:], self.aqe_top_k, self.aqe_alpha
                    )
                )
            )
        if protocol.pooled:
            if self.rerank:
                raise ValueError(
                    f"re-ranking needs a fixed query/gallery split; {protocol!r} draws its own"
                )
            metrics = protocol.evaluate_all(comparison.distance(features, features), pids)
        else:
            if self.rerank:
                distance = rerank(
                    comparison.rerank_input(features, num_query),
                    num_query,
                    self.k1,
                    self.k2,
                    self.lambda_value,
                    num_total=len(features),
                    memory_budget=int(self.rerank_memory_gb * 1024**3),
                )
            else:
                distance = comparison.distance(
                    features.rows(slice(None, num_query)), features.rows(slice(num_query, None))
                )
            if lift:
                distance = self._lifted(distance, target)
            metrics = protocol.evaluate(
                distance, pids[:num_query], camids[:num_query], pids[num_query:], camids[num_query:]
            )
        if self.tlift:
            metrics["tlift"] = lift
        return metrics

    def settings(self) -> dict[str, object]:
        """For metrics.json: what the numbers were computed with."""
        return dict(vars(self))

    def _tlift_applies(
        self, protocol: QueryGalleryProtocol | PooledProtocol, target: EvalTarget
    ) -> bool:
        """Whether TLift can run on this target; logs why not when it cannot."""
        timestamps, num_total = target.timestamps, len(target)
        if tuple(timestamps.shape) != (num_total,):
            raise ValueError(
                f"timestamps of {target.name} have shape {tuple(timestamps.shape)}, "
                f"expected ({num_total},)"
            )
        if protocol.pooled:
            reason = f"{protocol!r} draws its own queries, TLift needs a fixed query set"
        elif bool(torch.isnan(timestamps).all()):
            reason = "its samples have no timestamps"
        elif bool(torch.isnan(timestamps).any()):
            reason = f"{int(torch.isnan(timestamps).sum())} of {num_total} samples lack a timestamp"
        else:
            return True
        log.warning("eval.tlift: %s is evaluated without TLift: %s", target.name, reason)
        return False

    def _lifted(self, distance: DistanceFn, target: EvalTarget) -> DistanceFn:
        """The TLift-ed ``[Q, G]`` distance of ``distance``, as a chunk callable over a matrix."""
        num_query, camids, timestamps = target.num_query, target.camids, target.timestamps
        matrix = _materialise(distance, num_query, target.num_gallery, target.protocol.chunk_size)
        if matrix.numel():
            low, high = torch.aminmax(matrix)
            if low < -_TLIFT_RANGE_SLACK or high > 1 + _TLIFT_RANGE_SLACK:
                raise ValueError(
                    f"eval.tlift needs distances in [0, 1], but the distance on {target.name} "
                    f"spans [{float(low):.4g}, {float(high):.4g}] (a cosine distance lies in "
                    "[0, 2]). Set eval.rerank=true (re-ranked distances lie in [0, 1]; the "
                    "published +RR+TLift chain), or use a method whose distance is "
                    "1 - a similarity in [0, 1], such as QAConv's 1 - sigmoid(s / 10)"
                )
        lifted = tlift_distance(
            matrix,
            camids[:num_query],
            timestamps[:num_query],
            camids[num_query:],
            timestamps[num_query:],
            tau=self.tlift_tau,
            sigma=self.tlift_sigma,
            K=self.tlift_k,
            alpha=self.tlift_alpha,
        )
        return lambda start, stop: lifted[start:stop]


def _materialise(distance: DistanceFn, num_rows: int, num_columns: int, chunk_size: int) -> Tensor:
    """The whole ``[num_rows, num_columns]`` distance, computed ``chunk_size`` rows at a time.

    On the chunks' device, in their dtype promoted to at least float32.
    """
    matrix: Tensor | None = None
    for start in range(0, num_rows, chunk_size):
        stop = min(start + chunk_size, num_rows)
        chunk = distance(start, stop)
        if chunk.shape != (stop - start, num_columns):
            raise ValueError(
                f"distance({start}, {stop}) has shape {tuple(chunk.shape)}, "
                f"expected {(stop - start, num_columns)}"
            )
        if matrix is None:
            dtype = torch.promote_types(chunk.dtype, torch.float32)
            matrix = torch.empty(num_rows, num_columns, dtype=dtype, device=chunk.device)
        matrix[start:stop] = chunk
    return matrix if matrix is not None else torch.empty(0, num_columns)
