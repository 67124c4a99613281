"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), exact and memory-bounded.

The result equals the reference implementation (the numpy ``re_ranking`` of the official
repository, copied by torchreid and fast-reid) to float32 tolerance, with the same rankings; see
``docs/evaluation.md`` §4.3 for its exact steps. In short, over all N = Q + G samples (queries
first, and queries are part of the neighbourhood graph):

1. ``Dn[i] = d[i]**2 / max_j d[i, j]**2``: the reference squares its input and divides each row by
   its maximum over all N columns;
2. k-reciprocal sets ``R(i, k1)`` from each sample's ``k1 + 1`` nearest (itself included), expanded
   by ``R(c, round(k1 / 2))`` of a member ``c`` when more than 2/3 of that set is already in
   ``R(i, k1)``;
3. ``V[i, j] = exp(-Dn[i, j])`` on the expanded set, rows normalised to sum 1 (sparse);
4. local query expansion: ``V[i]`` becomes the mean of ``V`` over i's ``k2`` nearest;
5. Jaccard distance ``J = 1 - s / (2 - s)`` with ``s[i, j] = sum_k min(V[i, k], V[j, k])``;
6. ``final = (1 - lambda) * J + lambda * Dn`` for query rows and gallery columns.

**Input contract.** Every function here takes *plain* distances (smaller = more similar,
non-negative), e.g. the Euclidean distance, not its square: the algorithm squares them itself, so
squared Euclidean input would act as d**4 (torchreid's mistake, ``docs/evaluation.md`` §4.5). A
cosine distance should be given as the Euclidean distance of L2-normalised features,
``sqrt(2 - 2 cos)`` (:func:`rerank_features` with ``metric="cosine"`` does this). Any other
distance works too, e.g. a method's learned one; it is used as given, row ``i`` defining the
neighbours of sample ``i``. The matrix should be symmetric: the reference normalises by column
maxima and transposes, which equals the row-wise normalisation used here only for symmetric input.

Two paths give the same numbers: :func:`k_reciprocal_rerank` holds the ``[N, N]`` matrix (memory
``~2 N**2`` floats); :func:`rerank_topk` streams rows of the distance once, keeps each sample's
nearest ``candidates`` (memory ``O(N * k)``) and returns a chunked distance function whose
``[Q, G]`` result never exists whole. :func:`rerank` picks one by a memory budget, and
:func:`rerank_features` re-ranks embeddings. Given embeddings as :class:`FeatureRows` instead of a
plain callable, the top-k path computes each symmetric block of the distance once and keeps each
block's candidates by a running threshold instead of sorting whole rows (at MSMT17 size, 11,659 +
82,161 2048-d features, the distance products are most of the cost; ``docs/evaluation.md`` §4.3).

The sparse encoding (:class:`JaccardGraph`), the block scan (:func:`scan_blocks`) and the
neighbour lookup (:func:`near_lookup`) also serve the clustering of unlabelled data
(:mod:`reidgen.clustering.jaccard`), whose Jaccard distance differs only in its details.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from reidgen.eval.ranking import DistanceFn
from reidgen.progress import progress

RowsFn = Callable[[int, int], Tensor]
"""``rows(start, stop) -> Tensor[stop - start, N]``: plain distances of samples ``start:stop`` to
all N samples (queries first)."""

PairValues = Callable[[int, int, Tensor], Tensor]
"""``values(start, stop, cols [C, L]) -> Tensor[C, L]``: ``Dn`` of rows ``start:stop`` at the
given columns, NaN where unknown."""

DEFAULT_MEMORY_BUDGET = 2 * 1024**3
"""Bytes the exact path may use before :func:`rerank` switches to the top-k path."""

_BLOCK = 1024  # rows per block in the O(N * k**3) neighbour-set steps; bounds their temporaries

DISTANCE_BLOCK = 4096
"""Rows and columns of one block of :class:`FeatureRows` distances (64 MB in float32): large
enough for the matrix product to run at full speed, small enough to stay far below the budget."""

_PAIR_CHUNK = 4096  # pairs per batch in FeatureRows.pair_squared; bounds its [M, D] temporaries

# The bar of the top-k path's pass over the distance, most of re-ranking's time at scale.
RERANK_SCAN = "re-ranking: nearest neighbours"


