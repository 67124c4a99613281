"""WarmupMultiStepLR, metrics.json / tables, and rebuilding a method from a checkpoint alone."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import re
from pathlib import Path

import pytest
import torch

from reidgen.methods.base import METRIC_KEYS
from reidgen.optim import WarmupMultiStepLR
from reidgen.results import format_table, write_metrics


# ------------------------------------------------------------------------------- schedule
def make_scheduler(lrs=(0.1,), **kwargs) -> tuple[torch.optim.Optimizer, WarmupMultiStepLR]:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    optimizer = torch.optim.SGD(groups, lr=lrs[0])
    return optimizer, WarmupMultiStepLR(optimizer, **kwargs)


def lrs_over(optimizer, scheduler, epochs: int) -> list[list[float]]:
    seen = []
    for _ in range(epochs):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_warmup_then_step_decay_matches_hand_computed_values() -> None:
    optimizer, scheduler = make_scheduler(
        lrs=(0.1, 1.0), milestones=[3, 5], gamma=0.1, warmup_epochs=2, warmup_factor=0.1
    )
    # epoch 0: 0.1 x base; epoch 1: halfway between 0.1 and 1 -> 0.55; then 1, /10 at 3 and 5.
    factors = [0.1, 0.55, 1.0, 0.1, 0.1, 0.01, 0.01]
    seen = lrs_over(optimizer, scheduler, len(factors))
    assert [s[0] for s in seen] == pytest.approx([0.1 * f for f in factors])
    assert [s[1] for s in seen] == pytest.approx(factors)


def test_milestone_inside_warmup_multiplies_both_factors() -> None:
    optimizer, scheduler = make_scheduler(
        milestones=[1], gamma=0.5, warmup_epochs=4, warmup_factor=0.2
    )
    # warm-up: 0.2, 0.4, 0.6, 0.8, 1.0 (epoch/4 of the way from 0.2 to 1); x0.5 from epoch 1.
    expected = [0.1 * f for f in (0.2, 0.4 * 0.5, 0.6 * 0.5, 0.8 * 0.5, 1.0 * 0.5)]
    assert [s[0] for s in lrs_over(optimizer, scheduler, 5)] == pytest.approx(expected)


def test_no_warmup_starts_at_full_lr() -> None:
    optimizer, scheduler = make_scheduler(milestones=[2], gamma=0.1, warmup_epochs=0)
    assert [s[0] for s in lrs_over(optimizer, scheduler, 3)] == pytest.approx([0.1, 0.1, 0.01])


def test_unsorted_milestones_rejected() -> None:
    with pytest.raises(ValueError, match="increasing"):
        make_scheduler(milestones=[5, 3])


def test_scheduler_state_dict_round_trip_continues_the_schedule() -> None:
    kwargs = {"milestones": [3, 5], "gamma": 0.1, "warmup_epochs": 2, "warmup_factor": 0.1}
    optimizer, scheduler = make_scheduler(**kwargs)
    lrs_over(optimizer, scheduler, 3)
    state = scheduler.state_dict()

    other_optimizer, other = make_scheduler(lrs=(0.5,))  # other defaults and base lr
    other.load_state_dict(state)
    assert other.milestones == [3, 5]
    assert other.gamma == 0.1 and other.warmup_epochs == 2 and other.warmup_factor == 0.1
    assert other.last_epoch == scheduler.last_epoch == 3
    assert other.base_lrs == [0.1]
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        other_optimizer.step()
        other.step()
        assert other.get_last_lr() == pytest.approx(scheduler.get_last_lr())
        assert other_optimizer.param_groups[0]["lr"] == pytest.approx(
            optimizer.param_groups[0]["lr"]
        )
    assert scheduler.get_last_lr() == pytest.approx([0.001])  # epoch 6: past both milestones


# ---------------------------------------------------------------------------------- results
RESULTS = {
    "synth_street": {"mAP": 12.345, "rank1": 50, "rank5": 60.04, "rank10": 70, "mINP": 5.56},
    "mean": {"mAP": 1, "rank1": 2, "rank5": 3, "rank10": 4, "mINP": 99.96, "num_query": 3},
}


def test_write_metrics_writes_json_with_provenance_and_metrics(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    record = write_metrics(
        path, RESULTS, method="reidgen.methods.baseline.Baseline", seed=3, world_size=1,
        sources=["synth_street"], run_dir=tmp_path,
    )  # fmt: skip
    on_disk = json.loads(path.read_text())
    assert on_disk["method"] == "reidgen.methods.baseline.Baseline"
    assert on_disk["seed"] == 3 and on_disk["world_size"] == 1
    assert on_disk["sources"] == ["synth_street"]
    assert on_disk["run_dir"] == str(tmp_path)  # non-JSON values written as strings
    assert on_disk["metrics"] == json.loads(json.dumps(RESULTS))
    assert on_disk["metrics"]["mean"]["num_query"] == 3
    revision = on_disk["git_revision"]
    assert revision is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", revision)
    date = dt.datetime.fromisoformat(on_disk["date"])
    assert date.tzinfo is not None
    assert abs((dt.datetime.now(dt.timezone.utc) - date).total_seconds()) < 600
    assert {k: record[k] for k in ("method", "seed", "metrics", "git_revision", "date")} == {
        k: on_disk[k] for k in ("method", "seed", "metrics", "git_revision", "date")
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temp file left


def test_write_metrics_never_leaves_a_half_written_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.json"
    path.write_text('{"old": true}')
    real_write_text = pathlib.Path.write_text

    def crash_halfway(self: Path, text: str, *args, **kwargs) -> int:
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_text", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        write_metrics(path, RESULTS, method="m")
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": True}

    write_metrics(path, RESULTS, method="m")  # a later write replaces it whole
    assert json.loads(path.read_text())["method"] == "m"


def test_format_table_rows_in_percent_with_one_decimal() -> None:
    rows = [
        "| target | mAP | rank1 | rank5 | rank10 | mINP |",
        "|---|---|---|---|---|---|",
        "| synth_street | 12.3 | 50.0 | 60.0 | 70.0 | 5.6 |",
        "| mean | 1.0 | 2.0 | 3.0 | 4.0 | 100.0 |",
    ]
    assert METRIC_KEYS == ("mAP", "rank1", "rank5", "rank10", "mINP")
    assert format_table(RESULTS) == "\n".join(rows)
    assert format_table(RESULTS, "reidgen baseline") == "\n".join(["reidgen baseline", ""] + rows)
