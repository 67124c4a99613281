"""Average query expansion (alpha-QE), as fast-reid applies it before ranking.

What is implemented (``docs/evaluation.md`` §4.7, fast-reid ``TEST.AQE``):

* every embedding, query *and* gallery, is replaced by the weighted mean of itself and its
  ``top_k - 1`` most cosine-similar embeddings, each neighbour weighted by ``similarity**alpha``
  (itself has similarity 1, hence weight 1);
* by default the neighbours are searched among queries and gallery together
  (``neighbours="all"``), as fast-reid does; ``neighbours="gallery"`` searches the gallery only,
  so that no query influences another (the inductive variant of classic alpha-QE + database-side
  augmentation);
* ``iterations`` rounds (fast-reid ``QE_TIME``, default 1). As in fast-reid, each round finds
  neighbours and weights with the L2-normalised output of the previous round, but averages that
  output *as it is*, unnormalised; only the final result is L2-normalised. From round two on this
  differs from renormalising after every round: rows whose neighbours agree closely (long weighted
  sums) pull harder on their own neighbours in the next round.

Differences from fast-reid, on purpose:

* the input embeddings are L2-normalised before the first round (reidgen's default cosine
  distance); fast-reid averages the *raw* input features in its first round. The two agree
  exactly, in every round, on L2-normalised inputs, and differ otherwise;
* "itself plus ``top_k - 1`` others" is explicit, where fast-reid takes the top ``top_k`` and
  relies on the item itself coming first; both agree unless exact duplicates tie with it;
* negative similarities get weight 0 instead of a negative or NaN power (``alpha`` need not be
  an integer); with ``alpha = 0`` every neighbour gets weight 1, i.e. a plain mean;
* the result is returned L2-normalised (fast-reid returns the unnormalised mean; its cosine
  distance normalises it anyway, so rankings agree).

Rows are processed ``chunk_size`` at a time, so only a ``[chunk_size, Q + G]`` similarity block
exists at once, never the full ``[Q + G, Q + G]`` matrix.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Neighbours = Literal["all", "gallery"]


def average_query_expansion(
    query_features: Tensor,
    gallery_features: Tensor,
    top_k: int = 5,
    alpha: float = 3.0,
    *,
    neighbours: Neighbours = "all",
    iterations: int = 1,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Expand query and gallery embeddings with their nearest neighbours.

    :param query_features: ``[Q, D]`` embeddings (any scale; they are L2-normalised first).
    :param gallery_features: ``[G, D]``.
    :param top_k: how many embeddings are averaged, the item itself included (fast-reid ``QE_K``);
        1 leaves the (normalised) embeddings unchanged.
    :param alpha: neighbour weight exponent, weight = ``max(similarity, 0) ** alpha``; 0 gives a
        plain mean.
    :param neighbours: ``"all"`` searches neighbours among queries and gallery (fast-reid),
        ``"gallery"`` among the gallery only.
    :param iterations: rounds of expansion (fast-reid ``QE_TIME``); each round averages the
        previous round's unnormalised output, see the module docstring. 0 returns the normalised
        inputs.
    :param chunk_size: rows per similarity block; bounds memory to ``O(chunk_size * (Q + G))``.

    :returns: ``(expanded_query [Q, D], expanded_gallery [G, D])``, L2-normalised, on the input
        device and in the input dtype.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    if alpha < 0:
        raise ValueError(f"alpha must be non-negative, got {alpha}")
    if neighbours not in ("all", "gallery"):
        raise ValueError(f"neighbours must be 'all' or 'gallery', got {neighbours!r}")
    if iterations < 0 or chunk_size < 1:
        raise ValueError("iterations must be >= 0 and chunk_size >= 1")
    if query_features.shape[1:] != gallery_features.shape[1:] or query_features.dim() != 2:
        raise ValueError(
            f"expected [Q, D] and [G, D] features, got {tuple(query_features.shape)} "
            f"and {tuple(gallery_features.shape)}"
        )

    # ``query``/``gallery`` hold each round's unnormalised output (what the next round averages);
    # only neighbour search and weights use their normalised form, as in fast-reid.
    query = F.normalize(query_features, dim=1)
    gallery = F.normalize(gallery_features, dim=1)
    num_q = len(query)
    for _ in range(iterations):
        unit_query, unit_gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
        if neighbours == "all":
            unit_pool, pool = torch.cat([unit_query, unit_gallery]), torch.cat([query, gallery])
            new_query = _expand(unit_query, query, unit_pool, pool, 0, top_k, alpha, chunk_size)
            new_gallery = _expand(
                unit_gallery, gallery, unit_pool, pool, num_q, top_k, alpha, chunk_size
            )
        else:
            new_query = _expand(
                unit_query, query, unit_gallery, gallery, None, top_k, alpha, chunk_size
            )
            new_gallery = _expand(
                unit_gallery, gallery, unit_gallery, gallery, 0, top_k, alpha, chunk_size
            )
        # Both sides are expanded from the same round's features, as in one fast-reid pass.
        query, gallery = new_query, new_gallery
    return F.normalize(query, dim=1), F.normalize(gallery, dim=1)


def _expand(
    unit_features: Tensor,
    features: Tensor,
    unit_pool: Tensor,
    pool: Tensor,
    self_offset: int | None,
    top_k: int,
    alpha: float,
    chunk_size: int,
) -> Tensor:
    """Expand ``features [M, D]`` with neighbours from ``pool [N, D]``, unnormalised.

    Neighbours and weights come from the normalised ``unit_features`` and ``unit_pool``; the
    averaged vectors are ``features`` and ``pool`` as they are. ``self_offset``: row i of
    ``features`` is row ``self_offset + i`` of ``pool``, or None when ``features`` is not part of
    the pool. The item itself is always added with weight 1, and is excluded from the neighbour
    search so that it is not counted twice. The sum is divided by the number of terms (a mean, as
    fast-reid's): the same factor for every row, so directions are unchanged, but magnitudes stay
    bounded over many rounds.
    """
    num_others = min(top_k - 1, len(pool) - (0 if self_offset is None else 1))
    out = torch.empty_like(features)
    for start in range(0, len(features), chunk_size):
        stop = min(start + chunk_size, len(features))
        expanded = features[start:stop].clone()  # [C, D]
        if num_others > 0:
            sim = unit_features[start:stop] @ unit_pool.T  # [C, N]
            if self_offset is not None:
                local = torch.arange(stop - start, device=sim.device)
                sim[local, self_offset + start + local] = -torch.inf
            top_sim, top_index = sim.topk(num_others, dim=1)  # [C, k - 1]
            weight = top_sim.clamp_min(0.0).pow(alpha)
            expanded += (weight[:, :, None] * pool[top_index]).sum(dim=1)
        out[start:stop] = expanded / (num_others + 1)
    return out
