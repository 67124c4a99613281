"""Evaluation rows back in sample order (place_by_index), and the per-target torchmetrics Metric on
one process and synced across 2 gloo processes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from reidgen.eval.evaluator import Evaluator
from reidgen.eval.features import Features
from reidgen.eval.gather import place_by_index
from reidgen.eval.metric import RetrievalEvaluation
from reidgen.eval.protocols import MarketProtocol
from reidgen.eval.target import EvalTarget
from tests.eval.test_evaluator import Identity, clustered, score

TOTAL = 9
FULL = torch.arange(TOTAL * 3, dtype=torch.float32).reshape(TOTAL, 3)


def test_rows_are_placed_at_their_index() -> None:
    index = torch.tensor([3, 0, 4, 1, 2])
    values = torch.randn(5, 3)
    result = place_by_index(values, index, 5)
    assert result.shape == (5, 3)
    for row, i in enumerate(index.tolist()):
        assert torch.equal(result[i], values[row])
    assert torch.equal(result, values[torch.argsort(index)])


def test_placement_keeps_the_dtype_of_1d_values() -> None:
    pids = torch.tensor([7, 0, 5], dtype=torch.long)
    result = place_by_index(pids, torch.tensor([2, 0, 1]), 3)
    assert result.dtype == torch.long
    assert result.tolist() == [0, 5, 7]


def test_duplicated_index_raises_naming_the_sample() -> None:
    with pytest.raises(RuntimeError, match=r"sample 1 2 times"):
        place_by_index(torch.zeros(3, 2), torch.tensor([0, 1, 1]), 3)


def test_missing_index_raises_naming_the_sample() -> None:
    with pytest.raises(RuntimeError, match=r"sample 2 0 times .*of 4"):
        place_by_index(torch.zeros(3, 2), torch.tensor([0, 3, 1]), 4)


def test_index_outside_the_target_is_named() -> None:
    with pytest.raises(RuntimeError, match=r"sample index 3 outside 0\.\.2"):
        place_by_index(torch.zeros(4, 2), torch.tensor([0, 1, 2, 3]), 3)


def _target(pids: torch.Tensor, camids: torch.Tensor, num_query: int) -> EvalTarget:
    return EvalTarget(
        name="clustered",
        pids=pids,
        camids=camids,
        num_query=num_query,
        protocol=MarketProtocol(),
        timestamps=torch.full((len(pids),), math.nan, dtype=torch.float64),
    )


def _metric(stripes: bool = False) -> tuple[RetrievalEvaluation, Features, dict[str, float]]:
    """A metric of the clustered target, its features, and the Evaluator's metrics on them."""
    features, pids, camids, num_query = clustered()
    parts = {"embedding": features}
    if stripes:
        parts["stripes"] = features.view(len(features), 4, 4)
    record = Features(parts)
    method = Identity()
    metric = RetrievalEvaluation(
        _target(pids, camids, num_query), record.names, Evaluator(), method.comparison()
    )
    return metric, record, score(Evaluator(), method, features, pids, camids, num_query)


def test_the_metric_gives_the_evaluators_numbers_whatever_the_batch_order() -> None:
    metric, record, expected = _metric(stripes=True)
    order = torch.randperm(len(record), generator=torch.Generator().manual_seed(0))
    for chunk in order.split(7):
        metric.update(record.rows(chunk), chunk)
    result = metric.compute()
    assert {k: v for k, v in result.items() if k in expected} == expected
    assert result["num_query"] + result["num_gallery"] == len(record)


def test_the_metric_refuses_a_sample_seen_twice_and_other_parts() -> None:
    metric, record, _ = _metric()
    everything = torch.arange(len(record))
    metric.update(record, everything)
    metric.update(record.rows(slice(0, 1)), everything[:1])
    with pytest.raises(RuntimeError, match="sample 0 2 times"):
        metric.compute()
    with pytest.raises(ValueError, match=r"features have parts \('maps',\)"):
        metric.update(Features({"maps": torch.zeros(1, 2, 2, 2)}), everything[:1])


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metric, record, expected = _metric()
        # Shards of different length (no padding samples), in a scrambled order within the rank,
        # to check that placement uses the index, not the arrival order.
        split = len(record) // 2 + 7
        index = (torch.arange(split) if rank == 0 else torch.arange(split, len(record))).flip(0)
        for chunk in index.split(5):
            metric.update(record.rows(chunk), chunk)
        result = metric.compute()
        # Both ranks claim sample 0: every rank must refuse, naming it.
        bad_metric, _, _ = _metric()
        bad = torch.arange(rank, len(record), world)
        bad = torch.cat([torch.tensor([0]), bad]) if rank == 1 else bad
        bad_metric.update(record.rows(bad), bad)
        try:
            bad_metric.compute()
            error = ""
        except RuntimeError as exc:
            error = str(exc)
        torch.save(
            {"result": result, "expected": expected, "rows": len(index), "error": error},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_sync_their_shards_into_the_same_metrics(tmp_path: Path) -> None:
    world = 2
    mp.spawn(
        _worker, args=(world, str(tmp_path / "pg-init"), str(tmp_path)), nprocs=world, join=True
    )
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    assert results[0]["rows"] != results[1]["rows"]  # uneven shards, no padding
    for result in results:
        metrics = {k: v for k, v in result["result"].items() if k in result["expected"]}
        assert metrics == result["expected"]
        assert "sample 0 2 times" in result["error"]
