"""AlignedReID end to end: mutual learning on the tiny SynthPerson preset, then evaluation with the
global + local test distance and re-ranking, and the alignment pictures of its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_run import QUICK, chance_map, metrics_of, only_run, run_module, studio_tiny


@pytest.fixture(scope="module")
def mutual_run(tmp_path_factory: pytest.TempPathFactory, synth_data_dir: Path) -> Path:
    log_dir = tmp_path_factory.mktemp("alignedreid-mutual")
    run_module("reidgen.run", [*QUICK, "method=alignedreid_mutual"], synth_data_dir, log_dir)
    return only_run(log_dir)


@pytest.mark.slow
def test_mutual_learning_trains_two_models_that_learn(
    mutual_run: Path, synth_data_dir: Path
) -> None:
    rows = [
        line.split(",") for line in (mutual_run / "csv" / "metrics.csv").read_text().splitlines()
    ]
    header = rows[0]
    for name in ("train/loss_epoch", "train/model1/loss_epoch"):
        column = header.index(name)
        losses = [float(row[column]) for row in rows[1:] if row[column]]
        assert len(losses) == 2 and losses[1] < losses[0], name
    state = torch.load(mutual_run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    first, second = state["models.0.classifier.weight"], state["models.1.classifier.weight"]
    assert first.shape == second.shape and not torch.equal(first, second)
    assert (
        metrics_of(mutual_run)["metrics"]["synth_studio_tiny"]["mAP"]
        > chance_map(studio_tiny(synth_data_dir)) + 10
    )


@pytest.mark.slow
def test_global_local_distance_and_reranking_at_evaluation(
    mutual_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    checkpoint = mutual_run / "checkpoints" / "last.ckpt"
    base = [f"ckpt={checkpoint}", "data=synth_tiny", "hardware=cpu", "trainer.precision=32-true"]
    run_module(
        "reidgen.evaluate",
        [*base, "+method_overrides.test_distance=global_local", "eval.rerank=true"],
        synth_data_dir,
        tmp_path / "gl",
    )
    record = metrics_of(only_run(tmp_path / "gl", "evaluations"))
    assert record["evaluation"]["rerank"]
    assert record["metrics"] != metrics_of(mutual_run)["metrics"]
    typo = run_module(
        "reidgen.evaluate",
        [*base, "+method_overrides.test_distanse=global_local"],
        synth_data_dir,
        tmp_path / "typo",
        check=False,
    )
    assert typo.returncode != 0 and "test_distanse" in typo.stderr


@pytest.mark.slow
def test_alignment_pictures_of_a_checkpoint(
    mutual_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    out_dir = tmp_path / "pictures"
    args = [
        f"ckpt={mutual_run / 'checkpoints' / 'last.ckpt'}",
        "data=synth_tiny",
        "queries=[1]",
        "top=2",
        f"out_dir={out_dir}",
    ]
    run_module("reidgen.viz.alignment", args, synth_data_dir, tmp_path / "logs")
    assert [p.name for p in out_dir.iterdir()] == ["query_1.png"]
