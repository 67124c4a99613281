"""Checkpoints of a killed run: ``last.ckpt`` after every training epoch whatever the validation
schedule and every ``every_n_steps`` optimizer steps, writes that leave the previous checkpoint
whole when they are interrupted, and the stop on SIGTERM / SIGUSR1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from reidgen import checkpointing
from reidgen.checkpointing import (
    AtomicCheckpointIO,
    LastCheckpoint,
    save_atomically,
    step_checkpoint_due,
    temporary_path,
)
from reidgen.preemption import Preempted, exit_when_stopped

EPOCHS = 3
ROOT = Path(__file__).resolve().parents[1]


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


# --------------------------------------------------------------------------- step checkpoints
@pytest.mark.parametrize(
    ("previous", "step", "every", "due"),
    [
        (2, 3, 3, True),
        (3, 4, 3, False),
        (5, 7, 3, True),  # two optimizer steps in one batch cross 6
        (6, 6, 3, False),  # no optimizer step in this batch
        (0, 1, 1, True),
        (2, 3, None, False),
        (2, 3, 0, False),
    ],
)
def test_step_checkpoint_due_when_the_step_crosses_a_multiple(
    previous: int, step: int, every: int | None, due: bool
) -> None:
    assert step_checkpoint_due(previous, step, every) is due


def test_every_n_steps_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every_n_steps"):
        LastCheckpoint(tmp_path, every_n_steps=-1)


class RecordingIO(AtomicCheckpointIO):
    """Records ``(global_step, mid_epoch)`` of every ``last.ckpt`` written."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[tuple[int, bool]] = []

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options=None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        if Path(path).name == checkpointing.LAST_NAME:
            state = checkpoint["callbacks"]["LastCheckpoint"]
            self.saved.append((checkpoint["global_step"], state["mid_epoch"]))


BATCHES = 4  # per epoch: 8 samples in batches of 2


def toy_trainer(
    tmp_path: Path, last: LastCheckpoint, epochs: int = 2, io: AtomicCheckpointIO | None = None
) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        check_val_every_n_epoch=1000,
        num_sanity_val_steps=0,
        callbacks=[last],
        plugins=[io or AtomicCheckpointIO()],
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def toy_data() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(2 * BATCHES, 2)), batch_size=2)


@pytest.mark.parametrize(
    ("every", "expected"),
    [
        # 4 batches per epoch, 8 steps: mid-epoch at the multiples, at each epoch end.
        (3, [(3, True), (4, False), (6, True), (8, False)]),
        # Multiples on an epoch's last batch: the epoch-end save is that step's one.
        (2, [(2, True), (4, False), (6, True), (8, False)]),
        (None, [(4, False), (8, False)]),
    ],
)
def test_last_checkpoint_every_n_steps_and_at_epoch_ends(
    tmp_path: Path, every: int | None, expected: list[tuple[int, bool]]
) -> None:
    torch.manual_seed(0)
    io = RecordingIO()
    last = LastCheckpoint(tmp_path / "checkpoints", every_n_steps=every)
    toy_trainer(tmp_path, last, io=io).fit(Toy(), train_dataloaders=toy_data())
    assert io.saved == expected
    assert load(last.path)["global_step"] == 2 * BATCHES
    assert leftovers(last.dirpath) == []


def test_a_fit_that_trains_nothing_still_leaves_a_last_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    first = LastCheckpoint(tmp_path / "first")
    toy_trainer(tmp_path, first, epochs=1).fit(Toy(), train_dataloaders=toy_data())
    # Resumed with the same max_epochs: Lightning skips the training loop and all its hooks.
    again = LastCheckpoint(tmp_path / "again")
    trainer = toy_trainer(tmp_path, again, epochs=1)
    trainer.fit(Toy(), train_dataloaders=toy_data(), ckpt_path=first.path)
    assert trainer.global_step == BATCHES
    resumed = load(again.path)
    assert resumed["global_step"] == BATCHES
    original = load(first.path)["state_dict"]
    for name, tensor in resumed["state_dict"].items():
        assert torch.equal(tensor, original[name]), name


