"""The per-epoch training-set hook end to end: a toy clustering method under a real ``pl.Trainer``
relabels an unlabelled SynthPerson source every epoch, on one process and on two DDP processes;
and without the hook, rebuilding the loader every epoch draws exactly the batches of one loader."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from reidgen.data.datamodule import ReIDDataModule
from reidgen.data.samplers import RandomIdentitySampler
from reidgen.data.sources import SynthPersonSource
from reidgen.data.transforms import build_transforms
from reidgen.distributed import world
from reidgen.eval.features import Features
from reidgen.methods.base import ReIDMethod

HEIGHT, WIDTH = 32, 16
BATCH, K = 8, 2
STUDIO, STREET = "synth_studio", "synth_street"
EPOCHS = 2
DDP_TIMEOUT_S = 120


def rule(epoch: int, pid: int) -> int:
    """The toy's pseudo label of a street image: pid modulo (epoch + 2); pids divisible by 4
    are left out (-1)."""
    return -1 if pid % 4 == 0 else pid % (epoch + 2)


class ToyClustering(ReIDMethod):
    """A conv + pooling embedding that, when ``relabel``, labels the street source by
    :func:`rule` every epoch (rank 0's rule; other ranks return other labels, which must lose),
    and records what every training batch holds.

    :param out_dir: where each process saves its records at the end of training (DDP).
    """

    def __init__(self, num_classes: int, relabel: bool = True, out_dir: str | None = None) -> None:
        super().__init__(num_classes)
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.relabel = relabel
        self.out_dir = out_dir
        self.records: list[dict[str, Any]] = []
        self.hook_calls: list[dict[str, Any]] = []

    def extract(self, images: torch.Tensor) -> Features:
        return Features.embedding(self.net(images))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        train_set = self.trainer.datamodule.train_set
        self.records.append(
            {
                "epoch": self.current_epoch,
                "paths": [train_set.samples[i].path for i in batch["index"].tolist()],
                "keys": set(batch),
                **{
                    key: batch[key].clone() for key in ("index", "pid", "source", "domain", "image")
                },
                "structure": tuple(batch["structure"].shape) if "structure" in batch else None,
            }
        )
        return self.net(batch["image"]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def assign_training_labels(self, epoch, training_set):
        if not self.relabel:
            return None
        # What a clustering method does first: features of the source with the current model.
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            features = torch.cat(
                [
                    self.extract(b["image"]).require_embedding("toy")
                    for b in training_set.images(STREET)
                ]
            )
        self.train(was_training)
        samples = training_set.samples(STREET)
        self.hook_calls.append(
            {
                "epoch": epoch,
                "features": tuple(features.shape),
                "labels_in_force": training_set.labels(STREET).tolist(),
            }
        )
        if world()[1] != 0:
            return {STREET: [0] * len(samples)}
        return {STREET: [rule(epoch, s.pid) for s in samples]}

    def on_train_end(self) -> None:
        if self.out_dir is not None:
            rank = world()[1]
            payload = {"records": self.records, "hook_calls": self.hook_calls}
            torch.save(payload, Path(self.out_dir) / f"rank{rank}.pt")


def make_module(data_dir: str, sources: list[str], **kwargs) -> ReIDDataModule:
    catalogue = {
        STUDIO: SynthPersonSource("studio", "tiny", data_dir=data_dir),
        STREET: SynthPersonSource("street", "tiny", data_dir=data_dir),
    }
    options = {"batch_size": BATCH, "num_instances": K, "eval_batch_size": 16, "num_workers": 0}
    options.update(kwargs)
    return ReIDDataModule(
        sources,
        [STUDIO],
        build_transforms(HEIGHT, WIDTH, train=True, pad=2, random_erasing_prob=0.5),
        build_transforms(HEIGHT, WIDTH, train=False),
        catalogue=catalogue,
        **options,
    )


def clustering_module(data_dir: str) -> ReIDDataModule:
    return make_module(data_dir, [STUDIO, STREET], unlabelled=[STREET], extra_fields=["structure"])


def trainer(reload: int = 1, **kwargs) -> pl.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": EPOCHS,
        "reload_dataloaders_every_n_epochs": reload,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "use_distributed_sampler": False,
        "deterministic": True,
    }
    options.update(kwargs)
    return pl.Trainer(**options)


def check_records(records: list[dict], hook_calls: list[dict], data_dir: str, per_rank: int):
    """Asserts the batches follow the rule of their epoch; returns ``{epoch: {path: pid}}``."""
    module = clustering_module(data_dir)
    module.setup("fit")
    street = module.pool[1].samples
    studio_label = {s.path: module.label_of[(STUDIO, s.pid)] for s in module.pool[0].samples}
    street_pid = {s.path: s.pid for s in street}
    seen: dict[int, dict[str, int]] = {epoch: {} for epoch in range(EPOCHS)}
    for record in records:
        epoch = record["epoch"]
        assert record["keys"] == {
            "image", "pid", "camid", "source", "domain", "index", "structure"
        }  # fmt: skip
        assert record["structure"] == (per_rank, 8, 128, 64)
        assert torch.equal(record["source"], record["domain"])
        distinct = sorted({rule(epoch, pid) for pid in street_pid.values()} - {-1})
        for path, pid, source in zip(
            record["paths"], record["pid"].tolist(), record["source"].tolist(), strict=True
        ):
            if source == 0:
                assert pid == studio_label[path] < module.num_classes
            else:
                assert source == 1
                label = rule(epoch, street_pid[path])
                assert label != -1, f"{path} is not used in epoch {epoch}"
                assert pid == module.num_classes + distinct.index(label)
            seen[epoch][path] = pid
    for epoch, pids in seen.items():
        sources = {0 if path in studio_label else 1 for path in pids}
        assert sources == {0, 1}, f"epoch {epoch} drew from sources {sources}"
    # Epoch 0 and epoch 1 label the street differently (modulo 2, then modulo 3).
    street_labels = [{pid for path, pid in seen[e].items() if path in street_pid} for e in (0, 1)]
    assert len(street_labels[0]) == 2 and len(street_labels[1]) == 3
    # The hook ran once per epoch, saw every street image, and the labels then in force.
    assert [call["epoch"] for call in hook_calls] == list(range(EPOCHS))
    assert hook_calls[0]["features"] == (len(street), 4)
    assert hook_calls[0]["labels_in_force"] == [-1] * len(street)
    previous = [module.num_classes + (s.pid % 2) if s.pid % 4 else -1 for s in street]
    assert hook_calls[1]["labels_in_force"] == previous
    return seen


def test_toy_clustering_relabels_every_epoch_on_one_process(
    tiny_street: Path, tiny_studio: Path, synth_data_dir: Path
) -> None:
    torch.manual_seed(0)
    module = clustering_module(str(synth_data_dir))
    module.setup("fit")
    method = ToyClustering(module.num_classes)
    trainer().fit(method, datamodule=module)
    assert {r["epoch"] for r in method.records} == set(range(EPOCHS))
    check_records(method.records, method.hook_calls, str(synth_data_dir), BATCH)
    # The checkpoint state holds the last epoch's labels.
    state = module.state_dict()
    assert state["labels"]["epoch"] == EPOCHS - 1
    street = module.pool[1].samples
    assert state["labels"]["assigned"][STREET].tolist() == [rule(1, s.pid) for s in street]


def test_unlabelled_only_trains_on_the_methods_labels_or_fails_clearly(
    tiny_street: Path, synth_data_dir: Path
) -> None:
    # GCL's setting: no labelled source; pseudo labels start at num_classes = 0.
    torch.manual_seed(0)
    # Batches of 2 x 2: the toy's epoch 0 has only two pseudo identities.
    module = make_module(str(synth_data_dir), [STREET], unlabelled=[STREET], batch_size=4)
    module.setup("fit")
    assert module.num_classes == 0
    method = ToyClustering(module.num_classes)
    trainer().fit(method, datamodule=module)
    street_pid = {s.path: s.pid for s in module.pool[0].samples}
    for record in method.records:
        distinct = sorted({rule(record["epoch"], pid) for pid in street_pid.values()} - {-1})
        for path, pid in zip(record["paths"], record["pid"].tolist(), strict=True):
            assert pid == distinct.index(rule(record["epoch"], street_pid[path]))
    assert {r["epoch"] for r in method.records} == set(range(EPOCHS))

    module = make_module(str(synth_data_dir), [STREET], unlabelled=[STREET])
    module.setup("fit")
    with pytest.raises(ValueError, match="every training source is in data.unlabelled"):
        trainer().fit(ToyClustering(0, relabel=False), datamodule=module)


def test_a_resumed_run_reuses_the_checkpointed_labels(
    tiny_street: Path, tiny_studio: Path, synth_data_dir: Path, tmp_path: Path
) -> None:
    def fit(epochs: int, folder: str, ckpt_path: Path | None = None) -> ToyClustering:
        torch.manual_seed(0)
        module = clustering_module(str(synth_data_dir))
        module.setup("fit")
        method = ToyClustering(module.num_classes)
        checkpoints = ModelCheckpoint(dirpath=tmp_path / folder, save_last=True)
        run = trainer(max_epochs=epochs, enable_checkpointing=True, callbacks=[checkpoints])
        run.fit(method, datamodule=module, ckpt_path=ckpt_path)
        return method

    whole = fit(EPOCHS, "whole")
    fit(1, "interrupted")
    resumed = fit(EPOCHS, "interrupted", tmp_path / "interrupted" / "last.ckpt")
    # The interrupted epoch 0's labels come from the checkpoint; only epoch 1 asks the method.
    assert [call["epoch"] for call in resumed.hook_calls] == [1]
    assert resumed.hook_calls[0]["labels_in_force"] == whole.hook_calls[1]["labels_in_force"]
    second_epoch = [r for r in whole.records if r["epoch"] == 1]
    assert len(resumed.records) == len(second_epoch) > 0
    for a, b in zip(second_epoch, resumed.records, strict=True):
        for key in ("index", "pid", "source", "image"):
            assert torch.equal(a[key], b[key]), key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, data_dir: str, out_dir: str) -> None:
    # What torchrun sets: Lightning then joins these processes instead of launching its own.
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world_size),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "NODE_RANK": "0",
        }
    )
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = clustering_module(data_dir)
    module.setup("fit")
    method = ToyClustering(module.num_classes, out_dir=out_dir)
    trainer(devices=world_size, strategy="ddp").fit(method, datamodule=module)


@pytest.mark.slow
def test_toy_clustering_on_two_ddp_processes_uses_rank_zeros_labels(
    tiny_street: Path, tiny_studio: Path, synth_data_dir: Path, tmp_path: Path
) -> None:
    world_size = 2
    context = mp.spawn(
        _ddp_worker,
        args=(world_size, _free_port(), str(synth_data_dir), str(tmp_path)),
        nprocs=world_size,
        join=False,
    )
    # Ranks out of step (e.g. different labels, hence different epoch lengths) wait for each
    # other forever: fail instead.
    deadline = time.monotonic() + DDP_TIMEOUT_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the DDP processes did not finish in {DDP_TIMEOUT_S} s")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
    seen = [
        check_records(r["records"], r["hook_calls"], str(synth_data_dir), BATCH // world_size)
        for r in results
    ]
    # Rank 1's hook returned other labels; both ranks trained on rank 0's, with disjoint halves
    # of every global batch.
    for epoch in range(EPOCHS):
        both = {**seen[0][epoch], **seen[1][epoch]}
        for path in set(seen[0][epoch]) & set(seen[1][epoch]):
            assert seen[0][epoch][path] == seen[1][epoch][path] == both[path]
    for a, b in zip(results[0]["records"], results[1]["records"], strict=True):
        assert a["epoch"] == b["epoch"]
        assert not set(a["index"].tolist()) & set(b["index"].tolist())


def test_a_loader_per_epoch_draws_the_batches_of_one_loader(
    tiny_studio: Path, synth_data_dir: Path
) -> None:
    """Without the hook, rebuilding the loader every epoch (and its discarded first iterator,
    whose workers prefetch) changes nothing: the same indices, images and weights as one loader
    for the whole run, the sampler's (seed, epoch) plan."""
    runs = {}
    for reload in (0, 1):
        torch.manual_seed(0)
        module = make_module(str(synth_data_dir), [STUDIO], num_workers=2)
        module.setup("fit")
        method = ToyClustering(module.num_classes, relabel=False)
        trainer(reload).fit(method, datamodule=module)
        runs[reload] = (method, module)
    (once, module), (every, _) = runs[0], runs[1]
    assert len(once.records) == len(every.records) > 0
    for a, b in zip(once.records, every.records, strict=True):
        assert a["epoch"] == b["epoch"]
        for key in ("index", "pid", "source", "image"):
            assert torch.equal(a[key], b[key]), key
    for name, tensor in once.state_dict().items():
        assert torch.equal(tensor, every.state_dict()[name]), name
    sampler = RandomIdentitySampler(
        module.train_set.labels, num_instances=K, batch_size=BATCH, seed=module.seed
    )
    for epoch in range(EPOCHS):
        drawn = torch.cat([r["index"] for r in every.records if r["epoch"] == epoch])
        assert drawn.tolist() == sampler.rank_indices(epoch).tolist()
    assert sampler.rank_indices(0).tolist() != sampler.rank_indices(1).tolist()
