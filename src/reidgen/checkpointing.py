"""Checkpoints that survive a killed run: ``last.ckpt`` after every training epoch, every file
written atomically.

Lightning's own ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes ``last.ckpt`` only
when a top-k checkpoint was saved at the same step, i.e. never before the run ends; and its
writes go to a temporary file in the system's temp folder that is then moved, which is a copy in
place (and a stray file left in the temp folder) when that folder is on another file system.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from fsspec.utils import get_protocol
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint

from reidgen.atomic import write_atomically

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


class LastCheckpoint(Checkpoint):
    """Saves ``<dirpath>/last.ckpt`` at the end of every training epoch, whatever the validation
    schedule, so that a run killed at any point resumes (``ckpt_path=``) from its last finished
    epoch.

    A :class:`~pytorch_lightning.callbacks.Checkpoint`, so Lightning calls it after the method's
    own ``on_train_epoch_end`` (whose state changes the checkpoint must include) and after the
    callbacks that are not checkpoints. Put it after the other checkpoint callbacks, so the
    ``best`` callback's state in ``last.ckpt`` is the one after this epoch. The write is atomic
    only with :class:`AtomicCheckpointIO` as the trainer's checkpoint writer.
    """

    def __init__(self, dirpath: str | os.PathLike[str]) -> None:
        """:param dirpath: the folder of ``last.ckpt``."""
        self.dirpath = Path(dirpath)
        self._saved_at_step: int | None = None

    @property
    def path(self) -> Path:
        """The checkpoint's path, ``<dirpath>/last.ckpt``."""
        return self.dirpath / LAST_NAME

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A fit that trained no epoch (resumed from a finished run) still leaves a last.ckpt.
        if self._saved_at_step != trainer.global_step:
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        # Collective: every rank calls it, rank 0 writes. The whole state (optimizer, loops,
        # callbacks), which resuming needs, asked for explicitly: Lightning logs a note each
        # time it has to assume it.
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_at_step = trainer.global_step
