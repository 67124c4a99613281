"""Per-dataset protocols and average query expansion: hand-worked cases and plain-loop oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from reidgen.eval import chunked_distance, evaluate_ranking, pairwise_distance
from reidgen.eval.protocols import (
    CUHK03ClassicProtocol,
    MarketProtocol,
    VehicleIDProtocol,
    VeRiProtocol,
    sampling_keys,
)
from reidgen.eval.query_expansion import average_query_expansion


def assert_metrics_close(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=1e-9), key


def random_problem(seed: int, num_q: int = 30, num_g: int = 120, num_pids: int = 8):
    """Float64 distances (no ties) with several images per pid and camera, junk and distractors."""
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(0, num_pids + 1, size=num_g)  # 0 = distractor
    g_pids[:3] = -1
    g_cams = rng.integers(0, 3, size=num_g)
    q_pids = rng.integers(1, num_pids + 1, size=num_q)
    q_cams = rng.integers(0, 3, size=num_q)
    dist = rng.random((num_q, num_g))
    return dist, q_pids, q_cams, g_pids, g_cams


def reference_hits(dist, q_pids, q_cams, g_pids, g_cams, i):
    """Kept gallery list of query i in ranked order, and the 1-based ranks of its positives."""
    order = np.argsort(dist[i], kind="stable")
    kept = [
        g
        for g in order
        if g_pids[g] != -1 and not (g_pids[g] == q_pids[i] and g_cams[g] == q_cams[i])
    ]
    return kept, [r for r, g in enumerate(kept, start=1) if g_pids[g] == q_pids[i]]


# ----------------------------------------------------------------------------- Market and VeRi


def test_market_protocol_is_evaluate_ranking() -> None:
    dist, *ids = random_problem(0)
    dist = torch.from_numpy(dist)
    protocol = MarketProtocol(ranks=[1, 3], chunk_size=7)
    expected = evaluate_ranking(dist, *ids, ranks=(1, 3))
    assert protocol.evaluate(dist, *ids) == expected
    assert protocol.evaluate(lambda a, b: dist[a:b], *ids) == expected
    assert not protocol.pooled


def test_veri_hand_computed_case() -> None:
    # Query: vehicle 5 seen by camera 2. Gallery sorted by distance:
    #   g0 v5 c2 (junk: same vehicle, same camera)   g1 v7 c3 (negative)
    #   g2 v5 c4 (positive)                          g3 v5 c2 (junk)
    #   g4 v5 c9 (positive)                          g5 v8 c2 (negative: other vehicle, same camera)
    # Kept list g1- g2+ g4+ g5-: hits at ranks 2 and 3.
    # AP = (1/2 + 2/3) / 2 = 7/12, INP = 2 / 3, rank-1 misses, rank-2 hits.
    dist = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    result = VeRiProtocol(ranks=(1, 2, 5)).evaluate(
        dist, [5], [2], [5, 7, 5, 5, 5, 8], [2, 3, 4, 2, 9, 2]
    )
    assert result == pytest.approx(
        {
            "rank1": 0.0,
            "rank2": 100.0,
            "rank5": 100.0,
            "mAP": 100 * 7 / 12,
            "mINP": 100 * 2 / 3,
            "num_valid_queries": 1,
            "num_skipped_queries": 0,
        }
    )


def reference_veri_with_index_lists(dist, q_pids, q_cams, g_pids, g_cams):
    """The official VeRi procedure: per query a good list and a junk list of gallery indices.

    good = same vehicle, other camera; junk (``jk_index``) = same vehicle, same camera. Rank the
    gallery without the junk and take the non-interpolated AP over the good images.
    """
    aps, first = [], []
    for i in range(len(q_pids)):
        good = {g for g in range(len(g_pids)) if g_pids[g] == q_pids[i] and g_cams[g] != q_cams[i]}
        junk = {g for g in range(len(g_pids)) if g_pids[g] == q_pids[i] and g_cams[g] == q_cams[i]}
        if not good:
            continue
        ranked = [g for g in np.argsort(dist[i], kind="stable") if g not in junk]
        good_ranks = [r for r, g in enumerate(ranked, start=1) if g in good]
        aps.append(np.mean([n / r for n, r in enumerate(good_ranks, start=1)]))
        first.append(good_ranks[0])
    return 100 * np.mean(aps), [100 * np.mean([f <= k for f in first]) for k in (1, 5)]


def test_veri_matches_official_junk_list_rule() -> None:
    # Vehicle data: no junk pid, no distractor; 20 cameras.
    rng = np.random.default_rng(3)
    g_pids, g_cams = rng.integers(1, 10, 200), rng.integers(0, 20, 200)
    q_pids, q_cams = rng.integers(1, 10, 40), rng.integers(0, 20, 40)
    dist = rng.random((40, 200))
    result = VeRiProtocol(ranks=(1, 5)).evaluate(
        torch.from_numpy(dist), q_pids, q_cams, g_pids, g_cams
    )
    mean_ap, (rank1, rank5) = reference_veri_with_index_lists(dist, q_pids, q_cams, g_pids, g_cams)
    assert result["mAP"] == pytest.approx(mean_ap)
    assert result["rank1"] == pytest.approx(rank1)
    assert result["rank5"] == pytest.approx(rank5)


# ----------------------------------------------------------------------------- CUHK03 classic


def reference_cuhk03(dist, q_pids, q_cams, g_pids, g_cams, repeats, seed, ranks):
    """Single-gallery-shot CMC one query and round at a time, with the protocol's random keys."""
    hits, aps, inps = [], [], []
    for i in range(len(q_pids)):
        kept, positives = reference_hits(dist, q_pids, q_cams, g_pids, g_cams, i)
        if not positives:
            continue
        aps.append(np.mean([n / r for n, r in enumerate(positives, start=1)]))
        inps.append(len(positives) / positives[-1])
        for repeat in range(repeats):
            keys = sampling_keys(seed, repeat, torch.tensor([i]), len(g_pids))[0].tolist()
            chosen = {}  # pid -> kept gallery item with the largest key
            for g in kept:
                if g_pids[g] not in chosen or keys[g] > keys[chosen[g_pids[g]]]:
                    chosen[g_pids[g]] = g
            sampled = [g for g in kept if chosen[g_pids[g]] == g]  # still in ranked order
            hits.append(1 + [g_pids[g] for g in sampled].index(q_pids[i]))
    metrics = {f"rank{k}": 100 * np.mean([h <= k for h in hits]) for k in ranks}
    metrics.update(
        mAP=100 * np.mean(aps),
        mINP=100 * np.mean(inps),
        num_valid_queries=len(aps),
        num_skipped_queries=len(q_pids) - len(aps),
    )
    return metrics


