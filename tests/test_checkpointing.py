"""Checkpoints of a killed run: ``last.ckpt`` after every training epoch whatever the validation
schedule, and writes that leave the previous checkpoint whole when they are interrupted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reidgen import checkpointing
from reidgen.checkpointing import (
    AtomicCheckpointIO,
    LastCheckpoint,
    save_atomically,
    temporary_path,
)

EPOCHS = 3


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=False)


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.glob("*" + checkpointing.TEMPORARY_SUFFIX))


def test_save_replaces_the_previous_checkpoint_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    save_atomically({"epoch": 0}, path)
    save_atomically({"epoch": 1}, path)
    assert load(path) == {"epoch": 1}
    assert leftovers(path.parent) == []


def test_a_save_that_fails_half_way_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.ckpt"
    save_atomically({"epoch": 0, "weights": torch.arange(10)}, path)

    def half_written(obj: object, file: Any) -> None:
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", half_written)
    with pytest.raises(OSError, match="No space left"):
        save_atomically({"epoch": 1, "weights": torch.arange(20)}, path)
    previous = load(path)
    assert previous["epoch"] == 0 and torch.equal(previous["weights"], torch.arange(10))
    assert leftovers(tmp_path) == []


def test_a_stale_temporary_file_is_overwritten_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    save_atomically({"epoch": 0}, path)
    temporary_path(path).write_bytes(b"left by a killed write")
    save_atomically({"epoch": 1}, path)
    assert load(path) == {"epoch": 1}
    assert leftovers(tmp_path) == []


def test_a_process_killed_while_writing_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    save_atomically({"epoch": 0}, path)
    # The child kills itself with SIGKILL once the new checkpoint's bytes are written, before the
    # rename: no cleanup code of its own runs, as when a user kills a run.
    child = textwrap.dedent(
        f"""
        import os, signal
        from reidgen import checkpointing
        checkpointing.os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        checkpointing.save_atomically({{"epoch": 1}}, {str(path)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()
    assert load(path) == {"epoch": 0}
    assert temporary_path(path).is_file()  # the killed write's
    save_atomically({"epoch": 2}, path)
    assert load(path) == {"epoch": 2}
    assert leftovers(tmp_path) == []


def test_checkpoint_io_rejects_storage_options(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="storage_options"):
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / "x.ckpt", storage_options={"a": 1})


class Toy(pl.LightningModule):
    """A linear model that logs ``val/score`` and counts finished epochs in its own
    ``on_train_epoch_end``, a state change the epoch's checkpoint must include."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.register_buffer("epochs_ended", torch.zeros((), dtype=torch.long))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/score", -self.layer(batch[0]).pow(2).mean())

    def on_train_epoch_end(self) -> None:
        self.epochs_ended += 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recorder(pl.Callback):
    """What ``last.ckpt`` holds when each training epoch starts (the previous epoch's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[tuple[int, int] | None] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.path.is_file():
            self.seen.append(None)
            return
        checkpoint = load(self.path)
        self.seen.append((checkpoint["epoch"], int(checkpoint["state_dict"]["epochs_ended"])))


@pytest.mark.parametrize("check_val_every_n_epoch", [1, 2, 1000])
def test_last_checkpoint_after_every_epoch_whatever_the_validation_schedule(
    tmp_path: Path, check_val_every_n_epoch: int
) -> None:
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    checkpoints = tmp_path / "checkpoints"
    last = LastCheckpoint(checkpoints)
    recorder = Recorder(last.path)
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        check_val_every_n_epoch=check_val_every_n_epoch,
        num_sanity_val_steps=0,
        callbacks=[
            recorder,
            ModelCheckpoint(
                dirpath=checkpoints, filename="best-{epoch}", monitor="val/score", mode="max"
            ),
            last,
        ],
        plugins=[AtomicCheckpointIO()],
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Toy(), train_dataloaders=data, val_dataloaders=data)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    # Epoch e's checkpoint: epoch index e, and the method's epoch-end hook has run e + 1 times.
    assert recorder.seen == [None, *((e, e + 1) for e in range(EPOCHS - 1))]
    final = load(last.path)
    assert (final["epoch"], int(final["state_dict"]["epochs_ended"])) == (EPOCHS - 1, EPOCHS)
    assert final["global_step"] == trainer.global_step and final["optimizer_states"]
    best = sorted(p.name for p in checkpoints.glob("best-*.ckpt"))
    assert len(best) == (1 if check_val_every_n_epoch <= EPOCHS else 0), best
    assert leftovers(checkpoints) == []
