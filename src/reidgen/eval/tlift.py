"""TLift: model-free temporal co-occurrence score weighting (Liao & Shao, ECCV 2020).

People who are seen close in time with a query in the query's camera are likely to be seen
close in time with each other again in any other camera. TLift turns that into a per-query
temporal weight over the gallery and multiplies it into the similarity scores. It learns nothing
and uses no camera-transition statistics; see ``docs/methods/qaconv.md`` §8 (algorithm) and §7.3
(how it is chained after k-reciprocal re-ranking in evaluation).

**Algorithm** (:func:`tlift`; exactly the official ``reid/tlift.py`` semantics). For every query
``i`` with camera ``c_i`` and time ``t_i``, and for every gallery camera ``c`` (``c == c_i``
included):

1. *Nearby persons*: ``N(i) = {n : cam_n == c_i and |t_n - t_i| < tau}`` over the **query** set
   only (strict ``<``; ``i`` itself is always in it). The gallery supplies no co-occurrence
   evidence.
2. *Block*: ``B = scores[N(i), G_c]``, the ``|N(i)| x |G_c|`` scores of those queries against
   the gallery images of camera ``c``. Threshold ``thr`` = the ``K``-th largest value of the whole
   block (flattened, with repeats); if the block has ``<= K`` entries, ``thr = min(B)``.
3. *Pivots*: the multiset of gallery columns ``x`` over all block entries ``B[n, x] >= thr``; a
   column hit by two nearby queries counts twice, and ties at ``thr`` can give more than ``K``.
4. *Temporal weight* of each gallery image ``j`` of camera ``c``: a Gaussian-kernel density at
   ``t_j`` over the pivot times, ``w_ij = mean_{x in pivots} exp(-(t_j - t_x)**2 / sigma**2)``
   (note: ``sigma**2``, not ``2 * sigma**2``), so ``0 < w_ij <= 1``.
5. *Fusion*: ``out_ij = (w_ij + alpha) * scores_ij``.

Differences from the official code, none of which changes a result it produces: cameras are
any integer labels (no ``num_cams``; the official code gives weight 0, i.e. ``alpha * s``, to
gallery cameras ``>= num_cams`` and crashes on a camera without gallery images), and the loops
over queries are replaced by tensor code.

**Input contract.**

- ``scores``: ``[Q, G]`` floating similarities, larger = more similar, finite and **non-negative**
  (``(w + alpha) * s`` increases with ``w`` only for ``s >= 0``). The defaults are tuned for
  scores in ``[0, 1]`` with a small mean (about 0.01-0.1, most pairs being negatives): re-ranked
  scores ``1 - d_rr`` (the published "+RR+TLift" chain, §7.3), or sigmoid scores. For QAConv:
  ``1 - dist`` with ``dist = 1 - sigmoid(s / 10)`` (the ``<= 2.1`` test distance), i.e.
  ``sigmoid(s / 10)``; the official docstring recommends plain ``sigmoid(s)`` when TLift is
  applied to raw QAConv logits without re-ranking. Never ``-s`` (HEAD's distance) or raw logits.
- ``query_cams`` ``[Q]`` / ``gallery_cams`` ``[G]``: integer camera ids (``Sample.camid``).
- ``query_times`` ``[Q]`` / ``gallery_times`` ``[G]``: times in **seconds** on a per-camera
  clock (``Sample.timestamp``), as a tensor, array or sequence; ``None`` or NaN anywhere raises
  ``ValueError`` (the dataset has no time information and TLift does not apply).
- ``tau`` and ``sigma`` are in seconds, like the times.

**Defaults** are those of the ECCV 2020 code (QAConv 1.0, unchanged up to HEAD):
``tau=100, sigma=200, K=10, alpha=0.2`` (:data:`ECCV_DEFAULTS`). The 2019 arXiv-v1 code used
``sigma=100, K=100, alpha=0.1`` (:data:`ARXIV_V1_DEFAULTS`; its ``tau`` is not recorded in our
notes, 100 is assumed).

**Cost.** ``O(Q * #cams * (|N| K + P |G_c|))`` with ``P`` pivots per (query, camera), about
``K``; memory beyond the ``[Q, G]`` output is bounded by chunking the queries
(:data:`MEMORY_BUDGET`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

ECCV_DEFAULTS: dict[str, float] = {"tau": 100.0, "sigma": 200.0, "K": 10, "alpha": 0.2}
"""TLift parameters of the ECCV 2020 code (``v1.0-eccv`` to HEAD): the defaults here."""

ARXIV_V1_DEFAULTS: dict[str, float] = {"tau": 100.0, "sigma": 100.0, "K": 100, "alpha": 0.1}
"""TLift parameters of the 2019 arXiv-v1 code (commit a632507); ``tau`` assumed, see module doc."""

MEMORY_BUDGET = 128 * 2**20
"""Bytes of per-chunk temporaries that ``chunk_size=None`` aims for."""

TimeArray = Tensor | np.ndarray | Sequence[float | None]
"""Times in seconds: a 1-D tensor, array or sequence (``None`` = missing)."""

CamArray = Tensor | np.ndarray | Sequence[int]

_BYTES_PER_CANDIDATE = 40  # per (query, candidate): time diff, mask, masked value, sort
_BYTES_PER_KERNEL = 16  # per (query, pivot, gallery item) entry: time difference and kernel value


def tlift(
    scores: Tensor,
    query_cams: CamArray,
    query_times: TimeArray,
    gallery_cams: CamArray,
    gallery_times: TimeArray,
    tau: float = 100.0,
    sigma: float = 200.0,
    K: int = 10,
    alpha: float = 0.2,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """Lift ``[Q, G]`` similarity scores by temporal co-occurrence (see the module docstring).

    :param scores: ``[Q, G]`` finite, non-negative similarities (larger = more similar), e.g.
        ``1 - d_rr`` of re-ranked ``1 - sigmoid(s / 10)`` distances.
    :param query_cams, gallery_cams: ``[Q]`` / ``[G]`` integer camera ids.
    :param query_times, gallery_times: ``[Q]`` / ``[G]`` times in seconds (``Sample.timestamp``).
    :param tau: co-occurrence window in seconds (``|dt| < tau``).
    :param sigma: Gaussian kernel width in seconds (``exp(-dt**2 / sigma**2)``).
    :param K: rank of the threshold in each co-occurrence block (the pivot count).
    :param alpha: fusion regulariser, ``out = (w + alpha) * scores``.
    :param chunk_size: queries per chunk; ``None`` picks it from :data:`MEMORY_BUDGET`. The result
        does not depend on it (up to float rounding of the kernel sums).

    :returns: ``[Q, G]`` lifted scores, same dtype and device as ``scores``.

    :raises ValueError: on wrong shapes, non-finite or negative scores, missing (``None``/NaN) or
        infinite times, or invalid parameters.
    """
    if scores.ndim != 2 or not scores.is_floating_point():
        raise ValueError(f"scores must be a 2-D floating tensor, got {scores.dtype} {scores.shape}")
    num_q, num_g = scores.shape
    device = scores.device
    q_cams = _cams(query_cams, num_q, "query_cams", device)
    g_cams = _cams(gallery_cams, num_g, "gallery_cams", device)
    q_times = _times(query_times, num_q, "query_times", device)
    g_times = _times(gallery_times, num_g, "gallery_times", device)
    if not (tau > 0 and sigma > 0 and np.isfinite(tau) and np.isfinite(sigma)):
        raise ValueError(f"tau and sigma must be positive and finite, got {tau}, {sigma}")
    if int(K) != K or K < 1:
        raise ValueError(f"K must be a positive integer, got {K}")
    if not np.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if num_q == 0 or num_g == 0:
        return scores.clone()
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores must be finite")
    if bool((scores < 0).any()):
        raise ValueError(
            "scores must be non-negative similarities (e.g. 1 - re-ranked distance, or "
            "sigmoid(s / 10)); TLift's (w + alpha) * s is not a lift for negative s"
        )

    out = torch.empty_like(scores)
    for q_cam in torch.unique(q_cams).tolist():
        q_idx = torch.nonzero(q_cams == q_cam).squeeze(1)
        for g_cam in torch.unique(g_cams).tolist():
            g_idx = torch.nonzero(g_cams == g_cam).squeeze(1)
            _camera_pair(
                scores, out, q_idx, g_idx, q_times, g_times, tau, sigma, int(K), alpha, chunk_size
            )
    return out


def tlift_distance(
    distance: Tensor,
    query_cams: CamArray,
    query_times: TimeArray,
    gallery_cams: CamArray,
    gallery_times: TimeArray,
    tau: float = 100.0,
    sigma: float = 200.0,
    K: int = 10,
    alpha: float = 0.2,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """TLift on a distance in ``[0, 1]``: ``1 - tlift(1 - distance)``.

    This is the official evaluation chain (docs/methods/qaconv.md §7.3): ``distance`` is the
    k-reciprocal re-ranked
    distance of ``1 - sigmoid(s / 10)`` QAConv distances (or ``1 - sigmoid(s / 10)`` itself), the
    score is ``1 - distance``, and the lifted score is turned back into a distance, so a smaller
    result still means more similar and rankings follow the lifted scores exactly. Values of
    ``distance`` above 1 by float rounding (at most ``1e-4``) are treated as 1; larger ones raise
    ``ValueError`` (the distance is not of the prescribed form). Other arguments as in
    :func:`tlift`.
    """
    if distance.ndim != 2 or not distance.is_floating_point():
        raise ValueError(f"distance must be a 2-D floating tensor, got {distance.shape}")
    if distance.numel() and bool((distance > 1 + 1e-4).any()):
        raise ValueError(
            "distance must lie in [0, 1] (1 - similarity, e.g. re-ranked 1 - sigmoid(s / 10)); "
            f"got a maximum of {float(distance.max())}"
        )
    score = (1 - distance).clamp_min(0)
    lifted = tlift(
        score,
        query_cams,
        query_times,
        gallery_cams,
        gallery_times,
        tau=tau,
        sigma=sigma,
        K=K,
        alpha=alpha,
        chunk_size=chunk_size,
    )
    return 1 - lifted


def _camera_pair(
    scores: Tensor,
    out: Tensor,
    q_idx: Tensor,
    g_idx: Tensor,
    q_times: Tensor,
    g_times: Tensor,
    tau: float,
    sigma: float,
    k: int,
    alpha: float,
    chunk_size: int | None,
) -> None:
    """Fill ``out[q_idx][:, g_idx]`` for the queries of one camera and one gallery camera.

    Candidates: for every query row ``n`` of this camera, the entries of ``scores[n, g_idx]`` that
    are ``>=`` the row's ``min(K, |G_c|)``-th largest value (top K plus ties). Every pivot of any
    block that contains row ``n`` is such a candidate (an entry below the row's K-th largest has
    K entries of the block strictly above it), and the block's K-th largest is the K-th largest
    of its rows' candidates, so steps 2-3 run on the candidates only.
    """
    num_rows, num_cols = len(q_idx), len(g_idx)
    kk = min(k, num_cols)
    rows_per_chunk = max(1, MEMORY_BUDGET // (8 * num_cols))
    cand_row, cand_col, cand_val = [], [], []
    for start in range(0, num_rows, rows_per_chunk):
        block = scores[q_idx[start : start + rows_per_chunk]][:, g_idx]
        kth = torch.topk(block, kk, dim=1).values[:, -1:]
        row, col = torch.nonzero(block >= kth, as_tuple=True)
        cand_row.append(row + start)
        cand_col.append(col)
        cand_val.append(block[row, col])
    rows, cols = torch.cat(cand_row), torch.cat(cand_col)
    values = torch.cat(cand_val).to(torch.float64)
    cand_time = q_times[q_idx][rows]  # time of the query that supplies each candidate
    pivot_time = g_times[g_idx][cols]  # time of each candidate's gallery image
    col_time = g_times[g_idx]
    num_cand = len(values)

    chunk = chunk_size or max(1, MEMORY_BUDGET // (_BYTES_PER_CANDIDATE * num_cand))
    for start in range(0, num_rows, chunk):
        queries = q_idx[start : start + chunk]
        # Step 1: nearby persons, as a mask over the candidates of their rows.
        near = (q_times[queries][:, None] - cand_time[None, :]).abs() < tau
        # Step 2: K-th largest of each block; -inf when the block has < K entries (= its min,
        # since then every entry of the block is a candidate and all become pivots).
        masked = torch.where(near, values[None, :], torch.full_like(values, -torch.inf))
        if num_cand >= k:
            thr = torch.topk(masked, k, dim=1).values[:, -1:]
        else:
            thr = torch.full((len(queries), 1), -torch.inf, dtype=values.dtype, device=near.device)
        # Step 3: pivots with multiplicity, packed to the left of a [chunk, P] table.
        pivot = near & (masked >= thr)
        count = pivot.sum(dim=1)
        num_pivots = int(count.max())
        order = torch.sort(pivot.to(torch.uint8), dim=1, descending=True, stable=True).indices
        order = order[:, :num_pivots]
        slot_used = pivot.gather(1, order).to(torch.float64)
        slot_time = pivot_time[order]
        # Step 4: Gaussian-kernel density at each gallery time, over pivot slots in blocks.
        total = torch.zeros(len(queries), num_cols, dtype=torch.float64, device=out.device)
        slots = max(1, MEMORY_BUDGET // (_BYTES_PER_KERNEL * len(queries) * max(num_cols, 1)))
        for p in range(0, num_pivots, slots):
            kernel = col_time[None, None, :] - slot_time[:, p : p + slots, None]
            kernel = kernel.square_().mul_(-1.0 / sigma**2).exp_()  # exp(-dt**2 / sigma**2)
            total += torch.bmm(slot_used[:, None, p : p + slots], kernel).squeeze(1)
        # Step 5: fusion, in float64 and cast back to the scores' dtype.
        rows_cols = (queries[:, None], g_idx[None, :])
        lifted = (total / count[:, None] + alpha) * scores[rows_cols].to(torch.float64)
        out[rows_cols] = lifted.to(out.dtype)


def _cams(cams: CamArray, length: int, name: str, device: torch.device) -> Tensor:
    if isinstance(cams, Tensor):
        tensor = cams.detach()
    else:
        tensor = torch.as_tensor(np.asarray(cams) if len(cams) else np.zeros(0, dtype=np.int64))
    if tensor.ndim != 1 or len(tensor) != length:
        raise ValueError(f"{name} must be 1-D of length {length}, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer camera ids, got {tensor.dtype}")
    return tensor.to(device=device, dtype=torch.int64)


def _times(times: TimeArray, length: int, name: str, device: torch.device) -> Tensor:
    if isinstance(times, Tensor):
        tensor = times.detach().to(torch.float64)
    else:
        array = np.asarray(
            [np.nan if t is None else t for t in times]
            if not isinstance(times, np.ndarray)
            else times,
            dtype=np.float64,
        )
        tensor = torch.from_numpy(array)
    if tensor.ndim != 1 or len(tensor) != length:
        raise ValueError(f"{name} must be 1-D of length {length}, got shape {tuple(tensor.shape)}")
    missing = torch.isnan(tensor)
    if bool(missing.any()):
        first = int(torch.nonzero(missing)[0])
        raise ValueError(
            f"{name}: {int(missing.sum())} of {length} timestamps are missing (None/NaN), first "
            f"at index {first}; TLift needs a time in seconds for every sample "
            "(Sample.timestamp), so it cannot run on a dataset without time information"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite")
    return tensor.to(device)