# Query pid 1 camera 0; gallery in distance order:
#   g0 pid 2 c1 (.1)  g1 pid 1 c0 (.15, removed: same pid and camera)  g2 pid 1 c1 (.2)
#   g3 pid 2 c1 (.3)  g4 pid 3 c1 (.4)  g5 pid 1 c1 (.5)
# Kept list g0(2) g2(1) g3(2) g4(3) g5(1). Each round keeps one of {g0, g3}, one of {g2, g5}, g4:
#   positive g2, g3 kept -> rank 1;  positive g2, g0 kept -> rank 2;  positive g5 -> rank 3.
# So E[rank-1] = 1/4, E[rank-2] = 1/2, rank-3 = 1 always.
# mAP / mINP use the full kept list: positives at 2 and 5, AP = (1/2 + 2/5)/2 = 0.45, INP = 2/5.
HAND_DIST = torch.tensor([[0.1, 0.15, 0.2, 0.3, 0.4, 0.5]])
HAND_IDS = ([1], [0], [2, 1, 1, 2, 3, 1], [1, 0, 1, 1, 1, 1])


def test_cuhk03_hand_computed_expectation() -> None:
    result = CUHK03ClassicProtocol(repeats=4000, seed=0, ranks=(1, 2, 3)).evaluate(
        HAND_DIST, *HAND_IDS
    )
    # 4000 rounds: the standard error of a 1/4 frequency is 100 * sqrt(3/16 / 4000) = 0.7 points.
    assert result["rank1"] == pytest.approx(25.0, abs=3.0)
    assert result["rank2"] == pytest.approx(50.0, abs=3.5)
    assert result["rank3"] == 100.0
    assert result["mAP"] == pytest.approx(45.0)
    assert result["mINP"] == pytest.approx(40.0)
    assert result["num_valid_queries"] == 1


