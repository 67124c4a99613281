"""Checkpoints that survive a killed run: ``last.ckpt`` after every training epoch and every
``checkpoint.every_n_steps`` optimizer steps, and when a signal stops the run
(:mod:`reidgen.preemption`); every file written atomically.

Lightning's own ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes ``last.ckpt`` only
when a top-k checkpoint was saved at the same step, i.e. never before the run ends; and its
writes go to a temporary file in the system's temp folder that is then moved, which is a copy in
place (and a stray file left in the temp folder) when that folder is on another file system.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from fsspec.utils import get_protocol
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint

from reidgen.atomic import write_atomically
from reidgen.preemption import Preempted, StopRequests

log = logging.getLogger(__name__)

LAST_NAME = "last.ckpt"
TEMPORARY_SUFFIX = ".tmp"


def temporary_path(path: Path) -> Path:
    """The temporary file a checkpoint is written to before it replaces ``path``.

    :param path: the checkpoint's final path.
    :returns: ``path`` with :data:`TEMPORARY_SUFFIX` appended, in the same folder: a rename within
        one file system is atomic, and a write killed half-way is overwritten by the next one.
    """
    return path.with_name(path.name + TEMPORARY_SUFFIX)


def save_atomically(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """``torch.save(checkpoint)`` to ``path`` such that ``path`` holds either its previous
    content or the whole new checkpoint, never a part of it, even if the process is killed.

    :param checkpoint: what to save (anything ``torch.save`` accepts).
    :param path: a local file path; its folder is created if needed.
    """
    path = Path(path)
    write_atomically(
        path,
        lambda temporary: _torch_save(checkpoint, temporary),
        temporary=temporary_path(path),
        durable=True,
    )


def _torch_save(checkpoint: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as file:
        torch.save(checkpoint, file)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer (``Trainer(plugins=[AtomicCheckpointIO()])``) with every local
    checkpoint written by :func:`save_atomically`; remote paths (``s3://`` ...) keep Lightning's
    own write. Covers every checkpoint the trainer saves: ``last``, ``best``, on exception."""

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: str | os.PathLike[str],
        storage_options: Any | None = None,
    ) -> None:
        """Writes ``checkpoint`` to ``path`` atomically.

        :param checkpoint: the trainer's checkpoint dict.
        :param path: where to write it.
        :param storage_options: not supported (as by ``TorchCheckpointIO``); must be None.
        """
        if get_protocol(str(path)) != "file":
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint takes no storage_options, got "
                f"{storage_options!r}"
            )
        save_atomically(checkpoint, path)


def step_checkpoint_due(previous_step: int, step: int, every_n_steps: int | None) -> bool:
    """Whether a batch that took the global step from ``previous_step`` to ``step`` reached a
    multiple of ``every_n_steps`` (None or 0: never).

    A crossing, not an equality: a method with several optimizers advances the global step by
    more than one per batch, and a batch without an optimizer step does not advance it.
    """
    if not every_n_steps:
        return False
    return step // every_n_steps > previous_step // every_n_steps


