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

Ties: each query's gallery is ordered by a *stable* sort of its distances, so equal distances keep
gallery order. The result is then deterministic and identical on CPU and CUDA, but may differ from
numpy-based evaluators (whose default argsort is not stable) when distances tie exactly.

Queries are processed ``chunk_size`` at a time, so only a ``[chunk_size, G]`` block of distances
(and a few same-shaped temporaries) is ever in memory; each chunk is handled with tensor ops, with
no Python loop over queries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

DistanceFn = Callable[[int, int], Tensor]
"""``distance(start, stop) -> Tensor[stop - start, G]``: distances of queries ``start:stop``."""

IdArray = Tensor | Sequence[int]
"""Integer ids (pids or camera ids): a 1-D tensor, a numpy array or a list."""

JUNK_PID = -1


def evaluate_ranking(
    distance: Tensor | DistanceFn,
    query_pids: IdArray,
    query_camids: IdArray,
    gallery_pids: IdArray,
    gallery_camids: IdArray,
    *,
    chunk_size: int = 256,
    ranks: Sequence[int] = (1, 5, 10, 20),
) -> dict[str, float]:
    """Compute CMC, mAP and mINP of a query-gallery distance under the Market-1501 protocol.

    Args:
        distance: ``Tensor[Q, G]`` (smaller = more similar), or a callable ``(start, stop)``
            returning the ``Tensor[stop - start, G]`` rows of queries ``start:stop``, for methods
            whose distance is too expensive or too large to hold as a whole.
        query_pids, query_camids: ``[Q]`` integer ids of the queries.
        gallery_pids, gallery_camids: ``[G]`` integer ids of the gallery (pid 0 = distractor,
            pid -1 = junk).
        chunk_size: queries per chunk; bounds memory to ``O(chunk_size * G)``.
        ranks: the k of the reported CMC rank-k values.

    Returns:
        ``rank{k}`` for each k in ``ranks``, ``mAP`` and ``mINP`` in percent (0..100), and the
        counts ``num_valid_queries`` and ``num_skipped_queries``.

    Raises:
        ValueError: on inconsistent shapes, or when no query has a valid positive (every metric
            would be undefined; this is a data or protocol error, not a score of 0).
    """
    q_pids, q_cams = _ids(query_pids), _ids(query_camids)
    g_pids, g_cams = _ids(gallery_pids), _ids(gallery_camids)
    num_q, num_g = len(q_pids), len(g_pids)
    if len(q_cams) != num_q or len(g_cams) != num_g:
        raise ValueError("pids and camids must have the same length on each side")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if isinstance(distance, Tensor) and distance.shape != (num_q, num_g):
        raise ValueError(f"distance has shape {tuple(distance.shape)}, expected {(num_q, num_g)}")

    aps, inps, first_hits = [], [], []
    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        chunk = distance[start:stop] if isinstance(distance, Tensor) else distance(start, stop)
        if chunk.shape != (stop - start, num_g):
            raise ValueError(
                f"distance({start}, {stop}) has shape {tuple(chunk.shape)}, "
                f"expected {(stop - start, num_g)}"
            )
        device = chunk.device
        ap, inp, first_hit = _rank_chunk(
            chunk,
            q_pids[start:stop].to(device),
            q_cams[start:stop].to(device),
            g_pids.to(device),
            g_cams.to(device),
        )
        # Per-query results are tiny ([chunk]); keeping them on the CPU frees the device memory.
        aps.append(ap.cpu())
        inps.append(inp.cpu())
        first_hits.append(first_hit.cpu())

    ap, inp, first_hit = torch.cat(aps), torch.cat(inps), torch.cat(first_hits)
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


def _ids(ids: IdArray) -> Tensor:
    return torch.as_tensor(ids, dtype=torch.long).reshape(-1)


def _rank_chunk(
    distance: Tensor, q_pids: Tensor, q_cams: Tensor, g_pids: Tensor, g_cams: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """AP, INP and first-positive rank of each query of a chunk.

    Args:
        distance: ``[C, G]``; q_pids, q_cams: ``[C]``; g_pids, g_cams: ``[G]``, all on one device.

    Returns:
        ``ap [C]`` and ``inp [C]`` (float64, NaN for a query without positive) and
        ``first_hit [C]`` (int64, 1-based rank of the first positive in the kept list).
    """
    order = torch.sort(distance, dim=1, stable=True).indices  # [C, G]
    pids, cams = g_pids[order], g_cams[order]  # gallery ids in ranked order, [C, G]
    same_pid = pids == q_pids[:, None]
    removed = (same_pid & (cams == q_cams[:, None])) | (pids == JUNK_PID)
    kept = ~removed
    positive = same_pid & kept

    # Removed items are dropped from the list rather than skipped over, so an item's rank is the
    # number of kept items up to and including it; it is only read at positive (kept) positions.
    rank = kept.cumsum(dim=1)  # [C, G]
    hits = positive.cumsum(dim=1)  # [C, G] positives up to and including each position
    num_pos = hits[:, -1]  # [C]

    # AP = mean over positives of precision at their rank; a query with no positive gets 0 / 0.
    # float64 so that long galleries add up without visible rounding.
    precision_at_hits = torch.where(positive, hits.double() / rank, 0.0)
    ap = precision_at_hits.sum(dim=1) / num_pos
    last_hit = torch.where(positive, rank, 0).amax(dim=1)
    inp = num_pos / last_hit.double()
    # Queries without positive get G + 1, a rank no k reaches; they are dropped anyway.
    first_hit = torch.where(positive, rank, distance.shape[1] + 1).amin(dim=1)
    return ap, inp, first_hit
