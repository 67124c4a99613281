"""Stopping a run on request: SIGTERM or SIGUSR1 ends training at the next batch with a resumable
``last.ckpt`` (:class:`~reidgen.checkpointing.LastCheckpoint` saves it), and the process exits
with ``128 + signal number`` (143 for SIGTERM, 138 for SIGUSR1), as a shell reports a process
the signal ended: the run is not finished, and its folder continues it.

SIGTERM: Lightning's own handler, installed for every fit, only raises
``trainer.received_sigterm``; reidgen reads that flag. SIGUSR1: under SLURM with auto-requeue
(Lightning's default there) Lightning handles it itself (an ``hpc_ckpt_<n>.ckpt`` in the run
folder, then ``scontrol requeue``), and reidgen leaves it so; the SIGTERM that ends the requeued
job then saves ``last.ckpt``. Elsewhere SIGUSR1 would kill the process (its default action), so
:class:`StopRequests` gives it a handler that records it.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


def exit_code(signal_number: int) -> int:
    """The exit status of a run stopped by ``signal_number``: ``128 + signal_number``."""
    return 128 + int(signal_number)


class Preempted(Exception):
    """Training stopped on a signal; the message says what ``last.ckpt`` holds."""

    def __init__(self, signal_number: int, message: str) -> None:
        super().__init__(message)
        self.signal_number = int(signal_number)


class StopRequests:
    """Whether a SIGTERM or SIGUSR1 asks training to stop (see the module docstring)."""

    def __init__(self) -> None:
        self._received: int | None = None
        self._previous: signal.Handlers | Callable[..., object] | int | None = None
        self._installed = False

    def install(self) -> None:
        """Records SIGUSR1 from now on, unless something else handles it (Lightning under SLURM
        auto-requeue) or it is ignored on purpose. Call it once Lightning has installed its own
        handlers (from ``on_train_start``): it does not install its SIGUSR1 one over another."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL:
            return
        self._previous = signal.signal(signal.SIGUSR1, self._record)
        self._installed = True

    def uninstall(self) -> None:
        """Gives SIGUSR1 back its previous handler."""
        if self._installed:
            signal.signal(signal.SIGUSR1, self._previous)
            self._installed = False

    def _record(self, signal_number: int, frame: FrameType | None) -> None:
        # No logging here: a handler runs between two bytecodes of the main thread, possibly
        # inside a logging call. The stop is logged where training stops.
        self._received = signal_number

    def requested(self, trainer: pl.Trainer) -> int | None:
        """The signal that asks to stop (SIGUSR1 recorded here, or Lightning's SIGTERM flag),
        agreed by every process (a signal may reach one of them only), else None. Collective:
        every process calls it at the same point."""
        local = self._received
        if local is None and trainer.received_sigterm:
            local = signal.SIGTERM
        if trainer.world_size > 1:
            anyone = trainer.strategy.reduce_boolean_decision(local is not None, all=False)
            # A process that received nothing stops as if by SIGTERM.
            return (local or signal.SIGTERM) if anyone else None
        return local


@contextmanager
def exit_when_stopped(describe: Callable[[int], str]) -> Iterator[None]:
    """Turns a stopped fit into a logged reason and ``SystemExit(128 + signal)``.

    :param describe: ``describe(signal_number)`` says what ``last.ckpt`` holds, for a stop that
        Lightning raised itself (its ``SIGTERMException``, at a point reidgen does not save at,
        e.g. when a SIGTERM comes during validation).
    """
    try:
        yield
    except Preempted as stop:
        log.warning("%s", stop)
        raise SystemExit(exit_code(stop.signal_number)) from None
    except SIGTERMException:
        log.warning("%s", describe(signal.SIGTERM))
        raise SystemExit(exit_code(signal.SIGTERM)) from None
