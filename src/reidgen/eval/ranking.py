"""Ranking metrics under the Market-1501 protocol: CMC rank-k, mAP and mINP.

The protocol, per query (see ``docs/evaluation.md`` §1):

* gallery items with the query's pid *and* camera are removed (they are neither positive nor
  negative), and so is gallery junk (pid -1);
* distractors (pid 0) stay in the list as negatives;
* a query with no positive left is skipped: it is counted in ``num_skipped_queries`` and left out
  of every denominator.

On the list that remains ("kept list", ranks are 1-based):

* CMC rank-k: fraction of valid queries whose first positive is within the top k;
* AP: non-interpolated average precision, the mean over positives of (hits so far) / (rank), as in
  torchreid and fast-reid (not the trapezoid AP of the MATLAB evaluator);
* INP: (number of positives) / (rank of the last positive), Ye et al., "Deep Learning for Person
  Re-identification: A Survey and Outlook" (AGW); mINP is its mean over valid queries.

Ties: the ranked list is the one a *stable* sort of each query's distances gives, so equal
distances keep gallery order, and NaN distances come last (tied NaNs in gallery order). The result
is deterministic and identical on CPU and CUDA, but may differ from numpy-based evaluators (whose
default argsort is not stable) when distances tie exactly.

How it is computed, without sorting any row (a stable sort of every row was the bottleneck).
Every metric depends only on the kept-list ranks of a query's positives (a handful per query), and
a positive's rank is one plus the number of kept items that precede it. Per query:

1. *Candidates*: only kept items no farther than the query's last positive can precede a
   positive; one comparison pass and a ``nonzero`` compact them (with a useful model, a few
   percent of the gallery).
2. *Bins*: a monotone map cuts the candidates' distances into ``B ~ G / 16`` bins spanning the
   range of the positives; a histogram counts, for each positive, the candidates in lower bins.
3. *Exact comparison*: only the few candidates that share a bin with a positive are compared
   with it exactly (distance, then gallery index), all at once after the last chunk.

When candidates are most of a chunk (positives deep in the lists: a weak model, or no signal),
step 1's compaction costs more than it saves; such a chunk is binned in place instead, a block
of rows at a time into int32 keys, and only the items in a positive's bin are extracted
(:func:`_scan_dense`). Both ways give the same counts.

Monotonicity is all that correctness needs, so how the map rounds does not matter: it only
decides how many candidates get the exact comparison. The map is a subtraction and a
multiplication in two separate ops, each correctly rounded, so no fused multiply-add in one code
path but not another can break it, and positives and candidates go through the same function.

Memory: queries are processed a chunk at a time (one bool ``[chunk, G]`` buffer besides the
chunk itself), and candidates a group of rows at a time, both sized from :data:`MEMORY_BUDGET`;
there is no Python loop over queries. Few, large ops matter on a busy CPU, where every parallel op
has a fixed cost. ``benchmarks/bench_ranking.py`` measures speed and memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

import torch
from torch import Tensor

DistanceFn = Callable[[int, int], Tensor]
"""``distance(start, stop) -> Tensor[stop - start, G]``: distances of queries ``start:stop``."""

IdArray = Tensor | Sequence[int]
"""Integer ids (pids or camera ids): a 1-D tensor, a numpy array or a list."""

JUNK_PID = -1

MEMORY_BUDGET = 256 * 2**20
"""Bytes of temporaries that ``chunk_size=None`` aims for; also bounds each group of candidates
and the candidates waiting for the exact comparison."""

# Per distance entry: the bool candidate buffer and the [chunk, B] histogram (8 bytes per bin);
# a callable's chunk adds its own 4 bytes.
_BYTES_PER_ENTRY = 1 + 1
_CHUNK_BYTES_PER_ENTRY = 4
# Per candidate: its position, row, distance, scaled distance, bin, key and flags.
_BYTES_PER_CANDIDATE = 64
# Per candidate waiting for (and going through) the exact comparison.
_BYTES_PER_ITEM = 128

# Per distance entry of the dense scan: a float and an int32 bin buffer and a bool mask.
_DENSE_BYTES_PER_ENTRY = 4 + 4 + 1
# Above this fraction of candidates a chunk is binned in place rather than compacted first.
_DENSE_FRACTION = 0.25

# One bin per ~16 gallery items: a positive's bin holds a handful of candidates to compare
# exactly, and the histograms stay small next to the [chunk, G] buffer.
_ITEMS_PER_BIN = 16
_MIN_BINS = 64


def evaluate_ranking(
    distance: Tensor | DistanceFn,
    query_pids: IdArray,
    query_camids: IdArray,
    gallery_pids: IdArray,
    gallery_camids: IdArray,
    *,
    chunk_size: int | None = None,
    ranks: Sequence[int] = (1, 5, 10, 20),
) -> dict[str, float]:
    """Compute CMC, mAP and mINP of a query-gallery distance under the Market-1501 protocol.

    :param distance: ``Tensor[Q, G]`` (smaller = more similar), or a callable ``(start, stop)``
        returning the ``Tensor[stop - start, G]`` rows of queries ``start:stop``, for methods
        whose distance is too expensive or too large to hold as a whole. All chunks must be
        on one device.
    :param query_pids, query_camids: ``[Q]`` integer ids of the queries.
    :param gallery_pids, gallery_camids: ``[G]`` integer ids of the gallery (pid 0 = distractor,
        pid -1 = junk).
    :param chunk_size: queries per chunk (and per call of a callable ``distance``); memory is
        ``O(chunk_size * G)``. ``None`` picks it so that a chunk's temporaries (a callable's
        chunk included) stay within :data:`MEMORY_BUDGET`.
    :param ranks: the k of the reported CMC rank-k values.

    :returns: ``rank{k}`` for each k in ``ranks``, ``mAP`` and ``mINP`` in percent (0..100), and the
        counts ``num_valid_queries`` and ``num_skipped_queries``.

    :raises ValueError: on inconsistent shapes, or when no query has a valid positive (every metric
        would be undefined; this is a data or protocol error, not a score of 0).
    """
    q_pids, q_cams = _ids(query_pids), _ids(query_camids)
    g_pids, g_cams = _ids(gallery_pids), _ids(gallery_camids)
    num_q, num_g = len(q_pids), len(g_pids)
    if len(q_cams) != num_q or len(g_cams) != num_g:
        raise ValueError("pids and camids must have the same length on each side")
    if chunk_size is None:
        per_entry = _BYTES_PER_ENTRY
        per_entry += 0 if isinstance(distance, Tensor) else _CHUNK_BYTES_PER_ENTRY
        chunk_size = max(1, MEMORY_BUDGET // (per_entry * max(num_g, 1)))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if isinstance(distance, Tensor) and distance.shape != (num_q, num_g):
        raise ValueError(f"distance has shape {tuple(distance.shape)}, expected {(num_q, num_g)}")
    if num_q == 0 or num_g == 0:
        raise ValueError(f"none of the {num_q} queries has a positive in the gallery")

    matches = _Matches.build(q_pids, q_cams, g_pids, g_cams)
    ap, inp, first_hit = _per_query(distance, matches, chunk_size, num_q, num_g)
    valid = ~torch.isnan(ap)
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(f"none of the {num_q} queries has a positive in the gallery")
    ap, inp, first_hit = ap[valid], inp[valid], first_hit[valid]

    metrics: dict[str, float] = {
        f"rank{k}": 100.0 * (first_hit <= k).double().mean().item() for k in ranks
    }
    metrics["mAP"] = 100.0 * ap.mean().item()
    metrics["mINP"] = 100.0 * inp.mean().item()
    metrics["num_valid_queries"] = num_valid
    metrics["num_skipped_queries"] = num_q - num_valid
    return metrics


def _per_query(
    distance: Tensor | DistanceFn, matches: _Matches, chunk_size: int, num_q: int, num_g: int
) -> tuple[Tensor, Tensor, Tensor]:
    """AP, INP and first-positive rank of every query, on the CPU (see :func:`_metrics`)."""
    buffer: Tensor | None = None
    scans: list[_Scan] = []
    scanned_from = 0  # the first query of `scans`
    results: list[tuple[Tensor, Tensor, Tensor]] = []
    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        chunk = distance[start:stop] if isinstance(distance, Tensor) else distance(start, stop)
        if chunk.shape != (stop - start, num_g):
            raise ValueError(
                f"distance({start}, {stop}) has shape {tuple(chunk.shape)}, "
                f"expected {(stop - start, num_g)}"
            )
        if buffer is None:  # the first chunk decides the device
            matches = matches.to(chunk.device)
            # Reused by every chunk: allocating (and page-faulting) a fresh one costs more than
            # the pass that fills it.
            rows = min(chunk_size, num_q)
            buffer = torch.empty(rows, num_g, dtype=torch.bool, device=chunk.device)
        for scan in _scan(chunk, start, matches, buffer[: stop - start]):
            scans.append(scan)
            # Checked per group of rows, not per chunk: on rows that tie everywhere almost every
            # candidate waits for the exact comparison.
            if sum(len(s.item_col) for s in scans) * _BYTES_PER_ITEM > MEMORY_BUDGET:
                results.append(_finish(scans, scanned_from, matches, num_g))
                scanned_from += sum(len(s.values) for s in scans)
                scans = []
    if scans:
        results.append(_finish(scans, scanned_from, matches, num_g))
    ap, inp, first_hit = (torch.cat(r) for r in zip(*results, strict=True))
    return ap, inp, first_hit


def _ids(ids: IdArray) -> Tensor:
    # On the CPU: the per-query bookkeeping is built there, then moved to the distances' device.
    return torch.as_tensor(ids, dtype=torch.long).reshape(-1).cpu()


def _num_bins(num_g: int) -> int:
    return max(_MIN_BINS, num_g // _ITEMS_PER_BIN)


@dataclass(frozen=True)
class _Matches:
    """The gallery items the protocol treats specially, per query; built once, for all queries.

    ``gallery_index [Q, M]`` lists each query's same-pid gallery items in gallery order, padded
    to the largest count ``M``; ``positive [Q, M]`` marks the ones in another camera (the
    others are removed), ``num_pos [Q]`` counts them. Junk queries get none: junk is never a
    positive.
    ``removed_flat`` / ``positive_flat`` hold ``q * G + g`` of the marked items in row order,
    query ``q``'s at ``[ptr[q], ptr[q + 1])``. ``junk [J]`` lists the gallery junk.
    """

    gallery_index: Tensor
    positive: Tensor
    num_pos: Tensor
    removed_flat: Tensor
    removed_ptr: list[int]
    positive_flat: Tensor
    positive_ptr: list[int]
    junk: Tensor

    @classmethod
    def build(cls, q_pids: Tensor, q_cams: Tensor, g_pids: Tensor, g_cams: Tensor) -> _Matches:
        by_pid = torch.argsort(g_pids, stable=True)  # the gallery grouped by pid
        sorted_pids = g_pids[by_pid]
        first = torch.searchsorted(sorted_pids, q_pids)
        count = torch.searchsorted(sorted_pids, q_pids, right=True) - first
        count[q_pids == JUNK_PID] = 0
        slot = torch.arange(max(int(count.max()), 1))  # M >= 1 keeps every shape non-empty
        in_group = slot < count[:, None]
        gallery_index = by_pid[(first[:, None] + slot).clamp(max=len(by_pid) - 1)]
        same_cam = g_cams[gallery_index] == q_cams[:, None]
        positive, removed = in_group & ~same_cam, in_group & same_cam
        flat = torch.arange(len(q_pids))[:, None] * len(g_pids) + gallery_index
        return cls(
            gallery_index,
            positive,
            positive.sum(dim=1),
            flat[removed],
            _row_pointers(removed),
            flat[positive],
            _row_pointers(positive),
            (g_pids == JUNK_PID).nonzero().flatten(),
        )

    def to(self, device: torch.device) -> _Matches:
        return _Matches(
            self.gallery_index.to(device),
            self.positive.to(device),
            self.num_pos.to(device),
            self.removed_flat.to(device),
            self.removed_ptr,
            self.positive_flat.to(device),
            self.positive_ptr,
            self.junk.to(device),
        )

    def removed_at(self, start: int, stop: int) -> Tensor:
        """``[R]`` positions ``q * G + g`` of the removed items of queries ``start:stop``."""
        return self.removed_flat[self.removed_ptr[start] : self.removed_ptr[stop]]

    def positive_at(self, start: int, stop: int) -> Tensor:
        """``[P]`` positions ``q * G + g`` of the positives of queries ``start:stop``."""
        return self.positive_flat[self.positive_ptr[start] : self.positive_ptr[stop]]


def _row_pointers(mask: Tensor) -> list[int]:
    return [0, *mask.sum(dim=1).cumsum(0).tolist()]


@dataclass(frozen=True)
class _Scan:
    """What a group of ``C`` queries leaves for :func:`_finish` (``N`` items).

    ``values``, ``bins`` and ``below`` (``[C, M]``, per same-pid slot of :class:`_Matches`):
    the distance of the slot's gallery item, its bin (``B + 2`` unless it is a positive) and
    the number of candidates in lower bins. ``item_*`` (``[N]``): the query (0..C-1), gallery
    index, distance and bin of every non-positive candidate in a bin with a positive.
    """

    values: Tensor
    bins: Tensor
    below: Tensor
    item_row: Tensor
    item_col: Tensor
    item_value: Tensor
    item_bin: Tensor


def _scan(chunk: Tensor, start: int, matches: _Matches, buffer: Tensor) -> Iterator[_Scan]:
    """Find a chunk's candidates, bin them, and collect what the exact comparison needs.

    :param chunk: ``[C, G]`` distances of queries ``start:start + C``.
    :param buffer: ``[C, G]`` bool scratch space.

    :returns: One :class:`_Scan` per group of consecutive rows, in row order, each within the
        memory budget.
    """
    num_c, num_g = chunk.shape
    stop = start + num_c
    gallery_index, positive = matches.gallery_index[start:stop], matches.positive[start:stop]
    values = chunk.gather(1, gallery_index)  # [C, M]
    # The first and last positive distances (NaN if one is NaN; the extremes without positive),
    # in the distances' dtype: rounding the last one down would lose the positive itself.
    if chunk.is_floating_point():
        lowest, highest = -math.inf, math.inf
    else:
        lowest, highest = torch.iinfo(chunk.dtype).min, torch.iinfo(chunk.dtype).max
    first = torch.where(positive, values, highest).amin(dim=1, keepdim=True)  # [C, 1]
    last = torch.where(positive, values, lowest).amax(dim=1, keepdim=True)
    candidate = torch.le(chunk, last, out=buffer)
    if torch.isnan(last).any():  # NaN sorts last: any item may precede a NaN positive
        candidate |= torch.isnan(last)
    candidate.index_fill_(1, matches.junk, False)
    candidate.view(-1)[matches.removed_at(start, stop) - start * num_g] = False

    work = torch.float64 if chunk.dtype == torch.float64 else torch.float32
    shifted, scale = _bin_map(first, last, _num_bins(num_g), work)
    if int(torch.count_nonzero(candidate)) > _DENSE_FRACTION * candidate.numel():
        # Positives deep in the lists (a weak model, or no signal at all): compacting nearly
        # every item costs more than binning the whole chunk in place.
        yield from _scan_dense(
            chunk, start, matches, gallery_index, positive, values, shifted, scale
        )
        return
    for lo, hi in _row_groups(candidate):
        rows = slice(lo, hi)
        yield (
            _scan_rows(
                chunk[rows],
                candidate[rows],
                gallery_index[rows],
                positive[rows],
                values[rows],
                shifted[rows],
                scale[rows],
                matches.positive_at(start + lo, start + hi) - (start + lo) * num_g,
            )
        )


def _scan_rows(
    chunk: Tensor,
    candidate: Tensor,
    gallery_index: Tensor,
    positive: Tensor,
    values: Tensor,
    shifted: Tensor,
    scale: Tensor,
    positive_flat: Tensor,
) -> _Scan:
    """:func:`_scan` for ``R`` rows.

    :param chunk, candidate: ``[R, G]`` distances and candidate mask (contiguous).
    :param gallery_index, positive, values: ``[R, M]`` per same-pid slot.
    :param shifted, scale: ``[R, 1]`` the bin map of each row (:func:`_bin_map`).
    :param positive_flat: ``[P]`` positions ``r * G + g`` of the positives, in slot order.
    """
    num_r, num_g = chunk.shape
    num_bins = _num_bins(num_g)
    keys_per_row = num_bins + 3  # bins 0..B + 1, and B + 2 that holds no candidate
    flat = candidate.view(-1).nonzero().squeeze(1)  # [K] row by row, in gallery order
    row = flat // num_g
    value = torch.take(chunk, flat)
    bins = _bin(value, shifted.view(-1)[row], scale.view(-1)[row], num_bins)
    keys = row * keys_per_row + bins  # (row, bin) as one index
    histogram = torch.bincount(keys, minlength=num_r * keys_per_row)

    at = torch.searchsorted(flat, positive_flat)  # positives are candidates: where they are
    slot_bins = torch.full_like(gallery_index, num_bins + 2).masked_scatter_(positive, bins[at])
    slot_keys = torch.arange(num_r, device=row.device)[:, None] * keys_per_row + slot_bins
    # Candidates in lower bins precede a positive; those in its own bin need a closer look.
    cumulative = histogram.view(num_r, keys_per_row).cumsum(dim=1).view(-1)
    below = cumulative.take(slot_keys) - histogram.take(slot_keys)
    holds_positive = torch.zeros_like(histogram, dtype=torch.bool)
    holds_positive[keys[at]] = True
    is_item = holds_positive[keys]
    # Positives are no items: one precedes another in its bin when it comes first in list order.
    is_item[at] = False
    item = is_item.nonzero().squeeze(1)
    return _Scan(
        values,
        slot_bins,
        below,
        row[item],
        flat[item] % num_g,
        value[item],
        bins[item],
    )


def _scan_dense(
    chunk: Tensor,
    start: int,
    matches: _Matches,
    gallery_index: Tensor,
    positive: Tensor,
    values: Tensor,
    shifted: Tensor,
    scale: Tensor,
) -> Iterator[_Scan]:
    """:func:`_scan` without compaction, for chunks whose candidates are most of the gallery.

    Every item of a block of rows is binned in place into an int32 ``(row, bin)`` key, a few
    full passes with no ``nonzero`` over the chunk. Items beyond the last positive need no mask:
    they land in bins at or above the last positive's, so they never add to a positive's count
    from lower bins, and in its own bin the exact comparison sees that they come after it.
    Junk and removed items get a key past every row's; the positives' own bins are read back
    from the same keys, so items and positives are binned by one and the same computation.

    :param chunk: ``[C, G]`` distances of queries ``start:start + C``.
    :param gallery_index, positive, values: ``[C, M]`` per same-pid slot.
    :param shifted, scale: ``[C, 1]`` the bin map of each row (:func:`_bin_map`).

    :returns: One :class:`_Scan` per group of rows whose items fit the memory budget.
    """
    num_c, num_g = chunk.shape
    num_bins = _num_bins(num_g)
    keys_per_row = num_bins + 3
    block = max(1, min(num_c, MEMORY_BUDGET // (_DENSE_BYTES_PER_ENTRY * num_g)))
    scaled = torch.empty(block, num_g, dtype=shifted.dtype, device=chunk.device)
    keys = torch.empty(block, num_g, dtype=torch.int32, device=chunk.device)
    row_key = torch.arange(block, dtype=torch.int32, device=chunk.device)[:, None] * keys_per_row
    for lo in range(0, num_c, block):
        hi = min(lo + block, num_c)
        n = hi - lo
        bins, key = scaled[:n], keys[:n]
        # The same two correctly rounded steps as _bin, in place.
        torch.sub(chunk[lo:hi], shifted[lo:hi], out=bins).mul_(scale[lo:hi])
        bins.clamp_(0, num_bins + 1).nan_to_num_(nan=num_bins + 1)
        key.copy_(bins).add_(row_key[:n])
        excluded = n * keys_per_row  # one key past every row's, dropped from the histogram
        key.index_fill_(1, matches.junk, excluded)
        key.view(-1)[matches.removed_at(start + lo, start + hi) - (start + lo) * num_g] = excluded
        histogram = torch.bincount(key.view(-1), minlength=excluded + 1)[:excluded]

        positive_flat = matches.positive_at(start + lo, start + hi) - (start + lo) * num_g
        positive_keys = key.view(-1)[positive_flat].long()
        rows = torch.arange(n, device=chunk.device)[:, None] * keys_per_row
        slot_keys = torch.full_like(gallery_index[lo:hi], num_bins + 2).add_(rows)
        slot_keys.masked_scatter_(positive[lo:hi], positive_keys)
        cumulative = histogram.view(n, keys_per_row).cumsum(dim=1).view(-1)
        below = cumulative.take(slot_keys) - histogram.take(slot_keys)
        holds_positive = torch.zeros(excluded + 1, dtype=torch.bool, device=chunk.device)
        holds_positive[positive_keys] = True
        is_item = torch.index_select(holds_positive, 0, key.view(-1))
        is_item[positive_flat] = False  # positives are no items (see _scan_rows)
        for g_lo, g_hi in _row_groups(is_item.view(n, num_g), _BYTES_PER_ITEM):
            item = is_item[g_lo * num_g : g_hi * num_g].nonzero().squeeze(1)
            item_key = key[g_lo:g_hi].reshape(-1).take(item).long()
            yield _Scan(
                values[lo + g_lo : lo + g_hi],
                slot_keys[g_lo:g_hi] - rows[g_lo:g_hi],
                below[g_lo:g_hi],
                item // num_g,
                item % num_g,
                chunk[lo + g_lo : lo + g_hi].reshape(-1).take(item),
                item_key % keys_per_row,
            )


def _row_groups(candidate: Tensor, bytes_each: int = _BYTES_PER_CANDIDATE) -> list[tuple[int, int]]:
    """Consecutive row ranges of ``candidate [C, G]`` whose marked items, ``bytes_each`` bytes
    each, fit the memory budget.

    A single row over budget forms its own group; usually the whole chunk is one group.
    """
    if int(torch.count_nonzero(candidate)) * bytes_each <= MEMORY_BUDGET:
        return [(0, len(candidate))]
    count = torch.count_nonzero(candidate, dim=1)
    group = (count.cumsum(0) - count) * bytes_each // MEMORY_BUDGET
    bounds = [0, *accumulate(torch.unique_consecutive(group, return_counts=True)[1].tolist())]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _bin_map(
    first: Tensor, last: Tensor, num_bins: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Per row, the map of :func:`_bin` that spreads the positives' distances, from ``first``
    to ``last`` (``[C, 1]``), over bins ``1..num_bins``.

    :returns: ``shifted [C, 1]`` and ``scale [C, 1]`` in ``dtype``.
    """
    lo, hi = first.double(), last.double()
    # Without a finite range (no positive, or a NaN or infinite one) any map will do.
    has_range = torch.isfinite(lo) & torch.isfinite(hi)
    lo, hi = torch.where(has_range, lo, 0.0), torch.where(has_range, hi, 0.0)
    # A single positive (or several at one distance) still needs a scale; |lo| is as good as any.
    width = torch.where(hi > lo, hi - lo, torch.where(lo != 0, lo.abs(), 1.0))
    scale = (num_bins - 1) / width
    # (d - shifted) * scale = (d - lo) * scale + 1.5: the first positive lands mid-bin 1 and the
    # last mid-bin B, not on an edge where rounding could drop it into bin 0 along with every
    # item closer than it (all of them would then need the exact comparison).
    shifted = lo - 1.5 / scale
    return shifted.to(dtype), scale.to(dtype)


