"""QAConvMatcher against a loop-by-loop reading of its definition (docs/methods/qaconv.md §3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reidgen.methods.qaconv.matcher import QAConvMatcher

Q, G, C, H, W = 2, 3, 4, 3, 2
N = H * W


def maps(num: int, seed: int, c: int = C, h: int = H, w: int = W) -> torch.Tensor:
    """Random feature maps ``[num, c, h, w]`` L2-normalised per location over channels."""
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num, c, h, w, generator=gen, dtype=torch.float64), dim=1)


def configured(version: str, num_locations: int = N) -> QAConvMatcher:
    """A float64 matcher in eval mode with non-trivial running stats, affine and FC parameters."""
    torch.manual_seed(0)
    m = QAConvMatcher(num_locations, version).double().eval()
    with torch.no_grad():
        m.bn.running_mean.fill_(0.3)
        m.bn.running_var.fill_(0.5)
        m.bn.weight.fill_(1.7)
        m.bn.bias.fill_(-0.2)
        m.logit_bn.running_mean.fill_(0.4)
        m.logit_bn.running_var.fill_(2.5)
        m.logit_bn.weight.fill_(0.8)
        m.logit_bn.bias.fill_(0.1)
        m.fc.weight.copy_(torch.randn_like(m.fc.weight))
        m.fc.bias.fill_(0.25)
    return m


def slow_scores(m: QAConvMatcher, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """The definition with explicit loops over pairs and location pairs (eval-mode BNs)."""

    def bn(x: float, layer: torch.nn.BatchNorm1d) -> float:
        mean, var = layer.running_mean.item(), layer.running_var.item()
        return (x - mean) / math.sqrt(var + layer.eps) * layer.weight.item() + layer.bias.item()

    w = m.fc.weight.reshape(-1).tolist()
    beta = m.fc.bias.item()
    qf = query.reshape(query.shape[0], query.shape[1], -1)
    gf = gallery.reshape(gallery.shape[0], gallery.shape[1], -1)
    n = qf.shape[2]
    out = torch.zeros(query.shape[0], gallery.shape[0], dtype=torch.float64)
    for i in range(query.shape[0]):
        for j in range(gallery.shape[0]):
            sim = [
                [
                    sum(qf[i, c, s].item() * gf[j, c, r].item() for c in range(qf.shape[1]))
                    for r in range(n)
                ]
                for s in range(n)
            ]
            a = [max(sim[s][r] for r in range(n)) for s in range(n)]  # query -> gallery
            b = [max(sim[s][r] for s in range(n)) for r in range(n)]  # gallery -> query
            a = [bn(x, m.bn) for x in a]
            b = [bn(x, m.bn) for x in b]
            if m.version == "2.1":
                y = (
                    sum(w[k] * a[k] for k in range(n))
                    + beta
                    + sum(w[k] * b[k] for k in range(n))
                    + beta
                )
            else:
                y = sum(w[k] * x for k, x in enumerate(a + b)) + beta
            out[i, j] = bn(y, m.logit_bn)
    return out


@pytest.mark.parametrize("version", ["2.1", "1.x"])
def test_scores_match_definition(version: str) -> None:
    m = configured(version)
    query, gallery = maps(Q, 1), maps(G, 2)
    expected = slow_scores(m, query, gallery)
    torch.testing.assert_close(m(query, gallery), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m.scores_in_chunks(query, gallery), expected, rtol=1e-10, atol=1e-10)


def test_init_and_shapes() -> None:
    m21, m1x = QAConvMatcher(192), QAConvMatcher(192, "1.x")
    assert m21.fc.weight.shape == (1, 192) and torch.all(m21.fc.weight == 1 / 192)
    assert m1x.fc.weight.shape == (1, 384)
    for m in (m21, m1x):
        assert m.bn.num_features == 1 and m.logit_bn.num_features == 1
    with pytest.raises(ValueError):
        QAConvMatcher(192, "2.0")
    with pytest.raises(ValueError):
        m21(maps(2, 0), maps(2, 0))  # 6 locations, not 192


@pytest.mark.parametrize("train", [False, True])
def test_symmetric_21(train: bool) -> None:
    m = configured("2.1").train(train)
    x = maps(5, 3)
    s = m.pairwise(x)
    torch.testing.assert_close(s, s.t(), rtol=1e-12, atol=1e-12)
    m.eval()
    y = maps(3, 4)
    torch.testing.assert_close(m(x, y), m(y, x).t(), rtol=1e-12, atol=1e-12)
    # 1.x has separate weights per direction: not symmetric.
    s1 = configured("1.x").pairwise(x)
    assert not torch.allclose(s1, s1.t())


@pytest.mark.parametrize("version", ["2.1", "1.x"])
def test_pairwise_equals_scores(version: str) -> None:
    x = maps(4, 5)
    for train in (False, True):
        m = configured(version).train(train)
        torch.testing.assert_close(m.pairwise(x), configured(version).train(train)(x, x))


@pytest.mark.parametrize("version", ["2.1", "1.x"])
def test_chunked_equals_unchunked(version: str) -> None:
    query = maps(7, 6, c=8, h=4, w=3).float()
    gallery = maps(11, 7, c=8, h=4, w=3).float()
    m = QAConvMatcher(12, version).eval()
    with torch.no_grad():
        m.bn.running_mean.fill_(0.2)
        m.logit_bn.running_var.fill_(3.0)
        m.fc.weight.normal_()
    full = m(query, gallery)
    for qc, gc in [(1, 1), (2, 3), (3, 4), (7, 11), (100, 5), (4, 100)]:
        torch.testing.assert_close(m.scores_in_chunks(query, gallery, qc, gc), full)
    # Running statistics even in training mode, so chunking never changes the result.
    m.train()
    torch.testing.assert_close(m.scores_in_chunks(query, gallery, 2, 5), full)


def test_distance_fn() -> None:
    m = configured("2.1").float()
    query, gallery = maps(9, 8).float(), maps(6, 9).float()
    scores = m(query, gallery)
    dist = m.distance_fn(query, gallery, query_chunk=2, gallery_chunk=4)
    for start, stop in [(0, 9), (0, 4), (4, 9), (3, 3)]:
        rows = dist(start, stop)
        assert rows.shape == (stop - start, 6)
        torch.testing.assert_close(rows, 1 - torch.sigmoid(scores[start:stop] / 10))
    # Large scores stay distinct (1 - sigmoid would round them all to 0 in float32).
    with torch.no_grad():
        m.logit_bn.bias.fill_(300.0)
    d = m.distance_fn(query, gallery)(0, 9)
    assert torch.all(d > 0) and torch.equal(d.argsort(dim=1), (-scores).argsort(dim=1))


@pytest.mark.parametrize("version", ["2.1", "1.x"])
def test_gradients_in_training(version: str) -> None:
    m = QAConvMatcher(N, version).train()
    x = maps(6, 10).float().requires_grad_()
    s = m.pairwise(x)
    target = torch.eye(6)
    loss = F.binary_cross_entropy_with_logits(s, target) + s.pow(3).mean()
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # Terms the batch-statistics BNs normalise away (a global shift or scale of the maxima or the
    # logits: bn.bias, bn.weight, fc.bias) get ~0 gradient; the rest must be non-zero.
    for p in (m.fc.weight, m.logit_bn.weight, m.logit_bn.bias):
        assert p.grad.abs().max() > 1e-6
    assert x.grad is not None and x.grad.abs().max() > 1e-6
    # Training updates the running statistics of both BNs.
    assert m.bn.running_mean.abs().item() > 0 and m.logit_bn.num_batches_tracked.item() == 1