def test_a_run_killed_while_writing_a_step_checkpoint_leaves_the_previous_one(
    tmp_path: Path,
) -> None:
    checkpoints = tmp_path / "checkpoints"
    # The child trains with a checkpoint every step and SIGKILLs itself while writing the third
    # (step 3), once its bytes are written and before the rename: no cleanup code runs.
    child = textwrap.dedent(
        f"""
        import os, signal
        import torch
        from reidgen.checkpointing import LastCheckpoint
        from tests.test_checkpointing import Toy, toy_data, toy_trainer
        from pathlib import Path

        writes = []
        def fsync(fd):
            writes.append(fd)
            if len(writes) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = fsync
        torch.manual_seed(0)
        last = LastCheckpoint({str(checkpoints)!r}, every_n_steps=1)
        toy_trainer(Path({str(tmp_path)!r}), last).fit(Toy(), train_dataloaders=toy_data())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == -9, result.stderr.decode()
    path = checkpoints / checkpointing.LAST_NAME
    assert temporary_path(path).is_file()  # the killed write's
    previous = load(path)
    assert previous["global_step"] == 2
    # Usable: the run resumes from it and finishes.
    last = LastCheckpoint(checkpoints, every_n_steps=1)
    trainer = toy_trainer(tmp_path, last)
    trainer.fit(Toy(), train_dataloaders=toy_data(), ckpt_path=path)
    assert trainer.global_step == load(path)["global_step"] == 2 * BATCHES
    assert leftovers(checkpoints) == []


# --------------------------------------------------------------------------- stop signals
class Signalling(Toy):
    """Sends ``signal_number`` to its own process in the training step of global step
    ``at_step`` (0-based: the batch that makes step ``at_step + 1``)."""

    def __init__(self, signal_number: int, at_step: int) -> None:
        super().__init__()
        self.signal_number = signal_number
        self.at_step = at_step

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_step == self.at_step:
            os.kill(os.getpid(), self.signal_number)
        return super().training_step(batch, batch_idx)


class Unresumable(Signalling):
    resumes_mid_epoch = False


@pytest.mark.parametrize(
    "signal_number", [signal.SIGTERM, signal.SIGUSR1], ids=lambda number: number.name
)
def test_a_signal_stops_training_at_the_batch_end_with_a_mid_epoch_checkpoint(
    tmp_path: Path, signal_number: int
) -> None:
    torch.manual_seed(0)
    io = RecordingIO()
    last = LastCheckpoint(tmp_path / "checkpoints")
    trainer = toy_trainer(tmp_path, last, io=io)
    with pytest.raises(Preempted) as stopped:
        trainer.fit(Signalling(signal_number, at_step=5), train_dataloaders=toy_data())
    assert stopped.value.signal_number == signal_number
    # Epoch 0 ended at step 4; the signal came in the batch of step 6, the 2nd of epoch 1.
    assert io.saved == [(4, False), (6, True)]
    message = str(stopped.value)
    assert signal.Signals(signal_number).name in message
    assert f"{last.path} holds step 6 (epoch 1 after 2 of its 4 batches)" in message
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    # Resumed, it ends where an uninterrupted run ends.
    resumed = toy_trainer(tmp_path, LastCheckpoint(tmp_path / "checkpoints"))
    resumed.fit(Toy(), train_dataloaders=toy_data(), ckpt_path=last.path)
    assert resumed.global_step == load(last.path)["global_step"] == 2 * BATCHES


def test_a_signal_in_an_epochs_last_batch_stops_after_the_epoch_end_checkpoint(
    tmp_path: Path,
) -> None:
    io = RecordingIO()
    last = LastCheckpoint(tmp_path / "checkpoints", every_n_steps=1)
    with pytest.raises(Preempted, match=r"holds step 4 \(the end of epoch 0\)"):
        toy_trainer(tmp_path, last, io=io).fit(
            Signalling(signal.SIGUSR1, at_step=3), train_dataloaders=toy_data()
        )
    assert io.saved == [(1, True), (2, True), (3, True), (4, False)]


def test_a_stopped_fit_exits_with_128_plus_the_signal_number(tmp_path: Path) -> None:
    last = LastCheckpoint(tmp_path / "checkpoints")
    trainer = toy_trainer(tmp_path, last)
    with pytest.raises(SystemExit) as exited, exit_when_stopped(last.describe_stop):
        trainer.fit(Signalling(signal.SIGUSR1, at_step=1), train_dataloaders=toy_data())
    assert exited.value.code == 128 + signal.SIGUSR1
    with pytest.raises(SystemExit) as exited, exit_when_stopped(last.describe_stop):
        raise SIGTERMException
    assert exited.value.code == 128 + signal.SIGTERM


def test_a_method_that_does_not_resume_mid_epoch_gets_epoch_end_checkpoints_only(
    tmp_path: Path,
) -> None:
    io = RecordingIO()
    last = LastCheckpoint(tmp_path / "checkpoints", every_n_steps=1)
    with pytest.raises(Preempted, match=r"holds step 4 \(the end of epoch 0\)"):
        toy_trainer(tmp_path, last, io=io).fit(
            Unresumable(signal.SIGUSR1, at_step=5), train_dataloaders=toy_data()
        )
    assert io.saved == [(4, False)]

    mid_epoch = LastCheckpoint(tmp_path / "mid-epoch", every_n_steps=1)
    with pytest.raises(Preempted):
        toy_trainer(tmp_path, mid_epoch).fit(
            Signalling(signal.SIGUSR1, at_step=1), train_dataloaders=toy_data()
        )
    resumed = toy_trainer(tmp_path, LastCheckpoint(tmp_path / "resumed"))
    with pytest.raises(RuntimeError, match="saved mid-epoch, but Unresumable does not resume"):
        resumed.fit(
            Unresumable(signal.SIGUSR1, at_step=-1),
            train_dataloaders=toy_data(),
            ckpt_path=mid_epoch.path,
        )