def _bin(value: Tensor, shifted: Tensor, scale: Tensor, num_bins: int) -> Tensor:
    """Bin (int64, ``0..num_bins + 1``) of each distance: non-decreasing in it, NaN last.

    Positives and candidates must both go through here, so that they are binned alike.
    """
    scaled = (value - shifted) * scale  # two correctly rounded, hence monotone, steps
    return scaled.clamp_(0, num_bins + 1).nan_to_num_(nan=num_bins + 1).long()


def _finish(
    scans: list[_Scan], start: int, matches: _Matches, num_g: int
) -> tuple[Tensor, Tensor, Tensor]:
    """AP, INP and first-positive rank (on the CPU) of the queries of consecutive scans, the
    first of which starts at query ``start``."""
    offsets = [0, *accumulate(len(s.values) for s in scans)]
    stop = start + offsets[-1]
    num_pos = matches.num_pos[start:stop]
    ranks = _positive_ranks(
        torch.cat([s.values for s in scans]),
        torch.cat([s.bins for s in scans]),
        torch.cat([s.below for s in scans]),
        matches.gallery_index[start:stop],
        torch.cat([s.item_row + offset for s, offset in zip(scans, offsets, strict=False)]),
        torch.cat([s.item_col for s in scans]),
        torch.cat([s.item_value for s in scans]),
        torch.cat([s.item_bin for s in scans]),
        num_pos,
        num_g,
    )
    ap, inp, first_hit = _metrics(ranks, num_pos)
    # Per-query results are tiny; keeping them on the CPU frees the device memory.
    return ap.cpu(), inp.cpu(), first_hit.cpu()


