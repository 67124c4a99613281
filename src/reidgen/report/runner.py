"""Runs the rows of the tables that have no finished result, restartably.

A row's run lives in ``<out>/runs/<table>/<row>/`` (a row with seeds: one run per seed, in
``<out>/runs/<table>/<row>/seed-<s>/``); it is *finished* when its ``metrics.json``
exists (``reidgen.run`` writes that file last, atomically). A folder without it is an
interrupted run: it is moved aside to ``<row>.interrupted-<n>`` (never deleted) and the row is run
again. A run that fails (a missing dataset, a validation mismatch, missing pretrained weights) is
recorded in ``<row>.skipped.txt`` with the reason and retried the next time; so is a run whose
``checkpoint_from`` row has not finished its run of the same seed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from reidgen.progress import ENV_VARIABLE, progress, write_line
from reidgen.report.experiments import Row, Run, Table


@dataclass(frozen=True)
class Outcome:
    """``metrics`` (the run's metrics.json) when finished, else ``reason`` for the skip."""

    run_dir: Path
    seed: int | None = None
    metrics: Path | None = None
    reason: str | None = None


def run_dir(out: Path, table: Table, row: Row, run: Run) -> Path:
    directory = out / "runs" / table.name / row.slug
    return directory if run.seed is None else directory / f"seed-{run.seed}"


def finished(out: Path, table: Table, row: Row, run: Run) -> Outcome | None:
    """The run's outcome if it has finished (its metrics.json exists), else None."""
    directory = run_dir(out, table, row, run)
    metrics = directory / "metrics.json"
    return Outcome(directory, run.seed, metrics=metrics) if metrics.is_file() else None


class NotReady(RuntimeError):
    """A run's ``checkpoint_from`` row has no finished run of the same seed."""


def command_overrides(out: Path, table: Table, row: Row, run: Run) -> tuple[str, ...]:
    """The run's overrides, with ``key=<checkpoint>`` for each of the row's ``checkpoint_from``.

    :raises NotReady: naming the row whose run of this seed has not finished.
    """
    overrides = list(run.overrides)
    for key, name in row.checkpoint_from:
        source = next(r for r in table.rows if r.name == name)
        source_run = next(r for r in source.runs() if r.seed == run.seed)
        done = finished(out, table, source, source_run)
        checkpoint = None if done is None else done.run_dir / "checkpoints" / "last.ckpt"
        if checkpoint is None or not checkpoint.is_file():
            seed = "" if run.seed is None else f" (seed {run.seed})"
            raise NotReady(
                f"needs the checkpoint of row {name!r}{seed} for {key}, and that run has not "
                "finished"
            )
        overrides.append(f"{key}={checkpoint}")
    return tuple(overrides)


def _reason(stderr: str, limit: int = 300) -> str:
    """The error message of a failed run: from its last ``SomethingError:`` line on (messages may
    span lines), shortened to ``limit`` characters."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Set the environment variable")]
    if not lines:
        return "the run failed without a message"
    starts = [i for i, line in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    message = " ".join(lines[starts[-1] :] if starts else lines[-1:])
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _move_aside(directory: Path) -> Path:
    number = 1
    while (target := directory.with_name(f"{directory.name}.interrupted-{number}")).exists():
        number += 1
    directory.rename(target)
    return target


def run_once(out: Path, table: Table, row: Row, run: Run) -> Outcome:
    """Runs one run of ``row`` unless it is finished; see the module docstring."""
    done = finished(out, table, row, run)
    if done is not None:
        return done
    label = row.name if run.seed is None else f"{row.name} (seed {run.seed})"
    directory = run_dir(out, table, row, run)
    metrics = directory / "metrics.json"
    skipped = directory.with_name(f"{directory.name}.skipped.txt")
    try:
        overrides = command_overrides(out, table, row, run)
    except NotReady as error:
        directory.parent.mkdir(parents=True, exist_ok=True)
        skipped.write_text(f"{error}\n")
        write_line(f"[reproduce-table] {table.name} / {label}: skipped: {error}")
        return Outcome(directory, run.seed, reason=str(error))
    if directory.exists():
        moved = _move_aside(directory)
        write_line(f"[reproduce-table] {table.name} / {label}: interrupted run moved to {moved}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "reidgen.run",
        *overrides,
        f"hydra.run.dir={directory}",
    ]
    write_line(f"[reproduce-table] {table.name} / {label}: {' '.join(command[3:])}")
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        # The run's stderr is read only for its error message: no bars in it.
        env={**os.environ, "PYTHONUNBUFFERED": "1", ENV_VARIABLE: "0"},
    )
    if result.returncode == 0 and metrics.is_file():
        skipped.unlink(missing_ok=True)
        return Outcome(directory, run.seed, metrics=metrics)
    reason = _reason(result.stderr)
    skipped.write_text(reason + "\n")
    write_line(f"[reproduce-table] {table.name} / {label}: skipped: {reason}")
    return Outcome(directory, run.seed, reason=reason)


def runs_progress(out: Path, tables: Sequence[Table], description: str, enabled: bool) -> tqdm:
    """A progress bar over every run of ``tables``, those already finished counted as done from
    the start, so its ETA is measured on the runs this invocation makes (advance it with
    :func:`run_counted`)."""
    runs = [(table, row, run) for table in tables for row in table.rows for run in row.runs()]
    done = sum(finished(out, *item) is not None for item in runs)
    return progress(
        description=description, total=len(runs), initial=done, unit="run", enabled=enabled
    )


def run_counted(out: Path, table: Table, row: Row, run: Run, bar: tqdm) -> Outcome:
    """:func:`run_once`, and one step of ``bar`` unless the run had finished before."""
    pending = finished(out, table, row, run) is None
    outcome = run_once(out, table, row, run)
    if pending:
        bar.update()
    return outcome