class FeatureRows:
    """Plain Euclidean distances among embeddings, as a :data:`RowsFn` that re-ranking can see into.

    Called like any ``rows(start, stop)``; :func:`rerank_topk` recognises it and computes the
    distance in symmetric blocks from the features (each pair once), which a plain callable cannot
    offer. The self-distance is exactly 0, as for the true distance.

    :param features: ``[N, D]`` embeddings (queries first), used in float32.

    :raises ValueError: on features that are not a finite ``[N, D]`` matrix.
    """

    def __init__(self, features: Tensor) -> None:
        if features.dim() != 2:
            raise ValueError(f"features must be [N, D], got {tuple(features.shape)}")
        self.features = features.float()
        # A block at a time: a whole-matrix temporary would be as large as the features.
        self.norms = torch.cat(
            [
                self.features[start : start + DISTANCE_BLOCK].square().sum(dim=1)
                for start in range(0, len(features), DISTANCE_BLOCK)
            ]
        )  # [N]
        if not bool(torch.isfinite(self.norms).all()):
            raise ValueError("features must be finite to re-rank them (NaN or inf found)")

    def __len__(self) -> int:
        return len(self.features)

    def __call__(self, start: int, stop: int) -> Tensor:
        squared = self.squared(start, stop, 0, len(self)).clamp_min_(0.0)
        own = torch.arange(stop - start, device=squared.device)
        squared[own, own + start] = 0.0
        return squared.sqrt_()

    def squared(
        self,
        row_start: int,
        row_stop: int,
        col_start: int,
        col_stop: int,
        out: Tensor | None = None,
    ) -> Tensor:
        """``[R, C]`` squared distances of rows ``row_start:row_stop`` to columns
        ``col_start:col_stop``, ``|a|^2 + |b|^2 - 2 a.b`` (one matrix product, not clamped).

        :param out: a contiguous ``[R, C]`` float32 tensor to write into (reused across blocks,
            it spares allocating and faulting in a fresh 64 MB buffer for each).
        """
        out = torch.addmm(
            self.norms[row_start:row_stop, None],
            self.features[row_start:row_stop],
            self.features[col_start:col_stop].T,
            alpha=-2.0,
            out=out,
        )
        return out.add_(self.norms[col_start:col_stop])

    def pair_squared(self, row_ids: Tensor, col_ids: Tensor) -> Tensor:
        """``[M]`` squared distances (clamped at 0) of the pairs ``(row_ids[m], col_ids[m])``."""
        out = torch.empty(len(row_ids), device=self.features.device)
        for start in range(0, len(row_ids), _PAIR_CHUNK):
            rows = row_ids[start : start + _PAIR_CHUNK]
            cols = col_ids[start : start + _PAIR_CHUNK]
            dot = (self.features[rows] * self.features[cols]).sum(dim=1)
            out[start : start + _PAIR_CHUNK] = self.norms[rows] + self.norms[cols] - 2.0 * dot
        return out.clamp_min_(0.0).masked_fill_(row_ids == col_ids, 0.0)


def k_reciprocal_rerank(
    original: Tensor,
    num_query: int,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    chunk_size: int = 256,
) -> Tensor:
    """Re-rank with the whole distance matrix in memory (the reference algorithm, vectorised).

    :param original: ``[N, N]`` plain (not squared) distances among all samples, the ``num_query``
        queries first, then the gallery; symmetric, non-negative (see the module docstring).
    :param num_query: Q, the number of query rows.
    :param k1, k2, lambda_value: the paper's parameters (defaults 20, 6, 0.3).
    :param chunk_size: queries per Jaccard chunk; bounds the temporaries to ``O(chunk_size * N)``.

    :returns: ``[Q, G]`` float32 re-ranked distances, G = N - Q.

    Memory: ``original`` plus one normalised ``[N, N]`` float32 copy.
    """
    if original.dim() != 2 or original.shape[0] != original.shape[1]:
        raise ValueError(f"original must be a square [N, N] matrix, got {tuple(original.shape)}")
    num_total = original.shape[0]
    _check_parameters(num_query, num_total, k1, k2, lambda_value, chunk_size)
    _check_distances(original)
    dn = _normalise(original)
    ranks, _ = _nearest(dn, _ranks_needed(k1, k2, num_total))

    def values(start: int, stop: int, cols: Tensor) -> Tensor:
        return dn[start:stop].gather(1, cols)

    graph = JaccardGraph(ranks, values, None, num_query, k1, k2)
    final = torch.empty(num_query, num_total - num_query, device=dn.device)
    for start in range(0, num_query, chunk_size):
        stop = min(start + chunk_size, num_query)
        final[start:stop] = _combine(
            graph.jaccard(start, stop), dn[start:stop, num_query:], lambda_value
        )
    return final