def _positive_ranks(
    values: Tensor,
    bins: Tensor,
    below: Tensor,
    gallery_index: Tensor,
    item_row: Tensor,
    item_col: Tensor,
    item_value: Tensor,
    item_bin: Tensor,
    num_pos: Tensor,
    num_g: int,
) -> Tensor:
    """1-based kept-list ranks of the positives of ``R`` queries.

    :param values, bins, below: ``[R, M]`` as in :class:`_Scan`; gallery_index: ``[R, M]``.
    :param item_row, item_col, item_value, item_bin: ``[N]`` as in :class:`_Scan`, rows from 0.
    :param num_pos: ``[R]`` number of positives per query.
    :param num_g: gallery size.

    :returns: ``[R, M]`` int64: each row's positive ranks in ascending order, then ``G + 1`` (beyond
        any rank) in the remaining slots.
    """
    num_r, num_m = values.shape
    # The positives in list order: by bin (other slots, in the last bin, go last), distance and
    # gallery index. The bins grow with the distance, so this is the order of the distances.
    order = torch.sort(values, dim=1, stable=True).indices
    order = order.gather(1, torch.sort(bins.gather(1, order), dim=1, stable=True).indices)
    values, gallery_index = values.gather(1, order).view(-1), gallery_index.gather(1, order)
    bins, below = bins.gather(1, order), below.gather(1, order)
    # (query, bin) keys ascend over the flattened slots, so searchsorted finds a bin's slots.
    keys_per_row = _num_bins(num_g) + 3
    slot_keys = (torch.arange(num_r, device=bins.device)[:, None] * keys_per_row + bins).view(-1)
    slot = torch.arange(num_r * num_m, device=bins.device)
    positives_before = slot - torch.searchsorted(slot_keys, slot_keys)  # in the same bin
    item_keys = item_row * keys_per_row + item_bin
    items_before = _items_before(
        item_value,
        item_col,
        torch.searchsorted(slot_keys, item_keys),
        torch.searchsorted(slot_keys, item_keys, right=True),
        values,
        gallery_index.view(-1),
    )
    ranks = (below.view(-1) + items_before + positives_before + 1).view(num_r, num_m)
    return torch.where(slot[:num_m] < num_pos[:, None], ranks, num_g + 1)


