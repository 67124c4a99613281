"""QAConv's location matching: which query location matches which gallery location, and each
location's term of the eval-mode score, against a loop-by-loop computation of the definition."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from reidgen.methods.qaconv.matcher import QAConvMatcher
from reidgen.methods.qaconv.matches import location_matches
from tests.viz.test_qaconv_matches import C, H, N, W, configured, unit_maps


def slow_matches(m: QAConvMatcher, query: Tensor, gallery: Tensor) -> dict[str, list]:
    """The definition, loop by loop, for single maps ``[C, h, w]``: correspondences, each
    location's term of the eval-mode score, and the score through BN -> FC -> BN itself."""

    def bn(x: float, layer: nn.BatchNorm1d) -> float:
        mean, var = layer.running_mean.item(), layer.running_var.item()
        return (x - mean) / math.sqrt(var + layer.eps) * layer.weight.item() + layer.bias.item()

    def gain(layer: nn.BatchNorm1d) -> float:
        return layer.weight.item() / math.sqrt(layer.running_var.item() + layer.eps)

    q, g = query.reshape(query.shape[0], -1), gallery.reshape(gallery.shape[0], -1)
    n = q.shape[1]
    sim = [
        [sum(q[c, s].item() * g[c, r].item() for c in range(q.shape[0])) for r in range(n)]
        for s in range(n)
    ]
    q2g = [max(range(n), key=lambda r, s=s: sim[s][r]) for s in range(n)]
    g2q = [max(range(n), key=lambda s, r=r: sim[s][r]) for r in range(n)]
    a = [sim[s][q2g[s]] for s in range(n)]
    b = [sim[g2q[r]][r] for r in range(n)]
    w = m.fc.weight.reshape(-1).tolist()
    w_a, w_b = (w, w) if m.version == "2.1" else (w[:n], w[n:])
    k = gain(m.bn) * gain(m.logit_bn)  # what one maximum's unit change moves the logit by, per w
    beta = m.fc.bias.item()
    a_bn, b_bn = [bn(x, m.bn) for x in a], [bn(x, m.bn) for x in b]
    y = sum(wi * x for wi, x in zip(w_a, a_bn, strict=True))
    y += sum(wi * x for wi, x in zip(w_b, b_bn, strict=True))
    y += 2 * beta if m.version == "2.1" else beta
    return {
        "q2g": q2g,
        "g2q": g2q,
        "query_contribution": [k * w_a[s] * a[s] for s in range(n)],
        "gallery_contribution": [k * w_b[r] * b[r] for r in range(n)],
        "score": bn(y, m.logit_bn),
    }


@pytest.mark.parametrize("version", ["2.1", "1.x"])
def test_location_matches_equals_a_direct_computation(version: str) -> None:
    m = configured(version)
    query, gallery = unit_maps(C, H, W, seed=1), unit_maps(C, H, W, seed=2)
    info = location_matches(query, gallery, m)
    slow = slow_matches(m, query, gallery)

    assert info.grid == (H, W) and info.similarity.shape == (N, N)
    assert info.query_to_gallery.tolist() == slow["q2g"]
    assert info.gallery_to_query.tolist() == slow["g2q"]
    torch.testing.assert_close(
        info.query_contribution, torch.tensor(slow["query_contribution"], dtype=torch.float64)
    )
    torch.testing.assert_close(
        info.gallery_contribution, torch.tensor(slow["gallery_contribution"], dtype=torch.float64)
    )
    # The score is the sum of the location terms plus the offset, and is the matcher's score.
    total = info.query_contribution.sum() + info.gallery_contribution.sum() + info.offset
    torch.testing.assert_close(info.score, total)
    torch.testing.assert_close(info.score.item(), slow["score"], rtol=0, atol=1e-10)
    chunked = m.scores_in_chunks(query[None], gallery[None])[0, 0]
    torch.testing.assert_close(info.score, chunked, rtol=0, atol=1e-10)
    torch.testing.assert_close(info.score, m(query[None], gallery[None])[0, 0], rtol=0, atol=1e-10)
    # The matcher's mode does not matter: location_matches uses the eval-mode head.
    m.train()
    torch.testing.assert_close(location_matches(query, gallery, m).score, info.score)


def test_location_matches_rejects_mismatched_maps() -> None:
    m = configured("2.1")
    with pytest.raises(ValueError, match="one shape"):
        location_matches(unit_maps(C, H, W, seed=1), unit_maps(C, W, H, seed=2), m)
    with pytest.raises(ValueError, match="built for 6"):
        location_matches(unit_maps(C, 2, 2, seed=1), unit_maps(C, 2, 2, seed=2), m)