def rerank_topk(
    distance_rows: RowsFn,
    num_query: int,
    num_total: int,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    chunk_size: int = 256,
    candidates: int | None = None,
) -> DistanceFn:
    """Re-rank in ``O(N * k)`` memory from one pass over the rows of the distance.

    The pass keeps, for every sample, its row maximum and its ``candidates`` nearest neighbours
    with their distances. The expanded k-reciprocal sets may contain a few samples beyond that
    list (neighbours of neighbours); their rows are fetched again, so the result stays exact.
    The query rows are fetched once more, a chunk at a time, for the ``lambda * Dn`` term.

    :param distance_rows: ``rows(start, stop) -> Tensor[stop - start, N]`` plain (not squared)
        distances among all samples, queries first (see the module docstring); a
        :class:`FeatureRows` is read in symmetric blocks instead of rows.
    :param num_query: Q; num_total: N = Q + G.
    :param k1, k2, lambda_value: the paper's parameters (defaults 20, 6, 0.3).
    :param chunk_size: rows per call of ``distance_rows``; memory ``O(chunk_size * N)``.
    :param candidates: neighbours kept per sample (default ``2 * (k1 + 1)``); more means fewer rows
        fetched twice and more memory. At least ``max(k1 + 1, k2)`` are kept.

    :returns: ``distance(start, stop) -> Tensor[stop - start, G]``: re-ranked distances of queries
        ``start:stop`` (float32), for :func:`~reidgen.eval.evaluate_ranking`.
    """
    _check_parameters(num_query, num_total, k1, k2, lambda_value, chunk_size)
    needed = _ranks_needed(k1, k2, num_total)
    kept = min(num_total, max(needed, 2 * (k1 + 1) if candidates is None else candidates))
    if isinstance(distance_rows, FeatureRows):
        if len(distance_rows) != num_total:
            raise ValueError(f"num_total={num_total} but the features have {len(distance_rows)}")
        source = distance_rows
        ranks, dn_near, row_max = scan_blocks(source, kept, DISTANCE_BLOCK, RERANK_SCAN)

        def missing(row_ids: Tensor, col_ids: Tensor) -> Tensor:
            return source.pair_squared(row_ids, col_ids).div_(row_max[row_ids])

        def query_dn(start: int, stop: int) -> Tensor:
            squared = source.squared(start, stop, num_query, num_total).clamp_min_(0.0)
            return squared.div_(row_max[start:stop, None])

    else:
        rows = _checked_rows(distance_rows, num_total)
        ranks, dn_near, row_max = _scan(rows, num_total, kept, chunk_size)

        def missing(row_ids: Tensor, col_ids: Tensor) -> Tensor:
            return _fetch_pairs(rows, row_max, row_ids, col_ids, chunk_size)

        def query_dn(start: int, stop: int) -> Tensor:
            dn = rows(start, stop).square().float().div_(row_max[start:stop, None])
            return dn[:, num_query:]

    graph = JaccardGraph(ranks[:, :needed], near_lookup(ranks, dn_near), missing, num_query, k1, k2)

    def distance(start: int, stop: int) -> Tensor:
        if not 0 <= start < stop <= num_query:
            raise ValueError(f"query range {start}:{stop} outside 0:{num_query}")
        return _combine(graph.jaccard(start, stop), query_dn(start, stop), lambda_value)

    return distance


