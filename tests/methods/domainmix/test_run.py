"""DomainMix end to end on the tiny SynthPerson presets: studio labelled, street unlabelled,
tested on mall; the two phases, fresh phase-B optimizers, resume, the pseudo-label record and the
errors a user can run into."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.test_run import metrics_of, only_run, run_module

BATCHES = 4
DOMAINMIX = [
    "method=domainmix",
    "data=synth_labelled_unlabelled",
    "data.sources=[synth_studio_tiny,synth_street_tiny]",
    "data.unlabelled=[synth_street_tiny]",
    "data.targets=[synth_mall_tiny]",
    "data.batch_size=16",
    f"data.sampler.batches_per_epoch={BATCHES}",
    "method.adversarial_from_epoch=1",
    "method.discriminator_every=2",
    # The official clustering, from the first epoch: it groups a barely trained model's tiny
    # street into clusters (the SynthPerson defaults wait for a trained one).
    "method.cluster_from_epoch=0",
    "method.labeller.eps=0.6",
    "method.labeller.k1=30",
    "method.labeller.k2=6",
    "hardware=cpu",
    "trainer.precision=32-true",
    "trainer.log_every_n_steps=1",
]


def epoch_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return [row for row in csv.DictReader(handle) if row.get("train/id_loss_epoch")]


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory: pytest.TempPathFactory, synth_data_dir: Path) -> Path:
    log_dir = tmp_path_factory.mktemp("domainmix")
    run_module("reidgen.run", [*DOMAINMIX, "trainer.max_epochs=3"], synth_data_dir, log_dir)
    return only_run(log_dir)


@pytest.mark.slow
def test_phase_a_then_phase_b_with_fresh_optimizers_each_epoch(three_epochs: Path) -> None:
    rows = epoch_rows(three_epochs)
    assert len(rows) == 3
    # The discriminator and the balance loss only from phase B (epoch 1) on.
    assert not rows[0].get("train/domain_loss_epoch") and not rows[0].get(
        "train/balance_loss_epoch"
    )
    for row in rows[1:]:
        assert float(row["train/domain_loss_epoch"]) > 0
        assert float(row["train/balance_loss_epoch"]) >= 1 - torch.log(torch.tensor(2.0)) - 1e-6
    checkpoint = torch.load(three_epochs / "checkpoints" / "last.ckpt", weights_only=False)
    model_state, discriminator_state = checkpoint["optimizer_states"]
    # Fresh in the last epoch: step counts of that epoch alone (D on batches 0 and 2 of 4).
    model_steps = {float(s["step"]) for s in model_state["state"].values()}
    discriminator_steps = {float(s["step"]) for s in discriminator_state["state"].values()}
    assert model_steps == {BATCHES - BATCHES // 2}
    assert discriminator_steps == {BATCHES // 2}
    for state in (model_state, discriminator_state):
        assert {group["lr"] for group in state["param_groups"]} == {3.5e-5}
    assert checkpoint["domainmix"]["optimizers_reset_for"] == 2


@pytest.mark.slow
def test_pseudo_labels_are_recorded_every_epoch_and_plotted(three_epochs: Path) -> None:
    with open(three_epochs / "pseudo_labels.csv") as handle:
        records = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in records] == [0, 1, 2]
    for record in records:
        assert int(record["kept"]) + int(record["left_out"]) == 75  # street tiny's train images
        assert int(record["clusters"]) >= 1
        assert 0 <= float(record["precision"]) <= 1 and 0 <= float(record["nmi"]) <= 1
    assert (three_epochs / "pseudo_labels.png").stat().st_size > 1000
    record = metrics_of(three_epochs)
    assert record["epochs"] == 3 and "synth_mall_tiny" in record["metrics"]
    state = torch.load(three_epochs / "checkpoints" / "last.ckpt", weights_only=False)
    threshold = state["domainmix"]["labeller"]["independence_threshold"]
    assert threshold is not None and 0 <= threshold <= 1


@pytest.mark.slow
def test_resume_in_phase_b_continues_identically(
    three_epochs: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    first = tmp_path / "first"
    run_module("reidgen.run", [*DOMAINMIX, "trainer.max_epochs=2"], synth_data_dir, first)
    checkpoint = only_run(first) / "checkpoints" / "last.ckpt"
    resumed = tmp_path / "resumed"
    run_module(
        "reidgen.run",
        [*DOMAINMIX, "trainer.max_epochs=3", f"ckpt_path={checkpoint}"],
        synth_data_dir,
        resumed,
    )
    assert metrics_of(only_run(resumed))["metrics"] == metrics_of(three_epochs)["metrics"]
    expected = torch.load(three_epochs / "checkpoints" / "last.ckpt", weights_only=False)
    continued = torch.load(only_run(resumed) / "checkpoints" / "last.ckpt", weights_only=False)
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, continued["state_dict"][name]), name


@pytest.mark.slow
def test_oracle_labels_train_on_the_unlabelled_sources_true_identities(
    tmp_path: Path, synth_data_dir: Path
) -> None:
    run_module(
        "reidgen.run",
        [*DOMAINMIX, "method.oracle_labels=true", "trainer.max_epochs=1"],
        synth_data_dir,
        tmp_path,
    )
    with open(only_run(tmp_path) / "pseudo_labels.csv") as handle:
        (record,) = list(csv.DictReader(handle))
    # Every cluster one person; only identities with fewer than 5 images are left out.
    assert float(record["precision"]) == 1.0 and float(record["recall"]) > 0.9
    assert int(record["clusters"]) >= 5 and int(record["left_out"]) < 10


@pytest.mark.slow
def test_without_an_unlabelled_source_or_clusters_it_fails_clearly(
    tmp_path: Path, synth_data_dir: Path
) -> None:
    labelled_only = run_module(
        "reidgen.run",
        [*DOMAINMIX, "data.unlabelled=[]", "trainer.max_epochs=1"],
        synth_data_dir,
        tmp_path / "labelled",
        check=False,
    )
    assert labelled_only.returncode != 0
    assert "exactly one unlabelled source" in labelled_only.stderr
    no_cluster = run_module(
        "reidgen.run",
        [*DOMAINMIX, "method.labeller.min_cluster_size=1000", "trainer.max_epochs=1"],
        synth_data_dir,
        tmp_path / "no-cluster",
        check=False,
    )
    assert no_cluster.returncode != 0
    assert "no cluster of unlabelled source 'synth_street_tiny'" in no_cluster.stderr


@pytest.mark.slow
def test_two_processes_cluster_once_and_train_both_phases(
    tmp_path: Path, synth_data_dir: Path
) -> None:
    single_process = ("hardware=cpu", "trainer.precision=32-true")
    args = [a for a in DOMAINMIX if a not in single_process]
    args += ["hardware=ddp_cpu", "trainer.max_epochs=2"]
    run_module("reidgen.run", args, synth_data_dir, tmp_path)
    run_dir = only_run(tmp_path)
    assert metrics_of(run_dir)["world_size"] == 2
    with open(run_dir / "pseudo_labels.csv") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [0, 1]
    rows = epoch_rows(run_dir)
    assert len(rows) == 2 and float(rows[1]["train/domain_loss_epoch"]) > 0


@pytest.mark.slow
def test_a_checkpoint_alone_rebuilds_the_model_for_evaluation(
    three_epochs: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    checkpoint = three_epochs / "checkpoints" / "last.ckpt"
    run_module(
        "reidgen.evaluate",
        [
            f"ckpt={checkpoint}",
            "data=synth_tiny",
            "data.targets=[synth_mall_tiny]",
            "hardware=cpu",
            "trainer.precision=32-true",
        ],
        synth_data_dir,
        tmp_path,
    )
    evaluated = metrics_of(only_run(tmp_path, "evaluations"))["metrics"]["synth_mall_tiny"]
    trained = metrics_of(three_epochs)["metrics"]["synth_mall_tiny"]
    assert evaluated["mAP"] == pytest.approx(trained["mAP"], abs=1e-4)