def _items_before(
    item_value: Tensor,
    item_col: Tensor,
    first: Tensor,
    stop: Tensor,
    values: Tensor,
    gallery_index: Tensor,
) -> Tensor:
    """For every positive slot, how many of the items in its bin precede it.

    :param item_value, item_col: ``[N]`` distance and gallery index of each item.
    :param first, stop: ``[N]`` the flat slots ``[first, stop)`` of the positives in the item's bin.
    :param values, gallery_index: ``[S]`` flat slots in list order (a bin's slots are consecutive).

    :returns: ``[S]`` int64 counts.
    """
    # The positives of the bin that precede an item are the first n of its slots; the item
    # precedes the others, [first + n, stop). Mark +1 and -1 at the ends; a cumsum fills in.
    count, n = stop - first, torch.zeros_like(first)
    for t in range(int(count.max()) if len(count) else 0):
        at = (first + t).clamp(max=len(values) - 1)
        n += _precedes(values[at], gallery_index[at], item_value, item_col) & (t < count)
    ends = torch.zeros(len(values) + 1, dtype=torch.int32, device=values.device)
    ends.index_add_(0, first + n, torch.ones_like(first, dtype=torch.int32))
    ends.index_add_(0, stop, torch.full_like(first, -1, dtype=torch.int32))
    return ends.cumsum(0)[:-1]


