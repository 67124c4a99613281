"""AlignedReID's local distance: the shortest path through the stripe-to-stripe distances.

Each image is described by ``H`` local features, one per horizontal stripe (``[H, c]``). For two
images with stripes ``f_1..f_H`` and ``g_1..g_H`` the *element distance* is
``d_ij = (e^||f_i - g_j|| - 1) / (e^||f_i - g_j|| + 1)``, computed here as the identical
``tanh(||f_i - g_j|| / 2)``: the literal form overflows to ``inf / inf = NaN`` in float32 once
the Euclidean distance exceeds ~88.7 (``docs/methods/alignedreid.md`` §1.5). The *local distance*
is the length of the shortest path from ``(0, 0)`` to ``(H-1, H-1)`` through the ``H x H``
matrix of element distances moving only right or down: ``S(i, j) = min(S(i-1, j), S(i, j-1)) +
d_ij``, so stripes are matched top to bottom and may slide against each other (§1.1).

The dynamic programme runs as an anti-diagonal wavefront (§1.6): the cells with ``i + j = t``
depend only on diagonal ``t - 1``, so ``2H - 1`` sequential steps each update a whole diagonal of
every matrix in the batch at once. It is differentiable: the gradient of the path length with
respect to the element distances is the indicator of the path :func:`alignment_path` returns,
ties included, because the forward pass and the backtracking break ties the same way.

Public pieces:

* :func:`stripe_distances`, :func:`paired_stripe_distances`: element distances;
* :func:`shortest_path`, :func:`alignment_path`: the dynamic programme and its path;
* :func:`local_distance`, :func:`paired_local_distance`: the two composed (training);
* :func:`local_distance_fn`: a memory-bounded ``DistanceFn`` for evaluation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from functools import lru_cache

import torch
from torch import Tensor

from reidgen.eval import DistanceFn
from reidgen.losses import pairwise_euclidean
from reidgen.losses.triplet import _MIN_SQUARED_DISTANCE

MEMORY_BUDGET = 256 * 2**20
"""Bytes of ``[q, g, H, H]`` float32 temporaries that :func:`local_distance_fn` keeps alive at
once (the default block sizes are derived from it; read at call time, so it can be patched)."""

# The peak of one block is three [q, g, H, H] float32 tensors, inside pairwise_euclidean (the
# sum of the norms, the cross products and their difference); the element distances and the
# wavefront stay below it (the distances and their diagonal-ordered copy, plus two diagonals).
_LIVE_BLOCKS = 3
_FLOAT32_BYTES = 4


def _check_stripes(x: Tensor, y: Tensor, paired: bool) -> None:
    if x.ndim != 3 or y.ndim != 3:
        shapes = f"{tuple(x.shape)}, {tuple(y.shape)}"
        raise ValueError(f"expected [N, H, c] local features, got {shapes}")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"stripes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if paired and x.shape[0] != y.shape[0]:
        raise ValueError(f"paired inputs need the same batch: {tuple(x.shape)}, {tuple(y.shape)}")


def stripe_distances(x: Tensor, y: Tensor) -> Tensor:
    """Element distances between every stripe of every ``x`` and every stripe of every ``y``.

    :param x: ``[M, H, c]`` local features.
    :param y: ``[N, H, c]`` local features.

    :returns: ``[M, N, H, H]`` float32, entry ``[m, n, i, j] = tanh(||x[m, i] - y[n, j]||_2 / 2)``
        in ``[0, 1)``. The Euclidean distances come from one GEMM over the ``[M*H, c]`` and
        ``[N*H, c]`` stripe rows (:func:`~reidgen.losses.pairwise_euclidean`: float32, autocast
        off, squared distances clamped at 1e-12 so identical stripes have a finite gradient).
        The result is a permuted view, not contiguous.
    """
    _check_stripes(x, y, paired=False)
    (m, h, c), n = x.shape, y.shape[0]
    distance = pairwise_euclidean(x.reshape(m * h, c), y.reshape(n * h, c))
    # In place on the halved copy: tanh's backward needs only its output and mul's none, so this
    # saves a block of memory without breaking autograd.
    element = (distance * 0.5).tanh_()
    return element.view(m, h, n, h).permute(0, 2, 1, 3)


def paired_stripe_distances(x: Tensor, y: Tensor) -> Tensor:
    """Element distances between ``x[b]`` and ``y[b]`` only (e.g. anchors and their hard pairs).

    :param x: ``[B, H, c]`` local features.
    :param y: ``[B, H, c]`` local features.

    :returns: ``[B, H, H]`` float32, entry ``[b, i, j] = tanh(||x[b, i] - y[b, j]||_2 / 2)``: the
        diagonal ``[b, b]`` of :func:`stripe_distances`, at the cost of ``B`` products instead
        of ``B^2``. Same arithmetic (float32 with autocast off, ``|x|^2 + |y|^2 - 2 x.y`` with
        the same clamp), as one batched matrix product.
    """
    _check_stripes(x, y, paired=True)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.float(), y.float()
        norms = x.pow(2).sum(2).unsqueeze(2) + y.pow(2).sum(2).unsqueeze(1)
        squared = torch.baddbmm(norms, x, y.transpose(1, 2), alpha=-2.0)
        distance = squared.clamp(min=_MIN_SQUARED_DISTANCE).sqrt()
        return (distance * 0.5).tanh_()


@lru_cache(maxsize=32)
def _diagonal_order(h: int) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """Row and column indices of the ``H x H`` cells listed diagonal by diagonal (``i + j`` =
    0, 1, ..., ``2H - 2``; within a diagonal by increasing row), and each diagonal's length."""
    rows: list[int] = []
    lengths: list[int] = []
    for t in range(2 * h - 1):
        first, last = max(0, t - h + 1), min(t, h - 1)
        rows.extend(range(first, last + 1))
        lengths.append(last - first + 1)
    row_index = torch.tensor(rows)
    diagonal_of_cell = torch.repeat_interleave(torch.arange(2 * h - 1), torch.tensor(lengths))
    return row_index, diagonal_of_cell - row_index, tuple(lengths)