def test_cuhk03_one_image_per_identity_is_market_cmc() -> None:
    # Nothing to sample when each gallery identity has one image: the CMC equals Market's.
    rng = np.random.default_rng(1)
    g_pids = np.arange(1, 41)
    dist = torch.from_numpy(rng.random((25, 40)))
    ids = (rng.integers(1, 41, 25), np.zeros(25, int), g_pids, np.ones(40, int))
    assert_metrics_close(
        CUHK03ClassicProtocol(repeats=3).evaluate(dist, *ids), evaluate_ranking(dist, *ids)
    )


@pytest.mark.parametrize("seed", [0, 5])
def test_cuhk03_matches_reference_loop(seed: int) -> None:
    dist, *ids = random_problem(seed + 10)
    protocol = CUHK03ClassicProtocol(repeats=4, seed=seed, ranks=(1, 2, 5), chunk_size=8)
    expected = reference_cuhk03(dist, *ids, repeats=4, seed=seed, ranks=(1, 2, 5))
    assert_metrics_close(protocol.evaluate(torch.from_numpy(dist), *ids), expected)


def test_cuhk03_chunking_and_callable_do_not_change_results() -> None:
    dist, *ids = random_problem(2)
    dist = torch.from_numpy(dist)
    expected = CUHK03ClassicProtocol(chunk_size=1000).evaluate(dist, *ids)
    for chunk_size in (1, 7):
        protocol = CUHK03ClassicProtocol(chunk_size=chunk_size)
        assert protocol.evaluate(dist, *ids) == pytest.approx(expected)
        assert protocol.evaluate(lambda a, b: dist[a:b], *ids) == pytest.approx(expected)


def test_cuhk03_seeding() -> None:
    dist, *ids = random_problem(4, num_pids=4)  # ~25 images per pid: the draw matters
    dist = torch.from_numpy(dist)
    results = [CUHK03ClassicProtocol(repeats=2, seed=s).evaluate(dist, *ids) for s in (0, 0, 1)]
    assert results[0] == results[1]
    assert results[0] != results[2]
    assert results[0]["mAP"] == results[2]["mAP"]  # mAP does not depend on the draw


def test_cuhk03_sampled_gallery_keeps_one_kept_image_per_identity() -> None:
    _, q_pids, q_cams, g_pids, g_cams = random_problem(6)
    protocol = CUHK03ClassicProtocol(seed=3)
    index = torch.arange(len(q_pids))
    masks = [protocol.sampled_gallery(r, index, q_pids, q_cams, g_pids, g_cams) for r in (0, 1)]
    assert not torch.equal(masks[0], masks[1])
    for i in range(len(q_pids)):
        kept = [
            g
            for g in range(len(g_pids))
            if g_pids[g] != -1 and not (g_pids[g] == q_pids[i] and g_cams[g] == q_cams[i])
        ]
        chosen = masks[0][i].nonzero().flatten().tolist()
        assert set(chosen) <= set(kept)
        assert sorted(g_pids[chosen]) == sorted({g_pids[g] for g in kept})  # one per identity
    # The draw depends on the query's position, not on which other queries are drawn with it.
    part = protocol.sampled_gallery(0, index[5:9], q_pids[5:9], q_cams[5:9], g_pids, g_cams)
    assert torch.equal(part, masks[0][5:9])


# ----------------------------------------------------------------------------- VehicleID


def test_vehicleid_splits_one_gallery_image_per_vehicle() -> None:
    pids = np.random.default_rng(0).integers(100, 130, size=200)
    protocol = VehicleIDProtocol(repeats=10, seed=1)
    splits = protocol.splits(pids)
    assert len(splits) == 10
    for query, gallery in splits:
        assert sorted(pids[gallery]) == sorted(set(pids))  # exactly one image per vehicle
        assert sorted(torch.cat([query, gallery]).tolist()) == list(range(200))  # a partition
    galleries = {tuple(g.tolist()) for _, g in splits}
    assert len(galleries) == 10  # the rounds draw different galleries
    same = VehicleIDProtocol(repeats=10, seed=1).splits(pids)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(splits, same, strict=True))
    other = VehicleIDProtocol(repeats=10, seed=2).splits(pids)
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(splits, other, strict=True))


