"""Progress bars of reidgen's long steps (generating a dataset, extracting features for the GS
graph or for clustering, re-ranking, the report runner): all made by :func:`progress`, so they
look alike and are switched alike.

Where a bar shows, and why:

* on stderr: stdout carries what the commands report (tables, file paths), which people pipe
  and parse;
* on the main process only (global rank 0, :func:`reidgen.distributed.global_rank`): in a DDP
  run every rank does the same step on its share or waits for rank 0, and N bars redrawing one
  terminal tell nothing one bar does not;
* ``REIDGEN_PROGRESS=0`` turns every bar off, ``REIDGEN_PROGRESS=1`` on even where stderr is not
  a terminal; unset, tqdm decides (``disable=None``): a bar only when stderr is a terminal. A bar
  redraws its line with carriage returns ten times a second, which in a log file, a CI log or a
  captured subprocess (the report runner keeps each run's stderr for its skip reason) piles up
  as noise instead of showing progress.

A bar only counts: it draws no random number and changes no iteration order, so the results are
the same with or without it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

from reidgen.distributed import global_rank

ENV_VARIABLE = "REIDGEN_PROGRESS"
_SWITCH = {"0": True, "1": False, "": None}  # value -> tqdm's disable

T = TypeVar("T")


def _disable(enabled: bool) -> bool | None:
    """tqdm's ``disable``: True (off), False (on) or None (on when stderr is a terminal)."""
    if not enabled or global_rank() != 0:
        return True
    value = os.environ.get(ENV_VARIABLE, "")
    if value not in _SWITCH:
        raise ValueError(f"{ENV_VARIABLE} must be 0 or 1 (or unset), got {value!r}")
    return _SWITCH[value]


def progress(
    iterable: Iterable[T] | None = None,
    *,
    description: str,
    total: int | None = None,
    unit: str = "it",
    initial: int = 0,
    leave: bool = True,
    enabled: bool = True,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or one advanced by ``update``), shown as the module docstring
    says; iterate it, or use it as a context manager, so it is closed.

    :param description: what is being done, shown first on the line.
    :param total: steps in all (default: ``len(iterable)`` where it has one).
    :param unit: what one step is ("image", "batch", "run").
    :param initial: steps already done before this bar (e.g. by an interrupted run); the ETA
        counts only the steps done since.
    :param leave: keep the finished bar on the terminal; False for steps repeated every epoch.
    :param enabled: the caller's own switch (a command's ``progress=false``): False hides the bar
        whatever the environment says.
    """
    return tqdm(
        iterable,
        desc=description,
        total=total,
        unit=unit,
        initial=initial,
        leave=leave,
        file=sys.stderr,
        disable=_disable(enabled),
        dynamic_ncols=True,
    )


def write_line(line: str) -> None:
    """Prints ``line`` to stdout (flushed) without breaking a bar on the same terminal: the bars
    are cleared before it and drawn again after."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()
