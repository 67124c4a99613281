"""Where a run starts from: a run folder that holds an unfinished run continues it.

The rule, for the folder a run writes to (``hydra.run.dir``):

* it holds a finished run (``metrics.json``): refused, whatever ``ckpt_path`` says; a finished
  run's results are never replaced (continue it in another folder with
  ``ckpt_path=<its folder>/checkpoints/last.ckpt``);
* it holds ``checkpoints/last.ckpt``: the run resumes from it, and says so. The folder's own
  checkpoint is that run's latest state, so it wins over a ``ckpt_path=`` path too (a requeued
  job that was started from another run's checkpoint continues itself, not that start);
* otherwise ``ckpt_path=last`` is an error naming the missing file, a ``ckpt_path=`` path must
  exist, and no ``ckpt_path`` starts afresh.

A continued run also keeps what its earlier part logged: :func:`set_aside_csv_logs`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger, Logger

from reidgen.checkpointing import LAST_NAME
from reidgen.distributed import global_rank

log = logging.getLogger(__name__)

# ckpt_path's value for "this run folder's checkpoints/last.ckpt".
LAST = "last"
# The file that marks a run folder's run as finished (reidgen.run writes it last).
FINISHED = "metrics.json"


def last_checkpoint(run_dir: Path) -> Path:
    """``<run_dir>/checkpoints/last.ckpt``, whether or not it exists."""
    return run_dir / "checkpoints" / LAST_NAME


def checkpoint_to_resume(run_dir: str | Path, ckpt_path: str | None) -> Path | None:
    """The checkpoint a run writing to ``run_dir`` resumes from, by the module's rule.

    :param run_dir: the run's folder (it may not exist yet).
    :param ckpt_path: the ``ckpt_path`` setting: None, ``"last"`` or a checkpoint's path.
    :returns: the checkpoint to resume from, or None to start afresh.
    :raises FileExistsError: if ``run_dir`` holds a finished run.
    :raises FileNotFoundError: for ``ckpt_path=last`` without ``<run_dir>/checkpoints/last.ckpt``,
        or a ``ckpt_path`` that is not a file.
    """
    run_dir = Path(run_dir)
    finished = run_dir / FINISHED
    own = last_checkpoint(run_dir)
    if finished.is_file():
        raise FileExistsError(
            f"run folder {run_dir} holds a finished run ({FINISHED}); a run never writes over "
            "one: choose another folder (hydra.run.dir), and to train that run further pass "
            f"ckpt_path={own}"
        )
    if own.is_file():
        if ckpt_path not in (None, LAST) and Path(ckpt_path).resolve() != own.resolve():
            log.warning(
                "run folder %s holds its own %s, this run's latest state: resuming from it, "
                "not from ckpt_path=%s",
                run_dir,
                own.relative_to(run_dir),
                ckpt_path,
            )
        log.info("resuming the unfinished run in %s from %s", run_dir, own.relative_to(run_dir))
        return own
    if ckpt_path == LAST:
        raise FileNotFoundError(
            f"ckpt_path=last: {own} does not exist. ckpt_path=last continues the run of the "
            "folder this run writes to: set hydra.run.dir=<that run's folder>, or pass "
            "ckpt_path=<a checkpoint's path>"
        )
    if ckpt_path is None:
        return None
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return path


def set_aside_csv_logs(loggers: Sequence[Logger]) -> None:
    """Moves the folder of every CSV logger that already has a ``metrics.csv`` (an earlier part
    of a continued run wrote it) to the first free ``<folder>_part1``, ``_part2``, ...: the
    logger would otherwise delete that file when it starts. Main process only."""
    if global_rank() != 0:
        return
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        folder = Path(logger.log_dir)
        if not (folder / "metrics.csv").is_file():
            continue
        number = 1
        while (target := folder.with_name(f"{folder.name}_part{number}")).exists():
            number += 1
        folder.rename(target)
        log.info("the earlier part's CSV log: moved %s to %s", folder, target)