def _precedes(value: Tensor, index: Tensor, other: Tensor, other_index: Tensor) -> Tensor:
    """Whether ``(value, index)`` comes before ``(other, other_index)`` in a stable sort (NaN last).

    All arguments broadcast together.
    """
    value_nan, other_nan = torch.isnan(value), torch.isnan(other)
    less = (value < other) | (other_nan & ~value_nan)
    equal = (value == other) | (value_nan & other_nan)
    return less | (equal & (index < other_index))


def _metrics(ranks: Tensor, num_pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """AP, INP and first-positive rank of each query from the ranks of its positives.

    :param ranks: ``[C, M]`` 1-based ranks of the positives in ascending order, then ``> G``.
    :param num_pos: ``[C]`` number of positives.

    :returns: ``ap [C]`` and ``inp [C]`` (float64, NaN for a query without positive) and
        ``first_hit [C]`` (int64, 1-based rank of the first positive; ``> G`` without one).
    """
    hits = torch.arange(1, ranks.shape[1] + 1, device=ranks.device)  # [M]
    # AP = mean over positives of precision at their rank; a query with no positive gets 0 / 0.
    # float64 so that long galleries add up without visible rounding.
    precision = torch.where(hits <= num_pos[:, None], hits / ranks.double(), 0.0)
    ap = precision.sum(dim=1) / num_pos
    last_hit = ranks.gather(1, (num_pos - 1).clamp_min(0)[:, None]).squeeze(1)
    inp = num_pos / last_hit.double()
    return ap, inp, ranks[:, 0]
