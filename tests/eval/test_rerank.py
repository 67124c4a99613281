"""k-reciprocal re-ranking against a straightforward numpy version of the published algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidgen.eval import evaluate_ranking
from reidgen.eval import rerank as rerank_module
from reidgen.eval.rerank import (
    FeatureRows,
    exact_memory_bytes,
    k_reciprocal_rerank,
    rerank,
    rerank_features,
    rerank_topk,
)


def reference_rerank(
    q_g: np.ndarray,
    q_q: np.ndarray,
    g_g: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Zhong et al.'s re-ranking one sample at a time, following the official method's steps.

    Takes plain distances ``q_g [Q, G]``, ``q_q [Q, Q]``, ``g_g [G, G]``; returns ``[Q, G]``.
    """
    num_query = q_g.shape[0]
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    squared = np.power(full, 2).astype(np.float32)
    # The official code divides each column by its max and transposes (= rows, for symmetric input).
    dn = np.transpose(squared / np.max(squared, axis=0))
    num_total = dn.shape[0]
    order = np.argsort(dn).astype(np.int32)

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = order[i, : k + 1]
        backward = order[forward, : k + 1]
        return forward[np.where(backward == i)[0]]

    encoding = np.zeros_like(dn)
    half = int(np.around(k1 / 2))
    for i in range(num_total):
        members = reciprocal(i, k1)
        expanded = members
        for candidate in members:
            candidate_set = reciprocal(candidate, half)
            shared = len(np.intersect1d(candidate_set, members))
            if shared > 2.0 / 3.0 * len(candidate_set):
                expanded = np.append(expanded, candidate_set)
        expanded = np.unique(expanded)
        weight = np.exp(-dn[i, expanded])
        encoding[i, expanded] = weight / np.sum(weight)
    query_dn = dn[:num_query]
    if k2 != 1:
        expanded_encoding = np.zeros_like(encoding)
        for i in range(num_total):
            expanded_encoding[i] = np.mean(encoding[order[i, :k2], :], axis=0)
        encoding = expanded_encoding
    inverted = [np.where(encoding[:, k] != 0)[0] for k in range(num_total)]
    jaccard = np.zeros((num_query, num_total), dtype=np.float32)
    for i in range(num_query):
        shared_min = np.zeros(num_total, dtype=np.float32)
        for k in np.where(encoding[i] != 0)[0]:
            rows = inverted[k]
            shared_min[rows] += np.minimum(encoding[i, k], encoding[rows, k])
        jaccard[i] = 1 - shared_min / (2 - shared_min)
    final = jaccard * (1 - lambda_value) + query_dn * lambda_value
    return final[:, num_query:]


