"""QAConv's location matches: which query location matched which gallery location, and how much
each location adds to the score.

QAConv's claim to interpretability (Liao & Shao, ECCV 2020) is that a score is a sum of local
matches. In eval mode the whole head (scalar BN, FC, logit BN) is affine in the directional maxima
of the local correlation (:meth:`~reidgen.methods.qaconv.matcher.QAConvMatcher.eval_affine`)::

    score = sum_s w_a[s] * S[s, r*(s)] + sum_r w_b[r] * S[s*(r), r] + offset

with ``S[s, r]`` the cosine of query location ``s`` and gallery location ``r``, ``r*(s)`` the best
gallery location of ``s`` and ``s*(r)`` the best query location of ``r``. Every location adds one
term, and its correspondence is the argmax. The official visualisation read the per-location
weights of the 1.x FC and broke with the shared-FC 2.1 head (issue #32, ``docs/methods/qaconv.md``
§11); the folded weights ``w_a, w_b`` serve both heads and include both BNs.

Locations are numbered row-major on the ``h x w`` feature grid: ``s = row * w + col``. The match
pictures (:mod:`reidgen.viz.qaconv_matches`) draw what :func:`location_matches` computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from reidgen.methods.qaconv.matcher import QAConvMatcher


@dataclass(frozen=True)
class MatchInfo:
    """The local matches of one query map against one gallery map, ``N = h * w`` locations.

    :ivar grid: ``(h, w)`` of the feature maps.
    :ivar similarity: ``S [N(s), N(r)]``, the cosine of query location ``s`` and gallery
        location ``r``.
    :ivar query_to_gallery: ``r*(s) = argmax_r S[s, r]``, ``[N]`` long.
    :ivar gallery_to_query: ``s*(r) = argmax_s S[s, r]``, ``[N]`` long.
    :ivar query_contribution: ``w_a[s] * S[s, r*(s)]``, ``[N]`` float64.
    :ivar gallery_contribution: ``w_b[r] * S[s*(r), r]``, ``[N]`` float64.
    :ivar offset: ``[]`` float64, the score's constant term.
    :ivar score: ``[]`` float64, the eval-mode score: both contributions summed, plus ``offset``.
    """

    grid: tuple[int, int]
    similarity: Tensor
    query_to_gallery: Tensor
    gallery_to_query: Tensor
    query_contribution: Tensor
    gallery_contribution: Tensor
    offset: Tensor
    score: Tensor

    def cell(self, location: int) -> tuple[int, int]:
        """``(row, col)`` of ``location`` on the grid."""
        row, col = divmod(int(location), self.grid[1])
        return row, col

    def strongest_query_matches(self, k: int) -> list[tuple[int, int, float]]:
        """The ``k`` query locations of largest contribution, strongest first, as
        ``(s, r*(s), contribution)``; equal contributions keep location order."""
        if k < 0:
            raise ValueError(f"k must be non-negative, got {k}")
        order = torch.sort(self.query_contribution, descending=True, stable=True).indices[:k]
        return [
            (int(s), int(self.query_to_gallery[s]), float(self.query_contribution[s]))
            for s in order
        ]


@torch.no_grad()
def location_matches(query_map: Tensor, gallery_map: Tensor, matcher: QAConvMatcher) -> MatchInfo:
    """Correspondences and score contributions of one query and one gallery feature map.

    :param query_map, gallery_map: ``[C, h, w]``, L2-normalised over ``C`` at every location.
    :param matcher: its eval-mode head (running statistics) is used whatever its mode, as in
        evaluation; so ``info.score`` is ``matcher.scores_in_chunks(query[None], gallery[None])``.
    :returns: tensors on the maps' device (see :class:`MatchInfo` for the shapes).
    """
    if query_map.dim() != 3 or query_map.shape != gallery_map.shape:
        raise ValueError(
            f"expected two [C, h, w] maps of one shape, got {tuple(query_map.shape)} and "
            f"{tuple(gallery_map.shape)}"
        )
    c, h, w = query_map.shape
    if h * w != matcher.num_locations:
        raise ValueError(
            f"maps have {h} x {w} = {h * w} locations, the matcher was built for "
            f"{matcher.num_locations}"
        )
    # float32 at least: CPU half matmuls are slow, and fp16 would blur near-tied maxima.
    dtype = torch.float64 if query_map.dtype == torch.float64 else torch.float32
    query = query_map.to(dtype).reshape(c, h * w)
    gallery = gallery_map.to(dtype).reshape(c, h * w)
    similarity = query.t() @ gallery  # [N(s), N(r)]
    best_gallery, query_to_gallery = similarity.max(dim=1)
    best_query, gallery_to_query = similarity.max(dim=0)
    w_a, w_b, offset = (t.to(similarity.device) for t in matcher.eval_affine())
    query_contribution = w_a * best_gallery.double()
    gallery_contribution = w_b * best_query.double()
    return MatchInfo(
        grid=(h, w),
        similarity=similarity,
        query_to_gallery=query_to_gallery,
        gallery_to_query=gallery_to_query,
        query_contribution=query_contribution,
        gallery_contribution=gallery_contribution,
        offset=offset,
        score=query_contribution.sum() + gallery_contribution.sum() + offset,
    )