def _smaller(up: Tensor, left: Tensor) -> Tensor:
    """Elementwise minimum; with autograd, a tie takes ``up`` (the cell above) entirely."""
    if not (up.requires_grad or left.requires_grad):
        return torch.minimum(up, left)  # one op instead of two: ~3x faster at test time
    # where, not minimum: minimum splits the gradient of a tie in halves, where sends all of it
    # to the upper neighbour, the branch alignment_path takes, so the gradient is exactly the
    # indicator of that path. The values are the same either way.
    return torch.where(up <= left, up, left)


def _wavefront(d: Tensor) -> Iterator[Tensor]:
    """Yield the path lengths ``S`` of diagonals ``t = 0 .. 2H-2`` of ``d [..., H, H]``, each as
    ``[L_t, ...]`` (cells by increasing row ``i``, so ``j = t - i`` decreases)."""
    h = d.shape[-1]
    rows, cols, lengths = _diagonal_order(h)
    # One gather puts every diagonal in a contiguous slab with the cells first: each step then
    # works on whole contiguous rows, and the backward is one scatter instead of one per step.
    cells = d.movedim((-2, -1), (0, 1))[rows.to(d.device), cols.to(d.device)]
    diagonals = cells.split(lengths)
    path = diagonals[0]
    yield path
    for t in range(1, 2 * h - 1):
        # Cell i of diagonal t has its upper neighbour (i-1, j) at slot k and its left neighbour
        # (i, j-1) at slot k+1 of the previous diagonal, where k indexes the interior cells.
        up, left = path[:-1], path[1:]
        best = _smaller(up, left)
        if t < h:
            # The first-row cell (0, t) has only a left neighbour and the first-column cell
            # (t, 0) only an upper one: the ends of the previous diagonal.
            best = torch.cat([path[:1], best, path[-1:]])
        path = best + diagonals[t]
        yield path


def _check_square(d: Tensor) -> None:
    if d.ndim < 2 or d.shape[-1] != d.shape[-2] or d.shape[-1] == 0:
        raise ValueError(f"expected [..., H, H] with H >= 1, got {tuple(d.shape)}")


def _working_dtype(d: Tensor) -> Tensor:
    # Half precision would round sums of up to 2H-1 terms coarsely; float64 is kept for tests.
    return d if d.dtype == torch.float64 else d.float()


def shortest_path(d: Tensor) -> Tensor:
    """Length of the shortest monotone path through each ``H x H`` matrix of ``d``.

    :param d: ``[..., H, H]`` element distances (any number of leading batch dimensions).

    :returns: ``[...]``: the minimum over paths from ``(0, 0)`` to ``(H-1, H-1)`` moving only right
        (``j + 1``) or down (``i + 1``) of the sum of the ``2H - 1`` visited cells; ``d[..., 0, 0]``
        for ``H == 1``. Float32 (float64 inputs stay float64). Differentiable: each matrix's
        gradient is the indicator of its :func:`alignment_path`.

    :raises ValueError: if the last two dimensions are not a non-empty square.
    """
    _check_square(d)
    # Drain the wavefront keeping only the newest diagonal: earlier ones are garbage at once.
    (last,) = deque(_wavefront(_working_dtype(d)), maxlen=1)
    return last[0]


