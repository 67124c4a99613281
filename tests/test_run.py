"""The run loop end to end: the real entry points (``python -m reidgen.run`` / ``evaluate``) on the
tiny SynthPerson preset, in subprocesses, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from reidgen.data.datasets.synthperson import index_synthperson
from reidgen.eval import evaluate_ranking
from reidgen.methods.base import METRIC_KEYS

QUICK = ["experiment=quick", "hardware=cpu", "trainer.precision=32-true"]
DDP_ONE_EPOCH = [
    "experiment=quick",
    "hardware=ddp_cpu",
    "trainer.precision=32-true",
    "trainer.max_epochs=1",
]
# The quickstart run's stdout and stderr, next to its runs/ folder.
CONSOLE = "console.txt"
# Lines of third-party code that reidgen.console silences (see there why), and Lightning's note
# on checkpoints saved without saying weights_only, which reidgen's last.ckpt now says.
SILENCED = (
    "LeafSpec",
    "💡 Tip",
    "TPU available: False",
    "does not have many workers",
    "`weights_only` was not set",
)


def module_env(data_dir: Path, log_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REIDGEN_DATA_DIR": str(data_dir),
        "REIDGEN_LOG_DIR": str(log_dir),
        "WANDB_SILENT": "true",
        "PYTHONUNBUFFERED": "1",
    }


def run_module(
    module: str, args: list[str], data_dir: Path, log_dir: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=module_env(data_dir, log_dir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{module} {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def only_run(log_dir: Path, kind: str = "runs") -> Path:
    runs = sorted((log_dir / kind).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def shared_run(
    name: str,
    args: list[str],
    tmp_path_factory: pytest.TempPathFactory,
    data_dir: Path,
    worker_id: str,
) -> Path:
    """A ``reidgen.run`` made once per test session: under xdist the first worker to need it runs
    it in the session's shared folder (the parent of the workers' own), the others wait for it
    and read it. Tests only read it."""
    base = tmp_path_factory.getbasetemp()
    log_dir = (base if worker_id == "master" else base.parent) / name
    with FileLock(str(log_dir) + ".lock"):
        if not (log_dir / "finished").is_file():
            shutil.rmtree(log_dir, ignore_errors=True)
            result = run_module("reidgen.run", args, data_dir, log_dir)
            (log_dir / CONSOLE).write_text(result.stdout + result.stderr)
            (log_dir / "finished").touch()
    return only_run(log_dir)


@pytest.fixture(scope="session")
def two_epoch_run(
    tmp_path_factory: pytest.TempPathFactory, synth_data_dir: Path, worker_id: str
) -> Path:
    """The quickstart run."""
    return shared_run("two-epochs", QUICK, tmp_path_factory, synth_data_dir, worker_id)


@pytest.fixture(scope="session")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, synth_data_dir: Path, worker_id: str) -> Path:
    """One epoch of the quickstart run on two CPU processes."""
    return shared_run("ddp-one-epoch", DDP_ONE_EPOCH, tmp_path_factory, synth_data_dir, worker_id)


def assert_quiet_console(console: str) -> None:
    """No third-party line that reidgen.console silences; Lightning's run information stays."""
    for silenced in SILENCED:
        assert silenced not in console, silenced
    assert "GPU available:" in console


def studio_tiny(data_dir: Path) -> Path:
    return data_dir / "synthperson" / "studio-tiny-128x64-seed0"


def chance_map(root: Path) -> float:
    """mAP of random distances under the same protocol, averaged over 20 draws."""
    splits = index_synthperson(root)
    generator = torch.Generator().manual_seed(0)
    values = [
        evaluate_ranking(
            torch.rand(len(splits.query), len(splits.gallery), generator=generator),
            [s.pid for s in splits.query],
            [s.camid for s in splits.query],
            [s.pid for s in splits.gallery],
            [s.camid for s in splits.gallery],
        )["mAP"]
        for _ in range(20)
    ]
    return sum(values) / len(values)


@pytest.mark.slow
def test_training_learns_and_beats_chance(two_epoch_run: Path, synth_data_dir: Path) -> None:
    record = metrics_of(two_epoch_run)
    target = record["metrics"]["synth_studio_tiny"]
    assert record["sources"] == ["synth_studio_tiny"] and record["epochs"] == 2
    rows = [
        line.split(",") for line in (two_epoch_run / "csv" / "metrics.csv").read_text().splitlines()
    ]
    column = rows[0].index("train/loss_epoch")
    losses = [float(row[column]) for row in rows[1:] if row[column]]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert target["mAP"] > chance_map(studio_tiny(synth_data_dir)) + 10
    for key in (*METRIC_KEYS, "num_valid_queries", "num_query", "num_gallery"):
        assert key in target
    for name in ("config.yaml", "metrics.json", "checkpoints/last.ckpt", ".hydra/config.yaml"):
        assert (two_epoch_run / name).is_file(), name
    assert_quiet_console((two_epoch_run.parents[1] / CONSOLE).read_text())
    best_checkpoints = list((two_epoch_run / "checkpoints").glob("best-epoch=*.ckpt"))
    assert len(best_checkpoints) == 1
    # Validated every epoch (experiment=quick): the best epoch is recorded apart from the last
    # epoch's metrics, labelled as chosen on the targets.
    best = record["best_on_targets"]
    assert best["checkpoint"] == best_checkpoints[0].name
    assert 0 < best["val/mean/mAP"] <= 100 and "not a held-out" in best["note"]


