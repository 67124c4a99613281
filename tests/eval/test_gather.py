"""gather_by_index: rows placed at their sample index, single process and across 2 gloo ranks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from reidgen.eval.gather import gather_by_index

TOTAL = 9
FULL = torch.arange(TOTAL * 3, dtype=torch.float32).reshape(TOTAL, 3)


def test_single_process_places_rows_at_their_index() -> None:
    index = torch.tensor([3, 0, 4, 1, 2])
    values = torch.randn(5, 3)
    result = gather_by_index(values, index, 5)
    assert result.shape == (5, 3)
    for row, i in enumerate(index.tolist()):
        assert torch.equal(result[i], values[row])
    assert torch.equal(result, values[torch.argsort(index)])


def test_single_process_keeps_dtype_of_1d_values() -> None:
    pids = torch.tensor([7, 0, 5], dtype=torch.long)
    result = gather_by_index(pids, torch.tensor([2, 0, 1]), 3)
    assert result.dtype == torch.long
    assert result.tolist() == [0, 5, 7]


def test_duplicated_index_raises_naming_the_sample() -> None:
    with pytest.raises(RuntimeError, match=r"sample 1 2 times"):
        gather_by_index(torch.zeros(3, 2), torch.tensor([0, 1, 1]), 3)


def test_missing_index_raises_naming_the_sample() -> None:
    with pytest.raises(RuntimeError, match=r"sample 2 0 times .*of 4"):
        gather_by_index(torch.zeros(3, 2), torch.tensor([0, 3, 1]), 4)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # Shards of different length, as ShardSampler gives them (5 and 4 rows), in a scrambled
        # order within the rank to check that placement uses the index, not the arrival order.
        index = torch.arange(rank, TOTAL, world).flip(0)
        features = gather_by_index(FULL[index], index, TOTAL)
        pids = gather_by_index(index * 10, index, TOTAL)
        # Both ranks claim sample 0: every rank must refuse, naming it.
        bad = torch.tensor([0, 2, 4, 6, 8]) if rank == 0 else torch.tensor([0, 3, 5, 7])
        try:
            gather_by_index(FULL[bad], bad, TOTAL)
            error = ""
        except RuntimeError as exc:
            error = str(exc)
        torch.save(
            {"features": features, "pids": pids, "error": error, "rows": len(index)},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_each_get_all_rows_in_index_order(tmp_path: Path) -> None:
    world = 2
    mp.spawn(
        _worker, args=(world, str(tmp_path / "pg-init"), str(tmp_path)), nprocs=world, join=True
    )
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert [r["rows"] for r in results] == [5, 4]
    for result in results:
        assert result["features"].shape == (TOTAL, 3)
        assert torch.equal(result["features"], FULL)
        assert result["pids"].tolist() == [10 * i for i in range(TOTAL)]
        assert "sample 0 2 times" in result["error"]
        assert "sample 1 0 times" not in result["error"]  # the first offending index is named


def test_index_outside_the_target_is_named() -> None:
    with pytest.raises(RuntimeError, match=r"sample index 3 outside 0\.\.2"):
        gather_by_index(torch.zeros(4, 2), torch.tensor([0, 1, 2, 3]), 3)