def alignment_path(d: Tensor) -> list[tuple[int, int]]:
    """The cells ``(i, j)`` of the shortest path through one ``[H, H]`` matrix, from ``(0, 0)``
    to ``(H-1, H-1)``, in order (``2H - 1`` cells, each one step right or down from the last).

    Ties are broken deterministically, the same way as the gradient of :func:`shortest_path`
    flows: walking back from ``(H-1, H-1)``, a cell is entered from the cell above ``(i-1, j)``
    whenever that path is no longer than the one from the left ``(i, j-1)``. Among equally short
    paths this picks the one that, read backwards, goes up as early as possible (for a constant
    matrix: along the first row, then down the last column). The lengths compared are the
    wavefront's own float values, so the choice is consistent with :func:`shortest_path`.
    """
    if d.ndim != 2:
        raise ValueError(f"expected one [H, H] matrix, got {tuple(d.shape)}")
    _check_square(d)
    h = d.shape[0]
    with torch.no_grad():
        diagonals = [s.tolist() for s in _wavefront(_working_dtype(d.detach()))]

    def length(i: int, j: int) -> float:
        t = i + j
        return diagonals[t][i - max(0, t - h + 1)]

    i = j = h - 1
    cells = [(i, j)]
    while i > 0 or j > 0:
        if j == 0 or (i > 0 and length(i - 1, j) <= length(i, j - 1)):
            i -= 1
        else:
            j -= 1
        cells.append((i, j))
    cells.reverse()
    return cells


def local_distance(x: Tensor, y: Tensor) -> Tensor:
    """AlignedReID local distance of every ``x`` to every ``y``.

    ``x [M, H, c]``, ``y [N, H, c]`` -> ``[M, N]`` float32:
    ``shortest_path(stripe_distances(x, y))``, each value in ``[0, 2H - 1)``.
    """
    return shortest_path(stripe_distances(x, y))


def paired_local_distance(x: Tensor, y: Tensor) -> Tensor:
    """AlignedReID local distance of ``x[b]`` to ``y[b]``: ``[B, H, c]`` x 2 -> ``[B]`` float32.

    For the hard pairs mined on the global distance (§2.2): equals the diagonal of
    :func:`local_distance` for ``B`` shortest paths instead of ``B^2``.
    """
    return shortest_path(paired_stripe_distances(x, y))


def _block_sizes(rows: int, gallery: int, stripes: int, chunk_size: int | None) -> tuple[int, int]:
    """(queries, gallery items) per block: ``chunk_size`` gallery items if given, and as many
    queries as keep ``_LIVE_BLOCKS`` copies of ``[q, g, H, H]`` float32 within the budget."""
    pairs = max(1, MEMORY_BUDGET // (_LIVE_BLOCKS * _FLOAT32_BYTES * stripes * stripes))
    if chunk_size is None:
        chunk_size = min(max(gallery, 1), max(1, pairs // max(rows, 1)))
    return max(1, pairs // chunk_size), chunk_size


def local_distance_fn(query: Tensor, gallery: Tensor, chunk_size: int | None = None) -> DistanceFn:
    """Memory-bounded local distances for ``reidgen.eval``: ``(start, stop) -> [stop-start, G]``.

    :param query: ``[Q, H, c]`` local features.
    :param gallery: ``[G, H, c]`` local features (same device).
    :param chunk_size: gallery items per block. ``None`` derives it from :data:`MEMORY_BUDGET`
        (256 MiB): a block of ``q`` queries by ``g`` gallery items holds at most
        ``_LIVE_BLOCKS = 3`` float32 ``[q, g, H, H]`` tensors at its peak, so
        ``q * g <= MEMORY_BUDGET / (3 * 4 * H^2)`` pairs (about 350k at ``H = 8``); the
        whole gallery at once when the requested rows allow it, fewer gallery items
        otherwise. The rows ``start:stop`` are also split into query blocks whenever
        ``(stop - start) * chunk_size`` exceeds that number of pairs.

    The result is float32 on the features' device, computed without autograd; chunking does
    not change it beyond GEMM rounding (each block is the same arithmetic on a subset of rows).
    """
    _check_stripes(query, gallery, paired=False)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    num_gallery, stripes = gallery.shape[0], gallery.shape[1]

    @torch.no_grad()
    def distance(start: int, stop: int) -> Tensor:
        rows = query[start:stop]
        q_block, g_block = _block_sizes(len(rows), num_gallery, stripes, chunk_size)
        out = torch.empty(len(rows), num_gallery, dtype=torch.float32, device=rows.device)
        for q0 in range(0, len(rows), q_block):
            for g0 in range(0, num_gallery, g_block):
                block = local_distance(rows[q0 : q0 + q_block], gallery[g0 : g0 + g_block])
                out[q0 : q0 + q_block, g0 : g0 + g_block] = block
        return out

    return distance