@pytest.mark.slow
def test_resume_continues_exactly(
    two_epoch_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    first = tmp_path / "first"
    run_module("reidgen.run", [*QUICK, "trainer.max_epochs=1"], synth_data_dir, first)
    checkpoint = only_run(first) / "checkpoints" / "last.ckpt"
    resumed = tmp_path / "resumed"
    run_module("reidgen.run", [*QUICK, f"ckpt_path={checkpoint}"], synth_data_dir, resumed)
    uninterrupted = metrics_of(two_epoch_run)
    continued = metrics_of(only_run(resumed))
    assert continued["epochs"] == uninterrupted["epochs"] == 2
    assert continued["metrics"] == uninterrupted["metrics"]
    last_uninterrupted = torch.load(two_epoch_run / "checkpoints" / "last.ckpt", weights_only=False)
    last_continued = torch.load(only_run(resumed) / "checkpoints" / "last.ckpt", weights_only=False)
    assert last_continued["global_step"] == last_uninterrupted["global_step"]
    for name, tensor in last_uninterrupted["state_dict"].items():
        assert torch.equal(tensor, last_continued["state_dict"][name]), name


@pytest.mark.slow
def test_evaluate_reproduces_the_run(
    two_epoch_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    checkpoint = two_epoch_run / "checkpoints" / "last.ckpt"
    empty_data = tmp_path / "no-training-data"
    # Only the test target is needed: copy it alone into an otherwise empty data folder.
    shutil.copytree(
        studio_tiny(synth_data_dir), empty_data / "synthperson" / "studio-tiny-128x64-seed0"
    )
    result = run_module(
        "reidgen.evaluate",
        [f"ckpt={checkpoint}", "data=synth_tiny", "hardware=cpu", "trainer.precision=32-true"],
        empty_data,
        tmp_path / "logs",
    )
    evaluation = metrics_of(only_run(tmp_path / "logs", "evaluations"))
    assert evaluation["metrics"] == metrics_of(two_epoch_run)["metrics"]
    assert_quiet_console(result.stdout + result.stderr)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_evaluates_the_same_samples(
    two_epoch_run: Path, ddp_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    checkpoint = two_epoch_run / "checkpoints" / "last.ckpt"
    run_module(
        "reidgen.evaluate",
        [f"ckpt={checkpoint}", "data=synth_tiny", "hardware=ddp_cpu"],
        synth_data_dir,
        tmp_path / "ddp",
    )
    distributed = metrics_of(only_run(tmp_path / "ddp", "evaluations"))
    single = metrics_of(two_epoch_run)
    assert distributed["world_size"] == 2
    for target, values in single["metrics"].items():
        for key in ("num_query", "num_gallery", "num_valid_queries", "num_skipped_queries"):
            if key in values:
                assert distributed["metrics"][target][key] == values[key]
        for key in METRIC_KEYS:
            assert distributed["metrics"][target][key] == pytest.approx(values[key], abs=1e-4)
    # And a distributed training run goes through.
    assert metrics_of(ddp_run)["world_size"] == 2


@pytest.mark.slow
def test_ddp_sweep_runs_each_job_on_its_own_processes_in_its_folder(
    ddp_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    run_module("reidgen.run", ["-m", "seed=0,1", *DDP_ONE_EPOCH], synth_data_dir, tmp_path)
    # The second processes run their job alone, into its folder: no sweep or run of their own.
    assert [p.name for p in tmp_path.iterdir()] == ["multiruns"]
    sweep = only_run(tmp_path, "multiruns")
    names = ["0_baseline_synth_tiny", "1_baseline_synth_tiny"]
    assert sorted(p.name for p in sweep.iterdir()) == [*names, "multirun.yaml"]
    jobs = [sweep / name for name in names]
    for seed, job in enumerate(jobs):
        record = metrics_of(job)
        assert (record["seed"], record["world_size"], record["epochs"]) == (seed, 2, 1)
        assert (job / "train_ddp_process_1.log").stat().st_size > 0
    # Job 0 is the same run alone: its second process ran job 0, not the sweep from its start.
    assert metrics_of(jobs[0])["metrics"] == metrics_of(ddp_run)["metrics"]
    assert metrics_of(jobs[1])["metrics"] != metrics_of(jobs[0])["metrics"]


@pytest.mark.slow
def test_wandb_offline_run_writes_its_folder_also_on_failure(
    tmp_path: Path, synth_data_dir: Path
) -> None:
    run_module(
        "reidgen.run",
        [*QUICK, "logger=wandb", "trainer.max_epochs=1"],
        synth_data_dir,
        tmp_path / "ok",
    )
    run_dir = only_run(tmp_path / "ok")
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    log = (offline[0] / "logs" / "debug.log").read_text()
    assert "finishing run" in log and "got exitcode: 0" in log

    broken = tmp_path / "broken-data"
    shutil.copytree(
        studio_tiny(synth_data_dir), broken / "synthperson" / "studio-tiny-128x64-seed0"
    )
    victim = sorted(
        (broken / "synthperson" / "studio-tiny-128x64-seed0" / "bounding_box_train").glob("*.jpg")
    )[0]
    victim.write_bytes(b"not a jpeg")
    result = run_module(
        "reidgen.run", [*QUICK, "logger=wandb"], broken, tmp_path / "failed", check=False
    )
    assert result.returncode != 0
    assert f"cannot read image {victim}" in result.stderr
    failed = list((only_run(tmp_path / "failed") / "wandb").glob("offline-run-*"))
    assert len(failed) == 1
    log = (failed[0] / "logs" / "debug.log").read_text()
    assert "finishing run" in log and "got exitcode: 1" in log


def test_unknown_keys_and_options_fail_clearly(tmp_path: Path, synth_data_dir: Path) -> None:
    typo = run_module("reidgen.run", ["method.lrr=0.1"], synth_data_dir, tmp_path, check=False)
    assert typo.returncode != 0 and "Key 'lrr' is not in struct" in typo.stderr
    added = run_module(
        "reidgen.run", [*QUICK, "+method.lrr=0.1"], synth_data_dir, tmp_path, check=False
    )
    assert added.returncode != 0 and "unexpected keyword argument 'lrr'" in added.stderr
    option = run_module("reidgen.run", ["method=nope"], synth_data_dir, tmp_path, check=False)
    assert option.returncode != 0 and "Could not find 'method/nope'" in option.stderr


def test_missing_dataset_folder_fails_clearly(tmp_path: Path, synth_data_dir: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_module(
        "reidgen.run",
        [*QUICK, f"data.catalogue.market1501.root={missing}", "data.targets=[market1501]"],
        synth_data_dir,
        tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert "FileNotFoundError" in result.stderr and str(missing) in result.stderr


def test_unknown_dataset_name_fails_clearly(tmp_path: Path, synth_data_dir: Path) -> None:
    result = run_module(
        "reidgen.run", [*QUICK, "data.targets=[market]"], synth_data_dir, tmp_path, check=False
    )
    assert result.returncode != 0
    assert "unknown dataset 'market'; the catalogue has:" in result.stderr


@pytest.mark.slow
def test_submitit_local_sweep_puts_each_job_and_its_logs_in_the_sweep_folder(
    tmp_path: Path, synth_data_dir: Path
) -> None:
    # The launcher's path only: two training steps, no pictures.
    short = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "pictures.queries=0"]
    args = ["-m", "hydra/launcher=submitit_local", *QUICK, *short, "seed=0,1"]
    run_module("reidgen.run", args, synth_data_dir, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["multiruns"]
    sweep = only_run(tmp_path, "multiruns")
    names = ["0_baseline_synth_tiny", "1_baseline_synth_tiny"]
    assert sorted(p.name for p in sweep.iterdir()) == [".submitit", *names, "multirun.yaml"]
    for seed, name in enumerate(names):
        record = metrics_of(sweep / name)
        assert (record["seed"], record["world_size"], record["epochs"]) == (seed, 1, 1)
    # submitit's own folder of each job (pickles, stdout, stderr) is in the sweep's .submitit/.
    submitted = sorted(sweep.glob(".submitit/*/*_submitted.pkl"))
    assert len(submitted) == 2 and len(list(sweep.glob(".submitit/*/*_log.out"))) == 2


@pytest.mark.slow
def test_evaluate_with_test_time_options(
    two_epoch_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    checkpoint = two_epoch_run / "checkpoints" / "last.ckpt"
    options = ["eval.rerank=true", "eval.aqe=true", "eval.flip=true"]
    run_module(
        "reidgen.evaluate",
        [f"ckpt={checkpoint}", "data=synth_tiny", "hardware=cpu", *options],
        synth_data_dir,
        tmp_path,
    )
    record = metrics_of(only_run(tmp_path, "evaluations"))
    assert (
        record["evaluation"]["rerank"]
        and record["evaluation"]["aqe"]
        and record["evaluation"]["flip"]
    )
    assert (
        record["metrics"]["synth_studio_tiny"]["mAP"]
        != metrics_of(two_epoch_run)["metrics"]["synth_studio_tiny"]["mAP"]
    )


@pytest.mark.slow
def test_multi_source_run_on_two_synthperson_domains(tmp_path: Path, synth_data_dir: Path) -> None:
    sources = "data.sources=[synth_studio_tiny,synth_street_tiny]"
    targets = "data.targets=[synth_studio_tiny,synth_street_tiny]"
    run_module(
        "reidgen.run",
        [*QUICK, sources, targets, "data.domain_balanced=true", "trainer.max_epochs=1"],
        synth_data_dir,
        tmp_path,
    )
    record = metrics_of(only_run(tmp_path))
    assert record["sources"] == ["synth_studio_tiny", "synth_street_tiny"]
    assert record["num_classes"] == 24
    assert set(record["metrics"]) == {"synth_studio_tiny", "synth_street_tiny", "mean"}
