"""Ranking metrics and distances of reidgen.eval against a textbook oracle and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidgen.eval import chunked_distance, evaluate_ranking, pairwise_distance, ranking

METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def reference_ranking(
    dist: np.ndarray,
    q_pids: np.ndarray,
    q_cams: np.ndarray,
    g_pids: np.ndarray,
    g_cams: np.ndarray,
    ranks: tuple[int, ...] = (1, 5, 10, 20),
) -> dict[str, float]:
    """The Market-1501 protocol one query at a time, straight from the definitions."""
    aps, inps, first_hits = [], [], []
    skipped = 0
    for i in range(len(q_pids)):
        order = np.argsort(dist[i], kind="stable")
        kept = [
            g
            for g in order
            if g_pids[g] != -1 and not (g_pids[g] == q_pids[i] and g_cams[g] == q_cams[i])
        ]
        hit_ranks = [r for r, g in enumerate(kept, start=1) if g_pids[g] == q_pids[i]]
        if not hit_ranks:
            skipped += 1
            continue
        aps.append(np.mean([n / r for n, r in enumerate(hit_ranks, start=1)]))
        inps.append(len(hit_ranks) / hit_ranks[-1])
        first_hits.append(hit_ranks[0])
    metrics = {f"rank{k}": 100.0 * np.mean([f <= k for f in first_hits]) for k in ranks}
    metrics.update(
        mAP=100.0 * np.mean(aps),
        mINP=100.0 * np.mean(inps),
        num_valid_queries=len(aps),
        num_skipped_queries=skipped,
    )
    return metrics


def random_problem(seed: int, ties: bool) -> tuple[np.ndarray, ...]:
    """A small gallery with distractors and junk, plus queries built to hit every edge case."""
    rng = np.random.default_rng(seed)
    num_g, num_pids, num_cams = 150, 12, 4
    g_pids = rng.choice(np.arange(-1, num_pids + 1), size=num_g)  # -1 junk, 0 distractor
    g_pids[:5], g_pids[5:10] = -1, 0  # always some junk and some distractors
    g_cams = rng.integers(0, num_cams, size=num_g)
    g_pids[10:13], g_cams[10:13] = 50, 2  # pid 50 is only ever seen by camera 2

    q_pids = list(rng.integers(1, num_pids + 1, size=40))
    q_cams = list(rng.integers(0, num_cams, size=40))
    # No valid positive: all positives in the query's camera; pid -1 whose only "positives" are
    # gallery junk; a pid absent from the gallery.
    q_pids += [50, -1, 99]
    q_cams += [2, 0, 1]
    perm = rng.permutation(len(q_pids))
    q_pids, q_cams = np.array(q_pids)[perm], np.array(q_cams)[perm]

    shape = (len(q_pids), num_g)
    # Integer-valued float32 distances tie a lot; continuous float64 ones practically never do.
    dist = rng.integers(0, 4, size=shape).astype(np.float32) if ties else rng.random(shape)
    return dist, q_pids, q_cams, g_pids, g_cams


def assert_metrics_close(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_on_random_problems(seed: int, ties: bool) -> None:
    dist, q_pids, q_cams, g_pids, g_cams = random_problem(seed, ties)
    ranks = (1, 2, 5, 10, 20, 1000)  # k beyond the gallery size must simply give 100 %
    result = evaluate_ranking(
        torch.from_numpy(dist), q_pids, q_cams, g_pids, g_cams, chunk_size=16, ranks=ranks
    )
    expected = reference_ranking(dist, q_pids, q_cams, g_pids, g_cams, ranks)
    assert_metrics_close(result, expected)
    # The three hand-built queries without positive (plus possibly some random ones) are skipped.
    assert result["num_skipped_queries"] >= 3
    assert result["num_valid_queries"] + result["num_skipped_queries"] == len(q_pids)


def test_hand_computed_case() -> None:
    #           g0      g1      g2      g3       g4      g5
    g_pids = [1, 2, 1, -1, 0, 1]
    g_cams = [0, 1, 1, 1, 2, 2]
    q_pids, q_cams = [1, 2, 2], [0, 1, 0]
    dist = torch.tensor(
        [
            # q0 (pid 1, cam 0), sorted: g0 g2 g1 g3 g5 g4. g0 is removed (same pid and camera),
            # g3 is junk, so the kept list is g2+ g1- g5+ g4-: hits at ranks 1 and 3.
            # AP = (1/1 + 2/3) / 2 = 5/6, INP = 2 positives / rank 3 = 2/3, first hit at 1.
            [0.1, 0.3, 0.2, 0.4, 0.6, 0.5],
            # q1 (pid 2, cam 1): its only gallery match g1 is in camera 1 too -> skipped.
            [0.5, 0.1, 0.2, 0.3, 0.4, 0.6],
            # q2 (pid 2, cam 0), sorted: g0 g2 g3 g4 g5 g1. g0 (other pid, same camera) stays,
            # junk g3 goes, distractor g4 stays: kept list g0- g2- g4- g5- g1+, hit at rank 5
            # (it would be 6 if junk counted). AP = 1/5, INP = 1/5, first hit at 5.
            [0.1, 0.9, 0.2, 0.3, 0.4, 0.5],
        ]
    )
    result = evaluate_ranking(dist, q_pids, q_cams, g_pids, g_cams, ranks=(1, 4, 5, 10))
    # Two valid queries: rank1 = rank4 = 1/2 (only q0); rank5 = rank10 = 2/2.
    # mAP = (5/6 + 1/5) / 2 = 31/60; mINP = (2/3 + 1/5) / 2 = 13/30.
    assert result == pytest.approx(
        {
            "rank1": 50.0,
            "rank4": 50.0,
            "rank5": 100.0,
            "rank10": 100.0,
            "mAP": 100 * 31 / 60,
            "mINP": 100 * 13 / 30,
            "num_valid_queries": 2,
            "num_skipped_queries": 1,
        }
    )


@pytest.mark.parametrize(("g_pids", "ap"), [([2, 1, 3], 0.5), ([1, 2, 3], 1.0)])
def test_ties_keep_gallery_order(g_pids: list[int], ap: float) -> None:
    # All three distances are equal, so the ranked list is the gallery order: the single
    # positive (pid 1) is at rank 2 (AP = INP = 1/2) or at rank 1 (AP = INP = 1).
    dist = torch.full((1, 3), 0.5)
    result = evaluate_ranking(dist, [1], [0], g_pids, [1, 1, 1], ranks=(1, 2))
    assert result["mAP"] == pytest.approx(100 * ap)
    assert result["mINP"] == pytest.approx(100 * ap)
    assert result["rank1"] == (100.0 if ap == 1.0 else 0.0)
    assert result["rank2"] == 100.0


def test_chunk_size_does_not_change_results() -> None:
    dist, *ids = random_problem(seed=7, ties=True)
    dist = torch.from_numpy(dist)
    expected = evaluate_ranking(dist, *ids, chunk_size=1000)
    for chunk_size in (1, 3, 17):
        assert evaluate_ranking(dist, *ids, chunk_size=chunk_size) == expected


def test_callable_matches_matrix_and_is_asked_for_chunks_only() -> None:
    dist, *ids = random_problem(seed=8, ties=False)
    dist = torch.from_numpy(dist)
    calls: list[tuple[int, int]] = []

    def distance(start: int, stop: int) -> torch.Tensor:
        calls.append((start, stop))
        return dist[start:stop].clone()

    assert evaluate_ranking(distance, *ids, chunk_size=7) == evaluate_ranking(dist, *ids)
    # Consecutive chunks of at most 7 queries that cover every query exactly once.
    assert calls[0][0] == 0 and calls[-1][1] == len(dist)
    assert all(stop - start <= 7 for start, stop in calls)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(calls, calls[1:], strict=False))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_chunked_distance_evaluates_like_full_matrix(metric: str) -> None:
    gen = torch.Generator().manual_seed(0)
    query, gallery = torch.randn(30, 16, generator=gen), torch.randn(80, 16, generator=gen)
    q_pids, q_cams = torch.randint(1, 6, (30,), generator=gen), torch.zeros(30, dtype=torch.int32)
    g_pids, g_cams = torch.randint(0, 6, (80,), generator=gen), torch.ones(80, dtype=torch.int32)

    full = pairwise_distance(query, gallery, metric)
    rows = chunked_distance(query, gallery, metric)
    torch.testing.assert_close(rows(5, 12), full[5:12])
    assert_metrics_close(
        evaluate_ranking(rows, q_pids, q_cams, g_pids, g_cams, chunk_size=4),
        evaluate_ranking(full, q_pids, q_cams, g_pids, g_cams),
    )


def test_no_valid_query_is_an_error() -> None:
    # The only positive shares the query's camera, so nothing can be scored.
    with pytest.raises(ValueError, match="none of the 1 queries"):
        evaluate_ranking(torch.zeros(1, 2), [1], [0], [1, 2], [0, 1])


def test_wrong_shapes_are_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate_ranking(torch.zeros(2, 3), [1], [0], [1, 2, 3], [1, 1, 1])
    with pytest.raises(ValueError, match="shape"):
        evaluate_ranking(lambda start, stop: torch.zeros(1, 2), [1], [0], [1, 2, 3], [1, 1, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    dist, *ids = random_problem(seed=3, ties=True)
    dist = torch.from_numpy(dist)
    assert evaluate_ranking(dist.cuda(), *ids, chunk_size=8) == evaluate_ranking(dist, *ids)


def test_pairwise_distance_matches_direct_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    gallery = torch.randn(11, 5, generator=gen, dtype=torch.float64)
    diff = query[:, None, :] - gallery[None, :, :]  # [Q, G, D]
    cosine = (query[:, None, :] * gallery[None, :, :]).sum(-1) / (
        query.norm(dim=1)[:, None] * gallery.norm(dim=1)[None, :]
    )
    torch.testing.assert_close(
        pairwise_distance(query, gallery, "euclidean"), diff.square().sum(-1)
    )
    torch.testing.assert_close(pairwise_distance(query, gallery, "cosine"), 1 - cosine)
    torch.testing.assert_close(pairwise_distance(query, gallery), 1 - cosine)  # default


def test_cosine_distance_ignores_feature_scale() -> None:
    gen = torch.Generator().manual_seed(1)
    query, gallery = torch.randn(6, 8, generator=gen), torch.randn(9, 8, generator=gen)
    scale = torch.rand(6, 1, generator=gen) * 100 + 0.01  # a different scale per query
    torch.testing.assert_close(
        pairwise_distance(query * scale, gallery * 0.003), pairwise_distance(query, gallery)
    )


def test_euclidean_distance_is_never_negative() -> None:
    # Large vectors compared with themselves: the expansion |q|^2 + |g|^2 - 2 q.g of ~6e7-sized
    # float32 terms cancels badly; unclamped, half of this diagonal is negative (down to -32).
    gen = torch.Generator().manual_seed(2)
    gallery = torch.randn(20, 64, generator=gen) + 1000.0
    assert (pairwise_distance(gallery, gallery, "euclidean") >= 0).all()


def test_unknown_metric_is_an_error() -> None:
    features = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown metric"):
        pairwise_distance(features, features, "manhattan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown metric"):
        chunked_distance(features, features, "manhattan")  # type: ignore[arg-type]


def large_problem(seed: int, kind: str) -> tuple[np.ndarray, ...]:
    """300 queries x 2,000 gallery items (~100 pids over 6 cameras, distractors and junk).

    ``kind`` picks the distances: ``"model"`` (float32, positives mostly near the top, as a
    trained model gives), ``"random"`` (float32, no signal: every query's positives spread over
    the whole list), ``"ties"`` (integers 0..9: ties everywhere, positives against negatives
    too), ``"positive_ties"`` (positives tie with one another but never with a negative),
    ``"non_finite"`` (float64 with +-inf and NaN sprinkled in, positives included).
    """
    rng = np.random.default_rng(seed)
    num_q, num_g, num_pids, num_cams = 300, 2000, 100, 6
    g_pids = rng.integers(1, num_pids + 1, size=num_g)
    g_pids[rng.random(num_g) < 0.15] = 0  # distractors
    g_pids[rng.random(num_g) < 0.05] = -1  # junk
    g_cams = rng.integers(0, num_cams, size=num_g)
    q_pids = rng.integers(1, num_pids + 1, size=num_q)
    q_pids[:3] = [-1, 0, num_pids + 7]  # a junk query, a distractor query, an unknown pid
    q_cams = rng.integers(0, num_cams, size=num_q)

    same_pid = q_pids[:, None] == g_pids[None, :]
    if kind == "model":
        dist = rng.random((num_q, num_g)) + np.where(same_pid, 0.0, 0.6)
    elif kind == "random":
        dist = rng.random((num_q, num_g))
    elif kind == "ties":
        dist = rng.integers(0, 10, size=(num_q, num_g))
    elif kind == "positive_ties":
        # Even values for same-pid items, odd ones for the rest.
        dist = 2 * rng.integers(0, 8, size=(num_q, num_g)) + np.where(same_pid, 0, 1)
    else:
        dist = rng.random((num_q, num_g)) + np.where(same_pid, 0.0, 0.3)
        special = rng.choice([np.inf, -np.inf, np.nan], size=dist.shape)
        dist = np.where(rng.random(dist.shape) < 0.02, special, dist)
        dist[same_pid & (rng.random(dist.shape) < 0.1)] = np.nan
        dist[same_pid & (rng.random(dist.shape) < 0.1)] = np.inf
    dtype = {"ties": np.int64, "positive_ties": np.int64, "non_finite": np.float64}
    return dist.astype(dtype.get(kind, np.float32)), q_pids, q_cams, g_pids, g_cams


@pytest.mark.parametrize("kind", ["model", "random", "ties", "positive_ties", "non_finite"])
def test_matches_reference_on_large_problems(kind: str) -> None:
    dist, *ids = large_problem(seed=11, kind=kind)
    result = evaluate_ranking(torch.from_numpy(dist), *ids, ranks=(1, 5, 10, 20, 100))
    assert_metrics_close(result, reference_ranking(dist, *ids, ranks=(1, 5, 10, 20, 100)))
    assert result["num_skipped_queries"] >= 2  # the junk query and the unknown pid


@pytest.mark.parametrize("kind", ["model", "ties", "non_finite"])
def test_large_results_do_not_depend_on_chunks_or_memory_budget(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist, *ids = large_problem(seed=12, kind=kind)
    dist = torch.from_numpy(dist)
    expected = evaluate_ranking(dist, *ids)  # one chunk, one group of candidates
    for chunk_size in (1, 7, 64, 299):
        assert evaluate_ranking(dist, *ids, chunk_size=chunk_size) == expected
    # A budget this small splits every chunk's candidates into many groups of rows, and hands
    # the collected items to the exact comparison after every chunk.
    monkeypatch.setattr(ranking, "MEMORY_BUDGET", 200_000)
    assert evaluate_ranking(dist, *ids, chunk_size=32) == expected
    assert evaluate_ranking(lambda a, b: dist[a:b].clone(), *ids) == expected


def test_equal_and_negative_zero_distances_tie() -> None:
    # -0.0 == 0.0, so the ranked list keeps gallery order: the negative g0 comes first.
    dist = torch.tensor([[0.0, -0.0, 0.0]])
    result = evaluate_ranking(dist, [1], [0], [2, 1, 1], [1, 1, 1], ranks=(1,))
    assert result["mAP"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)


def test_large_integer_distances_are_not_rounded() -> None:
    # 2**40 + 1 and 2**40 + 2 are one float32 value; ranked as integers, the positive g0 is 2nd.
    big = 2**40
    dist = torch.tensor([[big + 2, big + 1, big + 3]])
    result = evaluate_ranking(dist, [1], [0], [1, 2, 2], [1, 1, 1], ranks=(1, 2))
    assert (result["rank1"], result["rank2"], result["mAP"]) == (0.0, 100.0, 50.0)


def adversarial_problem(seed: int, kind: str) -> tuple[np.ndarray, ...]:
    """30 queries x 90 gallery items laid out to stress the rank-free counting.

    The gallery interleaves, item by item, junk (pid -1), distractors (pid 0), items of the
    queries' pids in the queries' cameras (removed) and in other cameras (positives). ``kind``
    picks the distances: ``"random"`` (continuous), ``"ties"`` (integers 0..2: ties between
    positives, negatives, junk and removed items everywhere), ``"positives_last"`` and
    ``"positives_first"`` (every same-pid item behind, or ahead of, every other item),
    ``"equal"`` (every row constant: the ranked list is the gallery order) and ``"nan_last"``
    (positives at NaN or +inf, negatives tied at the same finite value).
    """
    rng = np.random.default_rng(seed)
    num_q, num_g, num_pids = 30, 90, 6
    q_pids = rng.integers(1, num_pids + 1, size=num_q)
    q_cams = rng.integers(0, 2, size=num_q)  # cameras 0 and 1; the gallery also has 2 and 3
    pattern = np.arange(num_g) % 5
    g_pids = np.where(pattern == 0, -1, np.where(pattern == 1, 0, rng.integers(1, 7, num_g)))
    g_cams = np.where(pattern == 2, rng.integers(0, 2, num_g), rng.integers(0, 4, num_g))
    same_pid = q_pids[:, None] == g_pids[None, :]
    shape = (num_q, num_g)
    if kind == "random":
        dist = rng.random(shape)
    elif kind == "ties":
        dist = rng.integers(0, 3, size=shape).astype(np.float64)
    elif kind == "positives_last":
        dist = rng.random(shape) + np.where(same_pid, 2.0, 0.0)
    elif kind == "positives_first":
        dist = rng.random(shape) + np.where(same_pid, 0.0, 2.0)
    elif kind == "equal":
        dist = np.broadcast_to(rng.random((num_q, 1)), shape).copy()
    else:
        dist = np.where(same_pid, rng.choice([np.nan, np.inf], size=shape), 1.0)
    return dist.astype(np.float32), q_pids, q_cams, g_pids, g_cams


@pytest.mark.parametrize("dense_fraction", [0.0, 2.0])  # always or never binned in place
@pytest.mark.parametrize(
    "kind", ["random", "ties", "positives_last", "positives_first", "equal", "nan_last"]
)
def test_matches_brute_force_on_adversarial_distances(
    kind: str, dense_fraction: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ranking, "_DENSE_FRACTION", dense_fraction)
    dist, *ids = adversarial_problem(seed=5, kind=kind)
    ranks = (1, 3, 10, 100)
    expected = reference_ranking(dist, *ids, ranks=ranks)
    tensor = torch.from_numpy(dist)
    for chunk_size in (1, 4, None):
        by_tensor = evaluate_ranking(tensor, *ids, chunk_size=chunk_size, ranks=ranks)
        assert_metrics_close(by_tensor, expected)
        by_callable = evaluate_ranking(
            lambda a, b: tensor[a:b].clone(), *ids, chunk_size=chunk_size, ranks=ranks
        )
        assert by_callable == by_tensor


@pytest.mark.parametrize("kind", ["random", "ties", "positives_last"])
def test_dense_scan_splits_blocks_and_groups_alike(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A budget this small cuts the in-place binning into blocks of a row or two and its items
    # into many groups, each finished on its own.
    dist, *ids = adversarial_problem(seed=6, kind=kind)
    expected = reference_ranking(dist, *ids)
    monkeypatch.setattr(ranking, "_DENSE_FRACTION", 0.0)
    monkeypatch.setattr(ranking, "MEMORY_BUDGET", 2_000)
    assert_metrics_close(evaluate_ranking(torch.from_numpy(dist), *ids, chunk_size=8), expected)
