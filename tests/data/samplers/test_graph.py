"""GraphSampler (QAConv GS): anchor + nearest classes, exact length, seeding, DDP, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reidgen.data.samplers.graph import GraphSampler, nearest_classes


def make_labels(num_ids: int = 20, lo: int = 1, hi: int = 9, seed: int = 0) -> np.ndarray:
    """Labels 0..num_ids-1 with lo..hi-1 images each, in a shuffled dataset order."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(num_ids), rng.integers(lo, hi, num_ids)))


def line_distance(num_ids: int, seed: int = 1) -> tuple[torch.Tensor, np.ndarray]:
    """Classes at distinct random points on a line: |x_i - x_j| and the x positions."""
    x = np.random.default_rng(seed).permutation(num_ids).astype(np.float64) ** 1.3
    return torch.from_numpy(np.abs(x[:, None] - x[None, :])), x


def expected_nearest(x: np.ndarray, i: int, k: int) -> list[int]:
    """Brute-force oracle: the k classes closest to i on the line, ties by index."""
    others = [j for j in range(len(x)) if j != i]
    return sorted(others, key=lambda j: (abs(x[i] - x[j]), j))[:k]


def batches_of(indices: list[int], batch: int) -> list[list[int]]:
    assert len(indices) % batch == 0
    return [indices[i : i + batch] for i in range(0, len(indices), batch)]


def graph_sampler(labels: np.ndarray, **kw) -> GraphSampler:
    sampler = GraphSampler(labels, **kw)
    dist, _ = line_distance(sampler.num_classes)
    sampler.set_graph(dist)
    return sampler