class LastCheckpoint(Checkpoint):
    """Saves ``<dirpath>/last.ckpt`` so that a run killed at any point resumes (``ckpt_path=``)
    from its latest save: at the end of every training epoch, whatever the validation schedule;
    with ``every_n_steps``, also at the end of the batch in which the global step (optimizer
    steps) reaches a multiple of it; and when SIGTERM or SIGUSR1 asks to stop
    (:mod:`reidgen.preemption`), at the next batch end, after which it raises
    :class:`~reidgen.preemption.Preempted`.

    Mid-epoch saves restore the batch counters, and the data module restores its sampler's
    position from them, so the resumed epoch draws the batches it had left. A method that keeps
    per-epoch state outside its checkpoint says ``resumes_mid_epoch = False``
    (:class:`~reidgen.methods.base.ReIDMethod`): it gets no mid-epoch save (a stop keeps the
    last epoch end's), and a mid-epoch checkpoint does not resume it. The last batch of an epoch
    never gets one: the epoch-end save follows it, after validation and the method's epoch-end
    hook. Step saves come after an optimizer step; a stop with ``accumulate_grad_batches > 1``
    may come between two, and the gradients accumulated since the last one are not saved.

    A :class:`~pytorch_lightning.callbacks.Checkpoint`, so Lightning calls it after the method's
    own ``on_train_epoch_end`` (whose state changes the checkpoint must include) and after the
    callbacks that are not checkpoints. Put it after the other checkpoint callbacks, so the
    ``best`` callback's state in ``last.ckpt`` is the one after this epoch. The write is atomic
    only with :class:`AtomicCheckpointIO` as the trainer's checkpoint writer.
    """

    def __init__(self, dirpath: str | os.PathLike[str], every_n_steps: int | None = None) -> None:
        """:param dirpath: the folder of ``last.ckpt``.
        :param every_n_steps: also save every this many optimizer steps; None or 0: at epoch
            ends (and stops) only."""
        if every_n_steps is not None and every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0 or None, got {every_n_steps}")
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps or None
        self.stops = StopRequests()
        # What this process saved last, in words, and at which global step.
        self._saved: tuple[int, str] | None = None
        self._step_at_batch_end = 0
        # What the checkpoint being written is, for state_dict.
        self._saving: dict[str, Any] = {"mid_epoch": False, "saved": None}
        self._restored: dict[str, Any] = {}
        self._mid_epoch_saves = True

    @property
    def path(self) -> Path:
        """The checkpoint's path, ``<dirpath>/last.ckpt``."""
        return self.dirpath / LAST_NAME

    def state_dict(self) -> dict[str, Any]:
        return dict(self._saving)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._step_at_batch_end = trainer.global_step
        self._mid_epoch_saves = getattr(pl_module, "resumes_mid_epoch", True)
        name = type(pl_module).__name__
        if self._restored.get("mid_epoch") and not self._mid_epoch_saves:
            raise RuntimeError(
                f"checkpoint {trainer.ckpt_path} was saved mid-epoch, but {name} does not resume "
                "mid-epoch (resumes_mid_epoch = False): resume it from a checkpoint saved at an "
                "epoch end"
            )
        if self._restored.get("saved"):
            log.info("continuing from %s: %s", trainer.ckpt_path, self._restored["saved"])
        if self.every_n_steps and not self._mid_epoch_saves:
            log.info(
                "%s does not resume mid-epoch: last.ckpt at epoch ends only, not every %d steps",
                name,
                self.every_n_steps,
            )
        self.stops.install()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        previous, self._step_at_batch_end = self._step_at_batch_end, trainer.global_step
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        stop = self.stops.requested(trainer)
        due = step_checkpoint_due(previous, trainer.global_step, self.every_n_steps)
        if self._mid_epoch_saves and (due or stop is not None):
            batches = f"{batch_idx + 1} of its {trainer.num_training_batches} batches"
            self._save(trainer, f"epoch {trainer.current_epoch} after {batches}", mid_epoch=True)
        if stop is not None:
            raise self._preempted(stop)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer, f"the end of epoch {trainer.current_epoch}")
        stop = self.stops.requested(trainer)
        if stop is not None:
            raise self._preempted(stop)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stops.uninstall()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.stops.uninstall()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A fit that trains nothing (resumed from a run that had reached max_epochs) still leaves
        # a last.ckpt. Not on_train_end: Lightning skips its training loop then, with every hook
        # in it; on_fit_end runs after every fit.
        if self._saved is None or self._saved[0] != trainer.global_step:
            self._save(trainer, "the end of training")

    def describe_stop(self, signal_number: int) -> str:
        """Why training stopped and what ``last.ckpt`` holds, for a stop by ``signal_number``."""
        name = signal.Signals(signal_number).name
        held = (
            f"{self.path} holds {self._saved[1]}"
            if self._saved is not None
            else f"this run saved no checkpoint; {self.path} holds what it held before, if any"
        )
        return (
            f"training stopped by {name} after step {self._step_at_batch_end}: {held}. Continue "
            f"with the same command in this run folder (hydra.run.dir={self.dirpath.parent}), "
            "which resumes from it"
        )

    def _preempted(self, signal_number: int) -> Preempted:
        return Preempted(signal_number, self.describe_stop(signal_number))

    def _save(self, trainer: pl.Trainer, where: str, mid_epoch: bool = False) -> None:
        """Saves ``last.ckpt``, described as taken at ``where`` in training."""
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        described = f"step {trainer.global_step} ({where})"
        self._saving = {"mid_epoch": mid_epoch, "saved": described}
        # Collective: every rank calls it, rank 0 writes. The whole state (optimizer, loops,
        # callbacks), which resuming needs, asked for explicitly: Lightning logs a note each
        # time it has to assume it.
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved = (trainer.global_step, described)
