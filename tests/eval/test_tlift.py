"""TLift: hand-computed values, a loop reference, lifting, a synthetic walk, chunking, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reidgen.data.sample import Sample
from reidgen.eval import evaluate_ranking
from reidgen.eval.tlift import ARXIV_V1_DEFAULTS, ECCV_DEFAULTS, tlift, tlift_distance


def reference_tlift(scores, q_cams, q_times, g_cams, g_times, tau, sigma, K, alpha):
    """One query and one gallery camera at a time, following docs/methods/qaconv.md §8."""
    scores = np.asarray(scores, dtype=np.float64)
    q_cams, g_cams = np.asarray(q_cams), np.asarray(g_cams)
    q_times, g_times = np.asarray(q_times, float), np.asarray(g_times, float)
    weight = np.zeros_like(scores)
    for i in range(len(q_cams)):
        near = np.where((q_cams == q_cams[i]) & (np.abs(q_times - q_times[i]) < tau))[0]
        for cam in np.unique(g_cams):
            cols = np.where(g_cams == cam)[0]
            block = scores[np.ix_(near, cols)]
            flat = np.sort(block, axis=None)[::-1]
            thr = flat[K - 1] if flat.size > K else flat[-1]
            pivots = cols[np.nonzero(block >= thr)[1]]  # with multiplicity
            dt = g_times[cols][:, None] - g_times[pivots][None, :]
            weight[i, cols] = np.exp(-(dt**2) / sigma**2).mean(axis=1)
    return (weight + alpha) * scores


def test_defaults_are_the_eccv_ones():
    params = dict(zip(("tau", "sigma", "K", "alpha"), tlift.__defaults__, strict=True))
    assert params == ECCV_DEFAULTS == {"tau": 100, "sigma": 200, "K": 10, "alpha": 0.2}
    assert ARXIV_V1_DEFAULTS == {"tau": 100, "sigma": 100, "K": 100, "alpha": 0.1}
    assert tlift_distance.__defaults__ == tlift.__defaults__


def test_hand_computed_example():
    # tau=10 s, sigma=20 s, K=3, alpha=0.5.
    # Queries: q0 cam0 t=0, q1 cam0 t=5, q2 cam1 t=100.
    #   nearby (same camera, |dt| < 10): N(q0) = N(q1) = {q0, q1}; N(q2) = {q2}.
    # Gallery: g0 cam0 t=0, g1 cam0 t=20, g2 cam1 t=50, g3 cam1 t=70.
    scores = torch.tensor(
        [
            [0.1, 0.2, 0.8, 0.3],  # q0
            [0.4, 0.3, 0.7, 0.1],  # q1
            [0.5, 0.2, 0.6, 0.9],  # q2
        ],
        dtype=torch.float64,
    )
    out = tlift(scores, [0, 0, 1], [0.0, 5.0, 100.0], [0, 0, 1, 1], [0, 20, 50, 70], 10, 20, 3, 0.5)
    e1 = math.exp(-(20**2) / 20**2)  # kernel at |dt| = 20 s: exp(-1)
    # q0, q1 vs cam0: block [[.1, .2], [.4, .3]], 4 > K entries, sorted .4 .3 .2 .1, thr = .2
    #   -> pivots (q1,g0)=.4, (q1,g1)=.3, (q0,g1)=.2: columns g0, g1, g1 = times 0, 20, 20.
    #   w(g0, t=0) = (1 + 2 e^-1) / 3 = 0.5786;  w(g1, t=20) = (e^-1 + 2) / 3 = 0.7893.
    w_low, w_high = (1 + 2 * e1) / 3, (2 + e1) / 3
    # q0, q1 vs cam1: block [[.8, .3], [.7, .1]], sorted .8 .7 .3 .1, thr = .3
    #   -> pivots g2, g2, g3 = times 50, 50, 70: w(g2) = (2 + e^-1) / 3, w(g3) = (1 + 2 e^-1) / 3.
    # q2 vs cam0: block [[.5, .2]] has 2 <= K entries, thr = min -> pivots g0, g1 (t = 0, 20):
    #   w(g0) = w(g1) = (1 + e^-1) / 2 = 0.6839; vs cam1: [[.6, .9]], pivots g2, g3 (t = 50, 70),
    #   again (1 + e^-1) / 2 for both.
    w_two = (1 + e1) / 2
    weights = torch.tensor(
        [
            [w_low, w_high, w_high, w_low],
            [w_low, w_high, w_high, w_low],
            [w_two, w_two, w_two, w_two],
        ],
        dtype=torch.float64,
    )
    expected = (weights + 0.5) * scores  # e.g. out[q0, g2] = (0.7893 + 0.5) * 0.8 = 1.0314
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert out[0, 2].item() == pytest.approx(1.0314344, abs=1e-6)
    assert out[2, 3].item() == pytest.approx(1.1839397 * 0.9, abs=1e-6)
    args = ([0, 0, 1], [0.0, 5.0, 100.0], [0, 0, 1, 1], [0, 20, 50, 70], 10, 20, 3, 0.5)
    np.testing.assert_allclose(out.numpy(), reference_tlift(scores.numpy(), *args), atol=1e-12)


def test_window_is_strict_and_query_only():
    # q1 is exactly tau = 10 s after q0: not a neighbour, so q0's pivots come from q0 alone.
    scores = torch.tensor([[0.2, 0.1], [0.0, 0.9]], dtype=torch.float64)
    out = tlift(scores, [0, 0], [0.0, 10.0], [1, 1], [0.0, 100.0], tau=10, sigma=50, K=1, alpha=0)
    # q0: block [[.2, .1]], K=1 -> thr .2, pivot g0 (t=0): w(g0) = 1, w(g1) = exp(-100^2/50^2).
    torch.testing.assert_close(out[0], torch.tensor([0.2, 0.1 * math.exp(-4)], dtype=torch.float64))
    # A gallery image close in time to q0's neighbour's match does not make it a neighbour: the
    # gallery supplies no co-occurrence evidence (g0 with t=0 is not used for q1's window).
    # q1: block [[0, .9]] -> pivot g1 (t=100): w(g0) = exp(-4), w(g1) = 1.
    torch.testing.assert_close(out[1], torch.tensor([0.0, 0.9], dtype=torch.float64))


def test_item_near_a_neighbours_match_in_time_is_lifted():
    # q0 (cam0, t=0) has a neighbour q1 (cam0, t=3) whose two clear best matches g0, g1 are in
    # cam1 at t=60 and t=62; with K=2 they are the block's pivots. Gallery items a (cam1, t=65)
    # and b (cam1, t=3000) have equal scores for q0: a sits where q0's companions reappear, b far
    # away. Everything else is a weak background score; q2 (t=5000) is not q0's neighbour.
    q_cams, q_times = [0, 0, 0], [0.0, 3.0, 5000.0]
    g_cams, g_times = [1, 1, 1, 1, 1, 1], [60.0, 62.0, 65.0, 3000.0, 2000.0, 4000.0]
    scores = torch.full((3, 6), 0.02, dtype=torch.float64)
    scores[1, 0], scores[1, 1] = 0.9, 0.8  # q1's matches
    scores[0, 2] = scores[0, 3] = 0.3  # a and b, equal for q0 (below the block's top 2)
    out = tlift(scores, q_cams, q_times, g_cams, g_times, K=2)
    assert out[0, 2] > 3 * out[0, 3]
    # a: w = (exp(-5^2/200^2) + exp(-3^2/200^2)) / 2 = 0.99958 -> (w + 0.2) * 0.3 = 0.35987.
    w_a = (math.exp(-(5**2) / 200**2) + math.exp(-(3**2) / 200**2)) / 2
    assert out[0, 2].item() == pytest.approx((w_a + 0.2) * 0.3, rel=1e-12)
    # b: |dt| >= 2938 s = 14.7 sigma -> w ~ 0, so only alpha * s = 0.06 is left.
    assert out[0, 3].item() == pytest.approx(0.2 * 0.3, rel=1e-9)


def _walk_problem(seed: int, num_ids: int = 200, transit: float = 60.0):
    """Each identity seen in cam0 at T, then in cam1 at T + transit (+ jitter); noisy scores."""
    gen = torch.Generator().manual_seed(seed)
    start = torch.rand(num_ids, generator=gen, dtype=torch.float64) * 4000
    arrive = start + transit + torch.randn(num_ids, generator=gen, dtype=torch.float64) * 5
    match = torch.eye(num_ids, dtype=torch.float64)
    logits = -3 + 2.0 * match + torch.randn(num_ids, num_ids, generator=gen, dtype=torch.float64)
    scores = torch.sigmoid(logits).float()  # small mean, like sigmoid/RR scores
    pids = list(range(1, num_ids + 1))
    query = [Sample(f"q{i}", pids[i], 0, "walk", i, float(start[i])) for i in range(num_ids)]
    gallery = [Sample(f"g{i}", pids[i], 1, "walk", i, float(arrive[i])) for i in range(num_ids)]
    return scores, query, gallery


@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_walk_improves_map(seed):
    scores, query, gallery = _walk_problem(seed)
    q_pids, q_cams = [s.pid for s in query], [s.camid for s in query]
    g_pids, g_cams = [s.pid for s in gallery], [s.camid for s in gallery]
    before = evaluate_ranking(1 - scores, q_pids, q_cams, g_pids, g_cams)
    lifted = tlift(
        scores, q_cams, [s.timestamp for s in query], g_cams, [s.timestamp for s in gallery]
    )
    after = evaluate_ranking(-lifted, q_pids, q_cams, g_pids, g_cams)
    assert after["mAP"] > before["mAP"] + 5
    assert after["rank1"] > before["rank1"]
    distance = tlift_distance(
        1 - scores, q_cams, [s.timestamp for s in query], g_cams, [s.timestamp for s in gallery]
    )
    assert evaluate_ranking(distance, q_pids, q_cams, g_pids, g_cams)["mAP"] == pytest.approx(
        after["mAP"], abs=1e-6
    )


def _random_problem(seed: int, num_q: int = 37, num_g: int = 53, ties: bool = False):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(num_q, num_g, generator=gen, dtype=torch.float64)
    if ties:
        scores = (scores * 4).round() / 4  # many exact ties at the thresholds
    q_cams = torch.randint(0, 3, (num_q,), generator=gen)
    g_cams = torch.randint(0, 4, (num_g,), generator=gen)  # camera 3 has no queries
    q_times = torch.rand(num_q, generator=gen, dtype=torch.float64) * 600
    g_times = torch.rand(num_g, generator=gen, dtype=torch.float64) * 600
    return scores, q_cams, q_times, g_cams, g_times


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("K", [1, 4, 10, 1000])
def test_matches_loop_reference(ties, K):
    scores, q_cams, q_times, g_cams, g_times = _random_problem(3, ties=ties)
    out = tlift(scores, q_cams, q_times, g_cams, g_times, tau=100, sigma=150, K=K, alpha=0.2)
    expected = reference_tlift(
        scores.numpy(), q_cams.numpy(), q_times.numpy(), g_cams.numpy(), g_times.numpy(),
        100, 150, K, 0.2,
    )  # fmt: skip
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_chunking_invariance(monkeypatch):
    scores, q_cams, q_times, g_cams, g_times = _random_problem(5, num_q=64, num_g=80, ties=True)
    scores = scores.float()
    full = tlift(scores, q_cams, q_times, g_cams, g_times, tau=120, K=5)
    for chunk in (1, 3, 17, 1000):
        out = tlift(scores, q_cams, q_times, g_cams, g_times, tau=120, K=5, chunk_size=chunk)
        torch.testing.assert_close(out, full, rtol=1e-6, atol=1e-7)
    assert full.dtype == torch.float32 and full.shape == scores.shape
    # A tiny memory budget forces one query per chunk, one row per candidate block and one pivot
    # slot per kernel block.
    monkeypatch.setattr("reidgen.eval.tlift.MEMORY_BUDGET", 1)
    tiny = tlift(scores, q_cams, q_times, g_cams, g_times, tau=120, K=5)
    torch.testing.assert_close(tiny, full, rtol=1e-6, atol=1e-7)


def test_tlift_distance_round_trip_and_ranking():
    scores, q_cams, q_times, g_cams, g_times = _random_problem(7)
    distance = 1 - scores
    out = tlift_distance(distance, q_cams, q_times, g_cams, g_times)
    lifted = tlift(scores, q_cams, q_times, g_cams, g_times)
    torch.testing.assert_close(out, 1 - lifted)
    assert torch.equal(out.argsort(dim=1, stable=True), (-lifted).argsort(dim=1, stable=True))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tlift_distance(distance + 0.5, q_cams, q_times, g_cams, g_times)


def test_missing_times_raise():
    scores = torch.rand(2, 3)
    with pytest.raises(ValueError, match="query_times.*missing.*index 1"):
        tlift(scores, [0, 0], [0.0, None], [1, 1, 1], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="gallery_times.*missing"):
        tlift(scores, [0, 0], [0.0, 1.0], [1, 1, 1], torch.tensor([1.0, float("nan"), 3.0]))
    with pytest.raises(ValueError, match="gallery_times.*missing"):
        tlift_distance(1 - scores, [0, 0], [0.0, 1.0], [1, 1, 1], np.array([np.nan] * 3))
    # A dataset without time information: every Sample.timestamp is None.
    samples = [Sample(f"x{i}", 1, 0, "msmt", i) for i in range(2)]
    with pytest.raises(ValueError, match="2 of 2 timestamps are missing"):
        tlift(scores, [0, 0], [s.timestamp for s in samples], [1, 1, 1], [1.0, 2.0, 3.0])


def test_invalid_inputs_raise():
    scores = torch.rand(2, 3)
    args = ([0, 0], [0.0, 1.0], [1, 1, 1], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="non-negative"):
        tlift(scores - 1, *args)
    with pytest.raises(ValueError, match="finite"):
        tlift(scores.masked_fill(scores > -1, float("inf")), *args)
    with pytest.raises(ValueError, match="length 3"):
        tlift(scores, [0, 0], [0.0, 1.0], [1, 1], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="K"):
        tlift(scores, *args, K=0)
    with pytest.raises(ValueError, match="integer camera"):
        tlift(scores, [0.0, 0.0], [0.0, 1.0], [1, 1, 1], [1.0, 2.0, 3.0])
    assert tlift(torch.rand(0, 3), [], [], [1, 1, 1], [1.0, 2.0, 3.0]).shape == (0, 3)