def test_vehicleid_hand_computed_case() -> None:
    # Vehicles A = {0, 1}, B = {2, 3}. d(0, 1) = 0.1, d(2, 3) = 0.9, all A-B pairs 0.5.
    # Whatever the draw, the gallery is {one A, one B} and the queries are the other A and B:
    #   the A query finds its A at 0.1 before B at 0.5 -> rank 1, AP 1;
    #   the B query sees A at 0.5 before its B at 0.9  -> rank 2, AP 1/2.
    # rank1 = 50, rank2 = 100, mAP = mINP = (1 + 1/2) / 2 = 75.
    dist = torch.full((4, 4), 0.5)
    dist[0, 1] = dist[1, 0] = 0.1
    dist[2, 3] = dist[3, 2] = 0.9
    dist.fill_diagonal_(0.0)
    result = VehicleIDProtocol(repeats=5, ranks=(1, 2)).evaluate_all(dist, [7, 7, 9, 9])
    assert result == pytest.approx(
        {
            "rank1": 50.0,
            "rank2": 100.0,
            "mAP": 75.0,
            "mINP": 75.0,
            "num_valid_queries": 2,
            "num_skipped_queries": 0,
            "num_gallery": 2,
        }
    )


def test_vehicleid_matches_reference_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    pids = torch.randint(0, 25, (150,), generator=gen)
    centres = torch.randn(25, 16, generator=gen)
    features = centres[pids] + 1.2 * torch.randn(150, 16, generator=gen)
    dist = pairwise_distance(features, features).double()
    protocol = VehicleIDProtocol(repeats=3, seed=4, ranks=(1, 5), chunk_size=9)

    per_round = []
    for query, gallery in protocol.splits(pids):  # the protocol's draw, evaluated by hand
        first, aps = [], []
        for q in query.tolist():
            ranked = sorted(gallery.tolist(), key=lambda g: (dist[q, g].item(), g))
            hit = 1 + [int(pids[g]) for g in ranked].index(int(pids[q]))  # the only positive
            first.append(hit)
            aps.append(1 / hit)  # one positive: AP = INP = 1 / its rank
        per_round.append([np.mean([f <= 1 for f in first]), np.mean([f <= 5 for f in first])])
        per_round[-1].append(np.mean(aps))
    rank1, rank5, mean_ap = 100 * np.mean(per_round, axis=0)

    result = protocol.evaluate_all(dist, pids)
    assert result["rank1"] == pytest.approx(rank1)
    assert result["rank5"] == pytest.approx(rank5)
    assert result["mAP"] == pytest.approx(mean_ap)
    assert result["mINP"] == pytest.approx(mean_ap)
    assert result["num_gallery"] == len(torch.unique(pids))
    assert result["num_valid_queries"] == 150 - len(torch.unique(pids))

    # Pool rows computed on demand give the same numbers; every row block is asked for once,
    # for all rounds together.
    calls = []
    rows = chunked_distance(features, features)

    def distance(start: int, stop: int) -> torch.Tensor:
        calls.append((start, stop))
        return rows(start, stop).double()

    assert protocol.evaluate_all(distance, pids) == pytest.approx(result)
    assert calls == [(s, min(s + 9, 150)) for s in range(0, 150, 9)]
    assert VehicleIDProtocol(repeats=3, seed=5).evaluate_all(dist, pids) != result


def test_vehicleid_needs_queries() -> None:
    with pytest.raises(ValueError, match="no queries"):
        VehicleIDProtocol().evaluate_all(torch.zeros(3, 3), [1, 2, 3])


# ----------------------------------------------------------------------------- config


def test_protocols_build_from_config() -> None:
    protocol = instantiate(
        {"_target_": "reidgen.eval.protocols.CUHK03ClassicProtocol", "repeats": 3, "ranks": [1, 5]}
    )
    assert isinstance(protocol, CUHK03ClassicProtocol)
    assert protocol.ranks == (1, 5) and protocol.repeats == 3 and protocol.seed == 0
    protocol = instantiate({"_target_": "reidgen.eval.protocols.VehicleIDProtocol", "seed": 2})
    assert protocol.pooled and protocol.seed == 2
    with pytest.raises(ValueError, match="repeats"):
        CUHK03ClassicProtocol(repeats=0)