def rerank(
    distance: Tensor | RowsFn,
    num_query: int,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    num_total: int | None = None,
    chunk_size: int = 256,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> DistanceFn:
    """Re-rank exactly in memory when it fits ``memory_budget``, else with the top-k path.

    Both paths give the same distances (to float tolerance); the exact one holds two ``[N, N]``
    float32 matrices (the input and its normalised copy), which is what is compared with the
    budget, and is faster for small N; the top-k one needs ``O(N * k + chunk_size * N)``.

    :param distance: ``[N, N]`` plain distances among all samples (queries first), or a
        ``rows(start, stop)`` callable (then ``num_total`` is required); see the module
        docstring for the contract.
    :param num_query: Q.
    :param k1, k2, lambda_value: the paper's parameters.
    :param num_total: N, needed only with a callable.
    :param chunk_size: rows per chunk in either path.
    :param memory_budget: bytes the exact path may use.

    :returns: ``distance(start, stop) -> Tensor[stop - start, G]`` for
        :func:`~reidgen.eval.evaluate_ranking`.
    """
    if isinstance(distance, Tensor):
        if num_total is not None and num_total != distance.shape[0]:
            raise ValueError(f"num_total={num_total} but distance has {distance.shape[0]} rows")
        num_total = distance.shape[0]
        matrix = distance
        rows: RowsFn = lambda start, stop: matrix[start:stop]  # noqa: E731
    elif num_total is None:
        raise ValueError("num_total is required when distance is a callable")
    else:
        rows = distance
    if exact_memory_bytes(num_total) > memory_budget:
        return rerank_topk(rows, num_query, num_total, k1, k2, lambda_value, chunk_size=chunk_size)
    if not isinstance(distance, Tensor):
        matrix = _gather_rows(_checked_rows(distance, num_total), num_total, chunk_size)
    final = k_reciprocal_rerank(matrix, num_query, k1, k2, lambda_value, chunk_size=chunk_size)
    return lambda start, stop: final[start:stop]


def rerank_features(
    query_features: Tensor,
    gallery_features: Tensor,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    chunk_size: int = 256,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> DistanceFn:
    """Re-rank embeddings, computing the distance rows chunk-wise from the features.

    :param query_features: ``[Q, D]``; gallery_features: ``[G, D]``.
    :param metric: ``"euclidean"``: plain Euclidean distance (the reference's intended input);
        ``"cosine"``: Euclidean distance of L2-normalised features, ``sqrt(2 - 2 cos)``, so
        the squaring inside the algorithm yields ``2 - 2 cos`` (it ranks like cosine).
    :param k1, k2, lambda_value, chunk_size, memory_budget: as in :func:`rerank`.

    :returns: ``distance(start, stop) -> Tensor[stop - start, G]`` for
        :func:`~reidgen.eval.evaluate_ranking`.
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"unknown metric {metric!r}, expected 'euclidean' or 'cosine'")
    features = torch.cat([query_features, gallery_features])
    if metric == "cosine":
        features = F.normalize(features, dim=1)
    rows = FeatureRows(features)
    return rerank(
        rows,
        len(query_features),
        k1,
        k2,
        lambda_value,
        num_total=len(features),
        chunk_size=chunk_size,
        memory_budget=memory_budget,
    )


def near_lookup(ranks: Tensor, near_values: Tensor) -> PairValues:
    """:data:`PairValues` from each sample's kept neighbours: the value where a (row, column)
    pair is among them, NaN elsewhere.

    :param ranks: ``[N, K]`` kept neighbours of every sample; near_values: ``[N, K]`` their values.
    """
    kept = ranks.shape[1]
    # Sorted by column, so a (row, column) pair is found by binary search.
    near_cols, order = ranks.sort(dim=1)
    sorted_values = near_values.gather(1, order)

    def values(start: int, stop: int, cols: Tensor) -> Tensor:
        sorted_cols = near_cols[start:stop]
        pos = torch.searchsorted(sorted_cols, cols).clamp_max(kept - 1)
        found = sorted_cols.gather(1, pos) == cols
        return torch.where(found, sorted_values[start:stop].gather(1, pos), torch.nan)

    return values


def exact_memory_bytes(num_total: int) -> int:
    """Bytes of the two ``[N, N]`` float32 matrices the exact path holds."""
    return 2 * 4 * num_total * num_total


class JaccardGraph:
    """The query-expanded encodings V of all samples, kept sparse, and their Jaccard distances.

    :param ranks: ``[N, K]`` nearest neighbours of every sample, nearest first,
        ``K = min(N, max(k1 + 1, k2))``.
    :param values: ``Dn`` at (row, column) pairs, NaN where unknown (:data:`PairValues`).
    :param missing: ``(rows [M], cols [M]) -> Dn [M]`` for the unknown pairs; None if there are
        none.
    :param num_query: rows that are queries; the Jaccard distances are to the others (0: every
        sample is both, as for clustering).
    :param near_count: neighbours (self included) from which ``R(i, k1)`` is taken: ``k1 + 1`` in
        re-ranking (default), ``k1`` in the clustering of SpCL and DomainMix.
    """

    def __init__(
        self,
        ranks: Tensor,
        values: PairValues,
        missing: Callable[[Tensor, Tensor], Tensor] | None,
        num_query: int,
        k1: int,
        k2: int,
        near_count: int | None = None,
    ) -> None:
        num_total = ranks.shape[0]
        near_count = k1 + 1 if near_count is None else near_count
        row_ptr, cols, vals = _encode(ranks, values, missing, k1, near_count)
        if k2 != 1:  # as in the reference; with k2 = 1 the mean could pick a tied non-self row
            row_ptr, cols, vals = _expand_locally(row_ptr, cols, vals, ranks[:, :k2])
        self.num_query, self.num_gallery = num_query, num_total - num_query
        self.row_ptr, self.cols, self.vals = row_ptr, cols, vals
        self.col_ptr, self.col_rows, self.col_vals = _gallery_columns(
            row_ptr, cols, vals, num_query, num_total
        )

    def jaccard(self, start: int, stop: int) -> Tensor:
        """``[stop - start, G]`` Jaccard distances of queries ``start:stop`` to the gallery (of
        any samples ``start:stop`` to all N when ``num_query`` is 0)."""
        lo, hi = int(self.row_ptr[start]), int(self.row_ptr[stop])
        query = _owners(self.row_ptr[start : stop + 1].diff())  # [E] local query of each entry
        cols, vals = self.cols[lo:hi], self.vals[lo:hi]
        # The inverted index: every gallery row that shares column k with the query.
        col_start = self.col_ptr[cols]
        owner, pos = _segments(col_start, self.col_ptr[cols + 1] - col_start)
        shared = torch.minimum(vals[owner], self.col_vals[pos])
        flat = query[owner] * self.num_gallery + self.col_rows[pos]
        total = torch.zeros((stop - start) * self.num_gallery, device=vals.device)
        total.index_add_(0, flat, shared)
        total = total.view(stop - start, self.num_gallery)
        # Rows of V sum to 1, so sum(max) = 2 - sum(min); in place, as [chunk, G] is large.
        union = total.neg().add_(2.0)
        return total.div_(union).neg_().add_(1.0)


def _encode(
    ranks: Tensor,
    values: PairValues,
    missing: Callable[[Tensor, Tensor], Tensor] | None,
    k1: int,
    near_count: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sparse V: Gaussian weights on the expanded k-reciprocal sets, rows summing to 1.

    :returns: CSR ``row_ptr [N + 1]``, ``cols [nnz]`` (sorted within rows), ``vals [nnz]`` float32.
    """
    num_total = ranks.shape[0]
    near = ranks[:, : min(near_count, num_total)]
    half = ranks[:, : min(round(k1 / 2) + 1, num_total)]  # round half to even, like numpy.around
    near_recip, half_recip = _reciprocal(near), _reciprocal(half)
    rows, cols, dn = [], [], []
    for start in range(0, num_total, _BLOCK):
        stop = min(start + _BLOCK, num_total)
        ids, keep = _expanded_sets(near, near_recip, half, half_recip, start, stop)
        block_dn = values(start, stop, ids.clamp_max(num_total - 1))
        rows.append(torch.arange(start, stop, device=ids.device)[:, None].expand_as(ids)[keep])
        cols.append(ids[keep])
        dn.append(block_dn[keep])
    rows_t, cols_t, dn_t = torch.cat(rows), torch.cat(cols), torch.cat(dn)
    unknown = torch.isnan(dn_t)
    if unknown.any():
        if missing is None:
            raise RuntimeError("neighbour distance unavailable")  # a bug, not a user error
        dn_t[unknown] = missing(rows_t[unknown], cols_t[unknown]).to(dn_t.dtype)
    weights = torch.exp(-dn_t)
    sums = torch.zeros(num_total, dtype=torch.float64, device=weights.device)
    sums.index_add_(0, rows_t, weights.double())
    vals = weights / sums.float()[rows_t]
    return _row_pointers(rows_t, num_total), cols_t, vals


def _expanded_sets(
    near: Tensor, near_recip: Tensor, half: Tensor, half_recip: Tensor, start: int, stop: int
) -> tuple[Tensor, Tensor]:
    """Expanded k-reciprocal sets of samples ``start:stop``, as padded sorted rows of ids.

    :param near, near_recip: ``[N, k1 + 1]`` neighbours and whether each is k1-reciprocal;
    :param half, half_recip: the same for ``round(k1 / 2) + 1`` neighbours.

    :returns: ``ids [C, L]`` sorted per row (padding = N) and ``keep [C, L]``, true once per member.
    """
    num_total = near.shape[0]
    members, member_ok = near[start:stop], near_recip[start:stop]  # R(i, k1), [C, n1]
    cand, cand_ok = half[members], half_recip[members]  # R(c, k1/2) of each member c, [C, n1, nh]
    in_members = (cand[..., None] == members[:, None, None, :]) & member_ok[:, None, None, :]
    overlap = (in_members.any(-1) & cand_ok).sum(-1)  # [C, n1]
    size = cand_ok.sum(-1)
    # The reference's float test "overlap > 2/3 * size", kept in float64 to match it exactly.
    grow = member_ok & (overlap.double() > 2.0 / 3.0 * size.double())
    ids = (
        torch.cat(
            [
                members.masked_fill(~member_ok, num_total),
                cand.masked_fill(~(cand_ok & grow[..., None]), num_total).flatten(1),
            ],
            dim=1,
        )
        .sort(dim=1)
        .values
    )
    first = torch.ones_like(ids, dtype=torch.bool)
    first[:, 1:] = ids[:, 1:] != ids[:, :-1]
    return ids, first & (ids < num_total)


def _reciprocal(lists: Tensor) -> Tensor:
    """``[N, n]`` bool: is row i among the first n neighbours of its neighbour ``lists[i, a]``."""
    out = torch.empty_like(lists, dtype=torch.bool)
    for start in range(0, lists.shape[0], _BLOCK):
        stop = min(start + _BLOCK, lists.shape[0])
        own = torch.arange(start, stop, device=lists.device)[:, None, None]
        out[start:stop] = (lists[lists[start:stop]] == own).any(-1)
    return out


def _expand_locally(
    row_ptr: Tensor, cols: Tensor, vals: Tensor, neighbours: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Local query expansion: row i becomes the mean of the V rows of ``neighbours[i]`` (CSR)."""
    num_total, count = neighbours.shape
    out_rows, out_cols, out_vals = [], [], []
    for start in range(0, num_total, _BLOCK):
        stop = min(start + _BLOCK, num_total)
        source = neighbours[start:stop].reshape(-1)
        owner, pos = _segments(row_ptr[source], row_ptr[source + 1] - row_ptr[source])
        # One key per (row, column); unique sorts them row-major, which CSR needs.
        keys = torch.div(owner, count, rounding_mode="floor") * num_total + cols[pos]
        unique, inverse = torch.unique(keys, return_inverse=True)
        sums = torch.zeros(len(unique), dtype=torch.float64, device=vals.device)
        sums.index_add_(0, inverse, vals[pos].double())
        out_rows.append(torch.div(unique, num_total, rounding_mode="floor") + start)
        out_cols.append(unique % num_total)
        out_vals.append((sums / count).float())
    rows = torch.cat(out_rows)
    return _row_pointers(rows, num_total), torch.cat(out_cols), torch.cat(out_vals)


def _gallery_columns(
    row_ptr: Tensor, cols: Tensor, vals: Tensor, num_query: int, num_total: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The inverted index of V restricted to gallery rows (CSC): which gallery rows use column k.

    :returns: ``col_ptr [N + 1]``, ``rows [nnz_g]`` (gallery-local, 0..G-1), ``vals [nnz_g]``.
    """
    start = int(row_ptr[num_query])
    rows = _owners(row_ptr[num_query:].diff())  # gallery-local row of each entry
    gallery_cols, order = cols[start:].sort(stable=True)
    col_ptr = _row_pointers(gallery_cols, num_total)
    return col_ptr, rows[order], vals[start:][order]


def _scan(
    rows: RowsFn, num_total: int, kept: int, chunk_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One pass over all rows: nearest ``kept`` neighbours, their ``Dn`` and each row's max.

    :returns: ``ranks [N, kept]`` (int64, nearest first), ``dn [N, kept]`` float32, ``row_max [N]``
        (of the squared distances, the normaliser of ``Dn``).
    """
    ranks, dn_near, row_max = [], [], []
    with progress(description=RERANK_SCAN, total=num_total, unit="row", leave=False) as bar:
        for start in range(0, num_total, chunk_size):
            stop = min(start + chunk_size, num_total)
            squared = rows(start, stop).square().float()
            top = squared.amax(dim=1)
            squared.div_(top[:, None])
            chunk_ranks, chunk_dn = _nearest(squared, kept)
            ranks.append(chunk_ranks)
            dn_near.append(chunk_dn)
            row_max.append(top)
            bar.update(stop - start)
    return torch.cat(ranks), torch.cat(dn_near), torch.cat(row_max)


def scan_blocks(
    source: FeatureRows, kept: int, block_size: int, description: str
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_scan` from features: every symmetric block of the distance computed once.

    Each block serves its rows and, transposed, its columns. Diagonal blocks come first and give
    every sample ``kept`` candidates; after that only entries below a row's current ``kept``-th
    smallest can enter its list, a comparison and a short list of survivors per block instead of
    a sort of every row (at MSMT17 size a sort costs about a third of the matrix product).

    :param description: the name of the progress bar over the blocks.
    :returns: as :func:`_scan`.
    """
    num_total = len(source)
    device = source.features.device
    bounds = _even_blocks(num_total, block_size)
    best = torch.full((num_total, kept), torch.inf, device=device)  # squared, ascending per row
    best_cols = torch.full((num_total, kept), num_total, dtype=torch.long, device=device)
    row_max = torch.zeros(num_total, device=device)
    storage = torch.empty(max(stop - start for start, stop in bounds) ** 2, device=device)

    def squared(start: int, stop: int, col_start: int, col_stop: int) -> Tensor:
        out = storage[: (stop - start) * (col_stop - col_start)].view(stop - start, -1)
        return source.squared(start, stop, col_start, col_stop, out=out)

    blocks = len(bounds) * (len(bounds) + 1) // 2
    with progress(description=description, total=blocks, unit="block", leave=False) as bar:
        for start, stop in bounds:
            block = squared(start, stop, start, stop).clamp_min_(0.0).fill_diagonal_(0.0)
            row_max[start:stop] = block.amax(dim=1)
            count = min(kept, stop - start)
            values, cols = torch.topk(block, count, dim=1, largest=False, sorted=True)
            best[start:stop, :count], best_cols[start:stop, :count] = values, cols + start
            bar.update()
        for index, (start, stop) in enumerate(bounds):
            for col_start, col_stop in bounds[index + 1 :]:
                block = squared(start, stop, col_start, col_stop)
                torch.maximum(row_max[start:stop], block.amax(dim=1), out=row_max[start:stop])
                torch.maximum(
                    row_max[col_start:col_stop], block.amax(dim=0), out=row_max[col_start:col_stop]
                )
                rows, cols = torch.nonzero(block < best[start:stop, -1:], as_tuple=True)
                _merge_candidates(
                    best, best_cols, rows + start, cols + col_start, block[rows, cols]
                )
                rows, cols = torch.nonzero(block < best[col_start:col_stop, -1], as_tuple=True)
                _merge_candidates(
                    best, best_cols, cols + col_start, rows + start, block[rows, cols]
                )
                bar.update()
    _check_row_maxima(row_max)
    ranks, order = best_cols.sort(dim=1)  # ties by column, then by value, as _nearest orders them
    values, by_value = best.gather(1, order).clamp_min_(0.0).sort(dim=1, stable=True)
    return ranks.gather(1, by_value), values.div_(row_max[:, None]), row_max


def _merge_candidates(
    best: Tensor, best_cols: Tensor, rows: Tensor, cols: Tensor, values: Tensor
) -> None:
    """Insert candidate entries into the per-row lists of the smallest values, in place.

    :param best: ``[N, K]`` values, ascending per row; best_cols: their columns.
    :param rows, cols, values: ``[M]`` candidates, no (row, column) already in the lists.
    """
    if len(rows) == 0:
        return
    kept = best.shape[1]
    affected, counts = torch.unique(rows, return_counts=True)
    all_values = torch.cat([best[affected].flatten(), values.clamp_min(0.0)])
    all_cols = torch.cat([best_cols[affected].flatten(), cols])
    all_rows = torch.cat([affected.repeat_interleave(kept), rows])
    # Non-negative float32 values (inf included) order like their bit patterns, so one integer
    # key sorts by row, then by value; stable, so earlier entries win ties.
    key = (all_rows << 31) | all_values.view(torch.int32).long()
    order = torch.sort(key, stable=True).indices
    lengths = counts + kept
    owner = _owners(lengths)
    rank = torch.arange(len(order), device=rows.device) - (lengths.cumsum(0) - lengths)[owner]
    keep = rank < kept
    best[affected[owner[keep]], rank[keep]] = all_values[order[keep]]
    best_cols[affected[owner[keep]], rank[keep]] = all_cols[order[keep]]


def _even_blocks(num_total: int, block_size: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` covering ``0:num_total`` in blocks of at most ``block_size``, of
    nearly equal length (no small last block, whose candidates would be few)."""
    count = -(-num_total // block_size)
    edges = [round(i * num_total / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _fetch_pairs(
    rows: RowsFn, row_max: Tensor, row_ids: Tensor, col_ids: Tensor, chunk_size: int
) -> Tensor:
    """``Dn`` at given pairs by fetching the rows again, at most ``chunk_size`` rows per call.

    :param row_ids: ``[M]`` sorted ascending; col_ids: ``[M]``.
    """
    out = torch.empty(len(row_ids), device=row_max.device)
    needed = torch.unique(row_ids).tolist()
    i = 0
    while i < len(needed):
        # One contiguous call from this row up to the last needed row within chunk_size.
        start = needed[i]
        j = i
        while j + 1 < len(needed) and needed[j + 1] < start + chunk_size:
            j += 1
        stop = needed[j] + 1
        dn = rows(start, stop).square().float().div_(row_max[start:stop, None])
        lo = int(torch.searchsorted(row_ids, start))
        hi = int(torch.searchsorted(row_ids, stop))
        out[lo:hi] = dn[row_ids[lo:hi] - start, col_ids[lo:hi]]
        i = j + 1
    return out


def _nearest(dn: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` smallest entries of each row, ordered by value, then by column on ties.

    :returns: ``ranks [R, count]`` int64 and their values ``[R, count]``.
    """
    values, ranks = torch.topk(dn, count, dim=1, largest=False, sorted=True)
    # topk orders ties arbitrarily; sorting by column, then stably by value, makes it deterministic.
    ranks, order = ranks.sort(dim=1)
    values, order2 = values.gather(1, order).sort(dim=1, stable=True)
    return ranks.gather(1, order2), values


def _normalise(distance: Tensor) -> Tensor:
    """``Dn = d**2 / rowmax(d**2)`` as float32 (squared in the input dtype, as the reference)."""
    squared = distance.square().float()
    return squared.div_(squared.amax(dim=1, keepdim=True))


def _combine(jaccard: Tensor, dn: Tensor, lambda_value: float) -> Tensor:
    """``(1 - lambda) * jaccard + lambda * dn``, written into ``jaccard``."""
    return jaccard.mul_(1.0 - lambda_value).add_(dn, alpha=lambda_value)


def _segments(starts: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Positions ``starts[s] .. starts[s] + lengths[s] - 1`` of all segments s, concatenated.

    :returns: ``owner [T]`` (the segment of each position) and ``pos [T]``, T = ``lengths.sum()``.
    """
    owner = _owners(lengths)
    offsets = torch.arange(len(owner), device=lengths.device) - (lengths.cumsum(0) - lengths)[owner]
    return owner, starts[owner] + offsets


def _owners(lengths: Tensor) -> Tensor:
    """``[lengths.sum()]``: segment s repeated ``lengths[s]`` times."""
    return torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)


def _row_pointers(sorted_rows: Tensor, num_rows: int) -> Tensor:
    """CSR pointers ``[num_rows + 1]`` of entries whose (sorted) row ids are ``sorted_rows``."""
    counts = torch.bincount(sorted_rows, minlength=num_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _ranks_needed(k1: int, k2: int, num_total: int) -> int:
    """Neighbour columns the algorithm reads: k1 + 1 for the sets, k2 for query expansion."""
    return min(num_total, max(k1 + 1, k2))


def _gather_rows(rows: RowsFn, num_total: int, chunk_size: int) -> Tensor:
    return torch.cat(
        [
            rows(start, min(start + chunk_size, num_total))
            for start in range(0, num_total, chunk_size)
        ]
    )


def _checked_rows(rows: RowsFn, num_total: int) -> RowsFn:
    """``rows`` with its output shape and values checked on every call."""

    def checked(start: int, stop: int) -> Tensor:
        out = rows(start, stop)
        if out.shape != (stop - start, num_total):
            raise ValueError(
                f"distance rows {start}:{stop} have shape {tuple(out.shape)}, "
                f"expected {(stop - start, num_total)}"
            )
        _check_distances(out)
        return out

    return checked


def _check_distances(distance: Tensor) -> None:
    # Squaring would silently reorder negative entries, and NaN poisons a whole row's normaliser.
    if torch.isnan(distance).any() or (distance < 0).any():
        raise ValueError("distances must be non-negative and not NaN (plain distances, see docs)")
    _check_row_maxima(distance.amax(dim=1))


def _check_row_maxima(row_max: Tensor) -> None:
    # Dn divides every row by its maximum.
    if bool((row_max == 0).any()):
        raise ValueError(
            "a sample is at distance 0 from every sample; its row cannot be normalised"
        )


def _check_parameters(
    num_query: int, num_total: int, k1: int, k2: int, lambda_value: float, chunk_size: int
) -> None:
    if not 0 < num_query < num_total:
        raise ValueError(f"need 0 < num_query < N, got num_query={num_query}, N={num_total}")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be positive, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