# ------------------------------------------------------------------ nearest_classes
def test_nearest_classes_on_a_line_excludes_self_and_breaks_ties_by_index() -> None:
    x = torch.tensor([0.0, 1.0, 3.0, 7.0, 15.0])
    near = nearest_classes((x[:, None] - x[None, :]).abs(), 2)
    assert near.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1], [3, 2]]
    # Equidistant neighbours (and an all-equal row) come in index order; self never appears.
    x = torch.arange(5.0)
    assert nearest_classes((x[:, None] - x[None, :]).abs(), 4)[2].tolist() == [1, 3, 0, 4]
    assert nearest_classes(torch.zeros(4, 4), 3).tolist() == [
        [1, 2, 3],
        [0, 2, 3],
        [0, 1, 3],
        [0, 1, 2],
    ]
    # NaN counts as +inf; infinite entries tie with the (ignored) diagonal without hiding it.
    d = torch.tensor([[0.0, float("nan"), 1.0], [float("inf"), 0.0, float("inf")], [1, 2, 0]])
    assert nearest_classes(d, 2).tolist() == [[2, 1], [0, 2], [0, 1]]
    assert nearest_classes(torch.rand(6, 6), 0).shape == (6, 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_nearest_classes_matches_a_stable_sort_oracle_with_many_ties(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    d = torch.randint(0, 4, (37, 37), generator=g).to(dtype)  # values 0..3: ties everywhere
    d[3, :] = float("inf")
    d[5, 7] = float("nan")
    for k in (1, 9, 36):
        got = nearest_classes(d, k, chunk_rows=5)
        assert torch.equal(got, nearest_classes(d, k))
        key = torch.nan_to_num(d.double(), nan=float("inf"))
        for i in range(37):
            oracle = sorted((j for j in range(37) if j != i), key=lambda j: (key[i, j].item(), j))
            assert got[i].tolist() == oracle[:k]


def test_nearest_classes_validates() -> None:
    with pytest.raises(ValueError, match="square"):
        nearest_classes(torch.rand(3, 4), 1)
    with pytest.raises(ValueError, match="k must be"):
        nearest_classes(torch.rand(3, 3), 3)


# ---------------------------------------------------------------------- batches
@pytest.mark.parametrize(("batch_size", "k"), [(16, 2), (12, 4), (5, 1), (21, 3)])
def test_each_batch_is_the_anchor_and_its_nearest_classes(batch_size: int, k: int) -> None:
    labels = make_labels()
    sampler = GraphSampler(labels, batch_size=batch_size, num_instances=k, seed=3)
    dist, x = line_distance(sampler.num_classes)
    sampler.set_graph(dist)
    c = batch_size // k
    indices = list(sampler)
    batches = batches_of(indices, batch_size)
    assert len(batches) == sampler.num_classes == 20
    anchors = []
    for batch in batches:
        groups = labels[np.asarray(batch)].reshape(c, k)
        assert (groups == groups[:, :1]).all(), groups  # K images of one class, contiguous
        classes = groups[:, 0].tolist()
        anchors.append(classes[0])
        assert classes[1:] == expected_nearest(x, classes[0], c - 1)
        for group in np.asarray(batch).reshape(c, k):
            n = int((labels == labels[group[0]]).sum())
            # Without replacement when the class has K images, else every image at least once.
            assert len(set(group.tolist())) == min(n, k)
    assert sorted(anchors) == list(range(20))  # every class is an anchor exactly once
    assert sampler.class_plan()[:, 0].tolist() == anchors


def test_non_contiguous_labels_map_to_sorted_class_positions() -> None:
    labels = np.array([40, 7, 7, 19, 40, 19, 3, 3])
    sampler = GraphSampler(labels, batch_size=4, num_instances=2)
    assert sampler.classes.tolist() == [3, 7, 19, 40]
    sampler.set_graph(torch.tensor([[1, 2, 3], [0, 2, 3], [3, 1, 0], [2, 1, 0]]))
    for batch in batches_of(list(sampler), 4):
        a, b = labels[batch[0]], labels[batch[2]]
        assert (labels[batch[:2]] == a).all() and (labels[batch[2:]] == b).all()
        assert {3: 7, 7: 3, 19: 40, 40: 19}[int(a)] == b


def test_hub_class_cycles_through_its_images() -> None:
    """A class used in every batch cycles through its images K at a time, reshuffling."""
    labels = np.repeat(np.arange(6), [7, 2, 2, 2, 2, 2])
    sampler = GraphSampler(labels, batch_size=4, num_instances=2, seed=1)
    nearest = torch.tensor([[1, 2, 3, 4, 5]] + [[0, 1, 2, 3, 4]] * 5)
    nearest[1] = torch.tensor([0, 2, 3, 4, 5])
    sampler.set_graph(nearest)
    used = [i for i in sampler if labels[i] == 0]
    assert len(used) == 2 * 6
    # 7 images, K = 2: a cycle is 3 uses of 6 distinct images, then the list is reshuffled.
    assert len(set(used[:6])) == 6 and len(set(used[6:])) == 6
    assert set(used) <= set(np.flatnonzero(labels == 0).tolist())


def test_dataloader_reads_whole_batches() -> None:
    labels = make_labels()
    sampler = graph_sampler(labels, batch_size=8, num_instances=2, num_replicas=2, rank=1)
    loader = DataLoader(
        torch.arange(len(labels)), batch_size=sampler.per_rank_batch_size, sampler=sampler
    )
    assert len(loader) == sampler.num_classes
    for batch in loader:
        groups = labels[batch.numpy()].reshape(2, 2)
        assert (groups == groups[:, :1]).all()


# ---------------------------------------------------------------- length, graph
def test_len_is_exact_before_any_graph_and_iteration_needs_one() -> None:
    labels = make_labels()
    sampler = GraphSampler(labels, batch_size=8, num_instances=2, num_replicas=2, rank=0)
    assert len(sampler) == 20 * 4
    assert sampler.needs_graph
    with pytest.raises(RuntimeError, match="no class graph for epoch 0"):
        iter(sampler)
    dist, _ = line_distance(20)
    sampler.set_graph(dist)
    assert not sampler.needs_graph
    assert len(list(sampler)) == len(sampler)
    # A graph of an earlier epoch is stale, never reused silently.
    sampler.set_epoch(1)
    assert sampler.needs_graph
    with pytest.raises(RuntimeError, match="set for epoch 0"):
        iter(sampler)
    sampler.set_graph(dist)
    assert len(list(sampler)) == len(sampler)


def test_random_fallback_has_the_same_shape_and_is_seeded() -> None:
    labels = make_labels()
    a = GraphSampler(labels, batch_size=8, num_instances=2, seed=5, missing_graph="random")
    b = GraphSampler(labels, batch_size=8, num_instances=2, seed=5, missing_graph="random")
    indices = list(a)
    assert indices == list(b) and len(indices) == len(a)
    plan = a.class_plan()
    assert sorted(plan[:, 0].tolist()) == list(range(20))
    assert all(len(set(row)) == 4 for row in plan.tolist())
    a.set_epoch(1)
    assert not np.array_equal(a.class_plan(), plan)


# ------------------------------------------------------------------- seeding
def test_same_seed_same_plan_other_epoch_other_anchor_order() -> None:
    labels = make_labels()
    a = graph_sampler(labels, batch_size=8, num_instances=2, seed=7)
    b = graph_sampler(labels, batch_size=8, num_instances=2, seed=7)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again without set_epoch repeats the epoch
    e0 = a.class_plan()[:, 0].tolist()
    a.set_epoch(1)
    dist, _ = line_distance(20)
    a.set_graph(dist)
    assert sorted(a.class_plan()[:, 0].tolist()) == sorted(e0)
    assert a.class_plan()[:, 0].tolist() != e0
    c = graph_sampler(labels, batch_size=8, num_instances=2, seed=8)
    assert list(c) != list(b)


def test_representatives_one_image_per_class_deterministic() -> None:
    labels = make_labels(lo=3, hi=9)
    sampler = GraphSampler(labels, batch_size=8, num_instances=2, seed=2)
    reps = sampler.representatives()
    assert labels[reps].tolist() == list(range(20))
    other_rank = GraphSampler(labels, batch_size=8, num_instances=2, seed=2, num_replicas=2, rank=1)
    assert other_rank.representatives() == reps
    assert sampler.representatives(epoch=1) != reps
    sampler.set_epoch(1)
    assert sampler.representatives() == other_rank.representatives(epoch=1)
    # Over many epochs every image of a class gets to represent it.
    seen = {i for e in range(200) for i in sampler.representatives(e)}
    assert seen == set(range(len(labels)))


# ----------------------------------------------------------------------- DDP
@pytest.mark.parametrize("world", [2, 4])
def test_ranks_take_disjoint_whole_class_groups_whose_union_is_the_batch(world: int) -> None:
    labels = make_labels()
    single = graph_sampler(labels, batch_size=16, num_instances=2, seed=4)
    ranks = [
        graph_sampler(labels, batch_size=16, num_instances=2, seed=4, num_replicas=world, rank=r)
        for r in range(world)
    ]
    assert all(len(s) == len(single) // world for s in ranks)
    full = batches_of(list(single), 16)
    per_rank = [batches_of(list(s), 16 // world) for s in ranks]
    for b, batch in enumerate(full):
        parts = [p[b] for p in per_rank]
        assert sum(parts, []) == batch  # rank r holds class slots r*C/R .. (r+1)*C/R - 1
        class_sets = [set(labels[p].tolist()) for p in parts]
        assert all(len(s) == 8 // world for s in class_sets)
        assert len(set().union(*class_sets)) == 8  # different classes on every rank


# --------------------------------------------------------------------- resume
def test_state_dict_resumes_mid_epoch_with_the_graph() -> None:
    labels = make_labels()
    sampler = graph_sampler(labels, batch_size=8, num_instances=2, seed=9)
    sampler.set_epoch(2)
    dist, _ = line_distance(20, seed=5)
    sampler.set_graph(dist)
    full = list(sampler)
    it = iter(sampler)
    head = [next(it) for _ in range(30)]
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["position"] == 30 and state["graph_epoch"] == 2
    restored = GraphSampler(labels, batch_size=8, num_instances=2, seed=0)
    restored.load_state_dict(state)
    restored.set_epoch(2)  # Lightning calls this again at the resumed epoch: keeps the position
    assert not restored.needs_graph
    assert head + list(restored) == full
    assert list(restored) == full  # the next pass is the whole epoch again


def test_state_without_graph_clears_it() -> None:
    labels = make_labels()
    sampler = graph_sampler(labels, batch_size=8, num_instances=2)
    sampler.load_state_dict({"epoch": 1, "seed": 0, "position": 0})
    assert sampler.needs_graph
    with pytest.raises(ValueError, match="position"):
        sampler.load_state_dict({"epoch": 0, "seed": 0, "position": len(sampler) + 1})


# -------------------------------------------------------------------- errors
def test_invalid_settings_raise_clear_errors() -> None:
    labels = make_labels()
    with pytest.raises(ValueError, match="multiple of num_instances"):
        GraphSampler(labels, batch_size=10, num_instances=4)
    with pytest.raises(ValueError, match="multiple of num_instances"):
        GraphSampler(labels, batch_size=12, num_instances=2, num_replicas=4, rank=0)
    with pytest.raises(ValueError, match="distinct classes"):
        GraphSampler(labels, batch_size=42, num_instances=2)
    with pytest.raises(ValueError, match="num_instances"):
        GraphSampler(labels, batch_size=8, num_instances=0)
    with pytest.raises(ValueError, match="rank"):
        GraphSampler(labels, batch_size=8, num_instances=2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="labels"):
        GraphSampler([], batch_size=8, num_instances=2)
    with pytest.raises(ValueError, match="missing_graph"):
        GraphSampler(labels, batch_size=8, num_instances=2, missing_graph="pk")
    sampler = GraphSampler(labels, batch_size=8, num_instances=2)
    with pytest.raises(ValueError, match=r"\[P, P\]"):
        sampler.set_graph(torch.rand(20, 19))
    with pytest.raises(ValueError, match="nearest-class graph must be"):
        sampler.set_graph(torch.zeros(20, 2, dtype=torch.int64))  # needs C - 1 = 3 columns
    good = nearest_classes(torch.rand(20, 20), 3)
    bad = good.clone()
    bad[4, 0] = 4
    with pytest.raises(ValueError, match="own neighbour"):
        sampler.set_graph(bad)
    bad = good.clone()
    bad[4, 1] = bad[4, 0]
    with pytest.raises(ValueError, match="repeats"):
        sampler.set_graph(bad)
    bad = good.clone()
    bad[0, 0] = 20
    with pytest.raises(ValueError, match="outside"):
        sampler.set_graph(bad)
    with pytest.raises(TypeError, match="graph"):
        sampler.set_graph(torch.zeros(20, 20, dtype=torch.bool))
    with pytest.raises(ValueError, match="epoch"):
        sampler.set_epoch(-1)
    sampler.set_graph(good)  # an integer table with exactly C - 1 columns is accepted
    assert len(list(sampler)) == len(sampler)


def test_graph_fn_is_pulled_once_per_epoch_with_the_representatives() -> None:
    labels = make_labels()
    sampler = GraphSampler(labels, batch_size=8, num_instances=2, seed=6)
    dist, _ = line_distance(20)
    calls: list[list[int]] = []

    def build(reps: list[int]) -> torch.Tensor:
        calls.append(reps)
        return dist

    sampler.set_graph_fn(build)
    assert len(sampler) == 20 * 8 and not calls  # length needs no graph
    first = list(sampler)
    assert list(sampler) == first and calls == [sampler.representatives(0)]
    pushed = graph_sampler(labels, batch_size=8, num_instances=2, seed=6)
    assert list(pushed) == first  # pulling and pushing the same graph give the same plan
    sampler.set_epoch(1)
    list(sampler)
    assert calls[1] == sampler.representatives(1) and len(calls) == 2
    # A graph restored from a checkpoint is used as is, without recomputing it.
    restored = GraphSampler(labels, batch_size=8, num_instances=2)
    restored.set_graph_fn(build)
    restored.load_state_dict(sampler.state_dict())
    assert len(list(restored)) == len(restored) and len(calls) == 2