# ----------------------------------------------------------------------------- query expansion


def test_aqe_hand_computed_2d() -> None:
    # Unit vectors: q = (1, 0); gallery a = (0.8, 0.6), b = (0, 1), c = (-1, 0).
    # top_k = 2 (itself + 1 neighbour), alpha = 1, neighbours among queries and gallery:
    #   q: nearest other is a (cos 0.8): q' ∝ (1, 0) + 0.8 (0.8, 0.6) = (1.64, 0.48)
    #   a: nearest other is q (0.8; b is 0.6): a' ∝ (0.8, 0.6) + 0.8 (1, 0) = (1.6, 0.6)
    #   b: nearest other is a (0.6): b' ∝ (0, 1) + 0.6 (0.8, 0.6) = (0.48, 1.36)
    #   c: all others have cos <= 0 -> weight 0 (clamped): c' = (-1, 0)
    query = torch.tensor([[2.0, 0.0]])  # scale does not matter, it is normalised first
    gallery = torch.tensor([[0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    q, g = average_query_expansion(query, gallery, top_k=2, alpha=1.0)
    expected = torch.tensor([[1.64, 0.48], [1.6, 0.6], [0.48, 1.36], [-1.0, 0.0]])
    torch.testing.assert_close(torch.cat([q, g]), F.normalize(expected, dim=1))

    # alpha = 3: q' ∝ (1, 0) + 0.512 (0.8, 0.6) = (1.4096, 0.3072).
    q3, _ = average_query_expansion(query, gallery, top_k=2, alpha=3.0)
    torch.testing.assert_close(q3, F.normalize(torch.tensor([[1.4096, 0.3072]]), dim=1))

    # Gallery-only neighbours: a's nearest other is now b (0.6): a' ∝ (0.8, 1.2).
    _, g_only = average_query_expansion(query, gallery, top_k=2, alpha=1.0, neighbours="gallery")
    torch.testing.assert_close(g_only[0], F.normalize(torch.tensor([0.8, 1.2]), dim=0))

    # alpha = 0, top_k = 3: plain mean of q, a, b -> (1.8, 1.6) / 3, normalised.
    q0, _ = average_query_expansion(query, gallery, top_k=3, alpha=0.0)
    torch.testing.assert_close(q0[0], F.normalize(torch.tensor([1.8, 1.6]), dim=0))

    # top_k = 1 is the identity (after normalisation).
    q1, g1 = average_query_expansion(query, gallery, top_k=1)
    torch.testing.assert_close(torch.cat([q1, g1]), F.normalize(torch.cat([query, gallery]), dim=1))


def test_aqe_chunking_does_not_change_results() -> None:
    gen = torch.Generator().manual_seed(0)
    query, gallery = torch.randn(23, 8, generator=gen), torch.randn(57, 8, generator=gen)
    for neighbours in ("all", "gallery"):
        expected = average_query_expansion(query, gallery, neighbours=neighbours, iterations=2)
        actual = average_query_expansion(
            query, gallery, neighbours=neighbours, iterations=2, chunk_size=5
        )
        torch.testing.assert_close(actual, expected)


def test_aqe_improves_map_on_clustered_features() -> None:
    # 30 identities, 6 gallery and 2 query images each, embeddings = centre + heavy noise.
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 32, generator=gen)
    g_pids, q_pids = torch.arange(30).repeat_interleave(6), torch.arange(30).repeat_interleave(2)
    gallery = centres[g_pids] + 1.0 * torch.randn(180, 32, generator=gen)
    query = centres[q_pids] + 1.0 * torch.randn(60, 32, generator=gen)
    ids = (q_pids + 1, torch.zeros(60), g_pids + 1, torch.ones(180))
    protocol = MarketProtocol()
    before = protocol.evaluate(pairwise_distance(query, gallery), *ids)
    q, g = average_query_expansion(query, gallery, top_k=5, alpha=3.0)
    after = protocol.evaluate(pairwise_distance(q, g), *ids)
    assert before["mAP"] < 90  # not already solved
    assert after["mAP"] > before["mAP"] + 2
    assert math.isclose(float(q.norm(dim=1).mean()), 1.0, rel_tol=1e-5)