def clustered_problem(
    seed: int, num_ids: int = 15, per_id: int = 10, num_query: int = 30, dim: int = 16
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Features of identities with a few samples each, the queries first.

    Returns:
        ``features [N, D]`` float32, ``pids [N]``, and the number of queries (two per identity
        first, so every query has positives in the gallery).
    """
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_ids, dim, generator=generator)
    pids = torch.arange(num_ids).repeat_interleave(per_id)
    features = centres[pids] + 0.6 * torch.randn(len(pids), dim, generator=generator)
    query_mask = torch.zeros(len(pids), dtype=torch.bool)
    for pid in range(num_ids):
        query_mask[(pids == pid).nonzero()[: num_query // num_ids]] = True
    order = torch.cat([query_mask.nonzero(), (~query_mask).nonzero()]).squeeze(1)
    return features[order], pids[order], int(query_mask.sum())


def euclidean(features: torch.Tensor) -> torch.Tensor:
    return torch.cdist(features.double(), features.double()).float()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_exact_matches_numpy_reference(seed: int) -> None:
    features, _, num_query = clustered_problem(seed)
    distance = euclidean(features)
    ours = k_reciprocal_rerank(distance, num_query).numpy()
    d = distance.numpy()
    reference = reference_rerank(
        d[:num_query, num_query:], d[:num_query, :num_query], d[num_query:, num_query:]
    )
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(np.argsort(ours, axis=1), np.argsort(reference, axis=1))


@pytest.mark.parametrize(("k1", "k2", "lambda_value"), [(7, 1, 0.5), (23, 3, 0.0), (4, 30, 1.0)])
def test_exact_matches_reference_for_other_parameters(
    k1: int, k2: int, lambda_value: float
) -> None:
    features, _, num_query = clustered_problem(5, num_ids=8, per_id=6, num_query=16)
    distance = euclidean(features)
    ours = k_reciprocal_rerank(distance, num_query, k1, k2, lambda_value).numpy()
    d = distance.numpy()
    reference = reference_rerank(
        d[:num_query, num_query:], d[:num_query, :num_query], d[num_query:, num_query:],
        k1, k2, lambda_value,
    )  # fmt: skip
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-6)


@pytest.mark.parametrize(("chunk_size", "candidates"), [(256, None), (17, 21), (64, 60)])
def test_topk_matches_exact(chunk_size: int, candidates: int | None) -> None:
    # candidates=21 keeps only the k1 + 1 neighbours, so expanded sets surely reach beyond the kept
    # lists and those pairs must be fetched again.
    features, _, num_query = clustered_problem(7)
    distance = euclidean(features)
    exact = k_reciprocal_rerank(distance, num_query)
    fetched = []

    def rows(start: int, stop: int) -> torch.Tensor:
        fetched.append((start, stop))
        return distance[start:stop]

    approx = rerank_topk(
        rows, num_query, len(distance), chunk_size=chunk_size, candidates=candidates
    )
    assert max(stop - start for start, stop in fetched) <= chunk_size
    if candidates == 21:
        assert len(fetched) > -(-len(distance) // chunk_size)  # more calls than one pass
    torch.testing.assert_close(approx(0, num_query), exact, rtol=0, atol=1e-6)
    torch.testing.assert_close(approx(5, 13), exact[5:13], rtol=0, atol=1e-6)


def test_chunk_size_invariance() -> None:
    features, _, num_query = clustered_problem(11)
    distance = euclidean(features)
    results = [k_reciprocal_rerank(distance, num_query, chunk_size=c) for c in (1, 7, 1000)]
    topk = rerank_topk(lambda a, b: distance[a:b], num_query, len(distance), chunk_size=3)
    results.append(torch.cat([topk(a, min(a + 4, num_query)) for a in range(0, num_query, 4)]))
    for result in results[1:]:
        torch.testing.assert_close(result, results[0], rtol=0, atol=1e-6)


def test_reranking_improves_map_on_clustered_problem() -> None:
    features, pids, num_query = clustered_problem(3, num_ids=20, per_id=12, num_query=40)
    cams = torch.arange(len(pids)) % 2  # queries' same-camera positives are removed, some remain
    args = (pids[:num_query], cams[:num_query], pids[num_query:], cams[num_query:])
    distance = euclidean(features)
    before = evaluate_ranking(distance[:num_query, num_query:], *args)
    after = evaluate_ranking(k_reciprocal_rerank(distance, num_query), *args)
    assert after["mAP"] > before["mAP"]


def test_chooser_and_features_agree_with_exact() -> None:
    features, _, num_query = clustered_problem(4)
    exact = k_reciprocal_rerank(euclidean(features), num_query)
    query, gallery = features[:num_query], features[num_query:]
    big = exact_memory_bytes(len(features))
    for budget in (0, big):  # 0 forces the top-k path, ``big`` just allows the exact one
        chosen = rerank_features(query, gallery, memory_budget=budget, chunk_size=32)
        torch.testing.assert_close(chosen(0, num_query), exact, rtol=0, atol=1e-5)
        from_matrix = rerank(euclidean(features), num_query, memory_budget=budget)
        torch.testing.assert_close(from_matrix(0, num_query), exact, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("block", "candidates"), [(4096, None), (37, 21), (13, 60)])
def test_feature_blocks_match_exact_and_compute_each_pair_once(
    block: int, candidates: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blocks of 13 are smaller than the kept lists (60), so lists fill across blocks; 21 kept
    # candidates make the expanded sets reach beyond the lists, so pairs are computed again.
    features, _, num_query = clustered_problem(8, num_ids=20, per_id=9)
    features[40] = features[41]  # an exact duplicate: a zero off-diagonal distance
    num_total = len(features)
    exact = k_reciprocal_rerank(euclidean(features), num_query)
    monkeypatch.setattr(rerank_module, "DISTANCE_BLOCK", block)
    computed = []
    squared = FeatureRows.squared

    def counted(self: FeatureRows, *bounds: int, out: torch.Tensor | None = None) -> torch.Tensor:
        out = squared(self, *bounds, out=out)
        computed.append(out.numel())
        return out

    monkeypatch.setattr(FeatureRows, "squared", counted)
    reranked = rerank_topk(FeatureRows(features), num_query, num_total, candidates=candidates)
    scan = sum(computed)
    # Each pair of the scan once (the diagonal blocks whole), the query rows once more.
    diagonal = sum((b - a) ** 2 for a, b in rerank_module._even_blocks(num_total, block))
    assert scan == (num_total**2 + diagonal) // 2
    torch.testing.assert_close(reranked(0, num_query), exact, rtol=0, atol=2e-6)
    assert sum(computed) == scan + num_query * (num_total - num_query)


def test_merge_keeps_the_smallest_values_per_row() -> None:
    generator = torch.Generator().manual_seed(0)
    num_rows, kept, num_cols = 6, 4, 30
    values = torch.rand(num_rows, num_cols, generator=generator)
    values[2, 7] = values[2, 9] = 0.0  # a tie, resolved for the earlier entry
    best = torch.full((num_rows, kept), torch.inf)
    best_cols = torch.full((num_rows, kept), num_cols)
    for start in range(0, num_cols, 7):  # columns arrive in groups, rows in shuffled order
        cols = torch.arange(start, min(start + 7, num_cols))
        rows, local = torch.meshgrid(
            torch.randperm(num_rows, generator=generator), cols, indexing="ij"
        )
        rerank_module._merge_candidates(
            best, best_cols, rows.flatten(), local.flatten(), values[rows, local].flatten()
        )
    expected, expected_cols = values.sort(dim=1, stable=True)
    torch.testing.assert_close(best, expected[:, :kept], rtol=0, atol=0)
    assert torch.equal(best_cols, expected_cols[:, :kept])


def test_feature_rows_are_plain_euclidean_with_zero_self_distance() -> None:
    features, _, _ = clustered_problem(9)
    rows = FeatureRows(features * 100)  # large norms: |a|^2 + |a|^2 - 2 a.a is not exactly 0
    expected = euclidean(features * 100)
    torch.testing.assert_close(rows(3, 11), expected[3:11], rtol=1e-4, atol=1e-2)
    assert torch.equal(rows(3, 11).diagonal(offset=3), torch.zeros(8))
    pairs = rows.pair_squared(torch.tensor([0, 5, 7]), torch.tensor([9, 5, 2]))
    torch.testing.assert_close(pairs.sqrt(), expected[[0, 5, 7], [9, 5, 2]], rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="finite"):
        FeatureRows(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))


def test_cosine_metric_is_euclidean_of_normalised_features() -> None:
    features, _, num_query = clustered_problem(6)
    normalised = torch.nn.functional.normalize(features, dim=1)
    expected = k_reciprocal_rerank(euclidean(normalised), num_query)
    cosine = rerank_features(features[:num_query], features[num_query:], metric="cosine")
    torch.testing.assert_close(cosine(0, num_query), expected, rtol=0, atol=1e-5)


def test_input_validation() -> None:
    distance = euclidean(clustered_problem(0)[0])
    n = len(distance)
    with pytest.raises(ValueError, match="square"):
        k_reciprocal_rerank(distance[:10], 5)
    with pytest.raises(ValueError, match="num_query"):
        k_reciprocal_rerank(distance, n)
    with pytest.raises(ValueError, match="k1 and k2"):
        k_reciprocal_rerank(distance, 5, k1=0)
    with pytest.raises(ValueError, match="lambda"):
        k_reciprocal_rerank(distance, 5, lambda_value=1.5)
    with pytest.raises(ValueError, match="non-negative"):
        k_reciprocal_rerank(distance - 1.0, 5)
    with pytest.raises(ValueError, match="distance 0"):
        k_reciprocal_rerank(torch.zeros(n, n), 5)
    with pytest.raises(ValueError, match="num_total"):
        rerank(lambda a, b: distance[a:b], 5)
    with pytest.raises(ValueError, match="shape"):
        rerank_topk(lambda a, b: distance[a:b, :-1], 5, n)
    with pytest.raises(ValueError, match="query range"):
        rerank_topk(lambda a, b: distance[a:b], 5, n)(3, 9)
    with pytest.raises(ValueError, match="metric"):
        rerank_features(distance[:5], distance[5:], metric="manhattan")  # type: ignore[arg-type]


def test_the_top_k_scan_shows_its_progress_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(30, 16, generator=generator)
    gallery = torch.randn(90, 16, generator=generator)
    monkeypatch.setattr(rerank_module, "DISTANCE_BLOCK", 32)  # 4 blocks: 10 block products
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("REIDGEN_PROGRESS", "0")
    quiet = rerank_features(query, gallery, memory_budget=0)(0, 30)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("REIDGEN_PROGRESS", "1")
    shown = rerank_features(query, gallery, memory_budget=0)(0, 30)
    err = capsys.readouterr().err
    assert "re-ranking: nearest neighbours" in err and "/10 [" in err
    assert torch.equal(quiet, shown)
