"""QAConv end to end: ``python -m reidgen.run method=qaconv_gs|qaconv`` on the tiny SynthPerson
preset, then ``reidgen.evaluate`` of its checkpoint with the test-time options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_run import QUICK, chance_map, metrics_of, only_run, run_module, studio_tiny

# The tiny preset has 12 identities: GS batches of 8 classes x 2 images.
GS = [*QUICK, "method=qaconv_gs", "data.batch_size=16"]


@pytest.fixture(scope="module")
def gs_run(tmp_path_factory: pytest.TempPathFactory, synth_data_dir: Path) -> Path:
    log_dir = tmp_path_factory.mktemp("qaconv-gs")
    run_module("reidgen.run", GS, synth_data_dir, log_dir)
    return only_run(log_dir)


def epoch_losses(run_dir: Path) -> list[float]:
    rows = [line.split(",") for line in (run_dir / "csv" / "metrics.csv").read_text().splitlines()]
    column = rows[0].index("train/loss_epoch")
    return [float(row[column]) for row in rows[1:] if row[column]]


@pytest.mark.slow
def test_qaconv_gs_learns_on_graph_batches_and_beats_chance(
    gs_run: Path, synth_data_dir: Path
) -> None:
    record = metrics_of(gs_run)
    assert record["epochs"] == 2 and record["num_classes"] == 12
    # One GS batch per identity and epoch.
    checkpoint = torch.load(gs_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2 * 12
    losses = epoch_losses(gs_run)
    assert len(losses) == 2 and losses[1] < losses[0]
    assert (
        record["metrics"]["synth_studio_tiny"]["mAP"] > chance_map(studio_tiny(synth_data_dir)) + 10
    )


@pytest.mark.slow
def test_qaconv_checkpoint_evaluates_with_its_own_transform_and_test_time_options(
    gs_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    checkpoint = gs_run / "checkpoints" / "last.ckpt"
    base = [f"ckpt={checkpoint}", "data=synth_tiny", "hardware=cpu", "trainer.precision=32-true"]
    # Same numbers as the run: the checkpoint brings its unnormalised bicubic test transform.
    run_module("reidgen.evaluate", base, synth_data_dir, tmp_path / "plain")
    plain = metrics_of(only_run(tmp_path / "plain", "evaluations"))
    assert plain["metrics"] == metrics_of(gs_run)["metrics"]
    options = ["eval.rerank=true", "eval.tlift=true", "eval.flip=true"]
    run_module("reidgen.evaluate", [*base, *options], synth_data_dir, tmp_path / "options")
    record = metrics_of(only_run(tmp_path / "options", "evaluations"))
    assert record["evaluation"]["rerank"] and record["evaluation"]["tlift"]
    target = record["metrics"]["synth_studio_tiny"]
    assert target["tlift"] is True  # SynthPerson carries timestamps
    assert target["mAP"] != plain["metrics"]["synth_studio_tiny"]["mAP"]


@pytest.mark.slow
def test_qaconv_class_memory_learns_and_beats_chance(tmp_path: Path, synth_data_dir: Path) -> None:
    run_module("reidgen.run", [*QUICK, "method=qaconv"], synth_data_dir, tmp_path)
    run_dir = only_run(tmp_path)
    losses = epoch_losses(run_dir)
    assert len(losses) == 2 and losses[1] < losses[0]
    memory = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert memory["memory_loss.seen"].all()  # every class has been written to the memory
    assert (
        metrics_of(run_dir)["metrics"]["synth_studio_tiny"]["mAP"]
        > chance_map(studio_tiny(synth_data_dir)) + 10
    )


@pytest.mark.slow
def test_qaconv_gs_trains_on_two_cpu_processes(tmp_path: Path, synth_data_dir: Path) -> None:
    run_module(
        "reidgen.run",
        [
            "experiment=quick",
            "hardware=ddp_cpu",
            "method=qaconv_gs",
            "data.batch_size=16",
            "trainer.max_epochs=1",
        ],
        synth_data_dir,
        tmp_path,
    )
    run_dir = only_run(tmp_path)
    assert metrics_of(run_dir)["world_size"] == 2
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 12  # each process took half of every one of 12 batches


@pytest.mark.slow
def test_match_pictures_of_a_qaconv_checkpoint(
    gs_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    from PIL import Image

    checkpoint = gs_run / "checkpoints" / "last.ckpt"
    out_dir = tmp_path / "pictures"
    args = [f"ckpt={checkpoint}", "data=synth_tiny", "queries=[0,3]", "top=2", f"out_dir={out_dir}"]
    result = run_module("reidgen.viz.qaconv_matches", args, synth_data_dir, tmp_path / "logs")
    pictures = sorted(out_dir.glob("query_*.png"))
    assert [p.name for p in pictures] == ["query_0.png", "query_3.png"], result.stdout
    with Image.open(pictures[0]) as image:
        assert image.width >= 256 and image.height >= 2 * 256
    # Never silently replaced.
    again = run_module(
        "reidgen.viz.qaconv_matches", args, synth_data_dir, tmp_path / "logs", check=False
    )
    assert again.returncode != 0 and "query_0.png" in again.stderr
