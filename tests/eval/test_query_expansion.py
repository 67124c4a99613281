"""Multi-round average query expansion against a loop-by-loop reference of fast-reid's ``aqe``.

The older single-round AQE tests (hand-computed values, chunking, mAP gain) live in
``tests/eval/test_protocols.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from reidgen.eval.query_expansion import average_query_expansion


def _fast_reid_aqe(
    query: Tensor,
    gallery: Tensor,
    qe_times: int,
    qe_k: int,
    alpha: float,
    *,
    gallery_only: bool = False,
    renormalise_each_round: bool = False,
) -> tuple[Tensor, Tensor]:
    """fast-reid's ``aqe`` (``fastreid/evaluation/query_expansion.py``), one row at a time.

    Each round: similarities of the *normalised* current features, the top ``qe_k`` (the row
    itself first), weights ``sim ** alpha``, and the mean of the *current, unnormalised* features
    times their weights; only the final output is normalised here (fast-reid leaves that to its
    cosine distance). ``gallery_only`` restricts the neighbours to the gallery, the row itself
    always included (reidgen's ``neighbours="gallery"``); ``renormalise_each_round`` is the wrong
    variant that the old reidgen code computed, kept to show that the test can tell them apart.
    """
    num_q = len(query)
    feats = [row.double() for row in torch.cat([query, gallery])]
    for _ in range(qe_times):
        units = [row / row.norm() for row in feats]
        new_feats = []
        for i, unit in enumerate(units):
            candidates = range(num_q, len(feats)) if gallery_only else range(len(feats))
            others = sorted(
                (j for j in candidates if j != i), key=lambda j: -float(unit @ units[j])
            )[: qe_k - 1]
            total = feats[i].clone()  # the row itself: similarity 1, weight 1
            for j in others:
                total += float(unit @ units[j]) ** alpha * feats[j]
            new_feats.append(total / qe_k)
        feats = [row / row.norm() for row in new_feats] if renormalise_each_round else new_feats
    out = torch.stack([row / row.norm() for row in feats]).to(query.dtype)
    return out[:num_q], out[num_q:]


def _positive_features(seed: int, num: int, dim: int = 6) -> Tensor:
    # Non-negative entries keep every cosine similarity >= 0, where fast-reid's odd powers and
    # reidgen's clamp to 0 agree; unit rows make fast-reid's raw first round equal reidgen's.
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.rand(num, dim, generator=gen) ** 3, dim=1)


@pytest.mark.parametrize("iterations", [1, 2, 3])
@pytest.mark.parametrize("neighbours", ["all", "gallery"])
def test_multi_round_aqe_matches_fast_reid_reference(iterations: int, neighbours: str) -> None:
    query, gallery = _positive_features(0, 7), _positive_features(1, 15)
    expected = _fast_reid_aqe(
        query, gallery, iterations, qe_k=4, alpha=3.0, gallery_only=neighbours == "gallery"
    )
    actual = average_query_expansion(
        query, gallery, top_k=4, alpha=3.0, neighbours=neighbours, iterations=iterations
    )
    torch.testing.assert_close(actual, expected)
    # Chunking does not change multi-round results either.
    chunked = average_query_expansion(
        query,
        gallery,
        top_k=4,
        alpha=3.0,
        neighbours=neighbours,
        iterations=iterations,
        chunk_size=3,
    )
    torch.testing.assert_close(chunked, expected)


def test_second_round_averages_unnormalised_outputs() -> None:
    # Renormalising after round one gives a measurably different round two, so matching the
    # reference above is not an accident of the data.
    query, gallery = _positive_features(2, 7), _positive_features(3, 15)
    actual = torch.cat(average_query_expansion(query, gallery, top_k=4, alpha=3.0, iterations=2))
    renormalised = torch.cat(
        _fast_reid_aqe(query, gallery, 2, qe_k=4, alpha=3.0, renormalise_each_round=True)
    )
    assert not torch.allclose(actual, renormalised, atol=1e-5)
    # One round is the same either way.
    one = torch.cat(average_query_expansion(query, gallery, top_k=4, alpha=3.0))
    torch.testing.assert_close(
        one, torch.cat(_fast_reid_aqe(query, gallery, 1, 4, 3.0, renormalise_each_round=True))
    )


def test_input_scale_does_not_matter_and_zero_rounds_normalise() -> None:
    query, gallery = _positive_features(4, 5), _positive_features(5, 9)
    scale = torch.linspace(0.5, 4.0, 5)[:, None]
    torch.testing.assert_close(
        average_query_expansion(query * scale, gallery, top_k=3, iterations=2),
        average_query_expansion(query, gallery, top_k=3, iterations=2),
    )
    q0, g0 = average_query_expansion(query * scale, gallery * 2, iterations=0)
    torch.testing.assert_close(torch.cat([q0, g0]), torch.cat([query, gallery]))
