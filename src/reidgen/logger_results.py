"""The end of a run in every logger: the results table and the pictures, each logger given them in
the form its type reads.

* ``CSVLogger``: ``<log_dir>/results.csv``, one row per entry of the results (each target, then
  the mean) with every metric at full precision, and ``<log_dir>/pictures.csv``: each picture's
  name and its path relative to that folder.
* ``TensorBoardLogger``: the text ``results`` (the Markdown table of
  :func:`reidgen.results.format_table`) and an image per picture, tagged with its name.
* ``WandbLogger`` (offline too): the table ``results`` and an image per picture, keyed by its name.

A logger of another type gets neither, and a log line names its type. ``reidgen.run`` calls
:func:`log_results` after the test, from its results, before the loggers are closed; evaluation
never calls into this module.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from reidgen.atomic import write_atomically
from reidgen.results import format_table

log = logging.getLogger(__name__)

Results = Mapping[str, Mapping[str, Any]]
"""``{target: {metric: value}}``, as ``ReIDMethod.eval_results["test"]`` holds them."""


def results_table(results: Results) -> tuple[list[str], list[list[Any]]]:
    """``(columns, rows)``: ``"target"``, then every metric in the order first met; one row per
    entry of ``results``, None where an entry lacks a metric (the mean has no counts)."""
    metrics = dict.fromkeys(key for values in results.values() for key in values)
    rows = [[name, *(values.get(key) for key in metrics)] for name, values in results.items()]
    return ["target", *metrics], rows


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows([["" if value is None else value for value in row] for row in rows])

    # Replaced, not refused: like metrics.json, it holds the latest finished run of the folder.
    write_atomically(path, write)


def _to_csv(logger: CSVLogger, results: Results, pictures: Mapping[str, Path], step: int) -> None:
    folder = Path(logger.log_dir)
    _write_csv(folder / "results.csv", *results_table(results))
    _write_csv(
        folder / "pictures.csv",
        ["name", "path"],
        [[name, os.path.relpath(path, folder)] for name, path in pictures.items()],
    )


def _to_tensorboard(
    logger: TensorBoardLogger, results: Results, pictures: Mapping[str, Path], step: int
) -> None:
    writer = logger.experiment
    writer.add_text("results", format_table(results), step)
    for name, path in pictures.items():
        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        writer.add_image(name, pixels, step, dataformats="HWC")
    # The trainer closed the writer when the test ended and adding reopened it: close it again,
    # which writes the events to disk.
    writer.close()


def _to_wandb(
    logger: WandbLogger, results: Results, pictures: Mapping[str, Path], step: int
) -> None:
    columns, rows = results_table(results)
    logger.log_table(key="results", columns=columns, data=rows, step=step)
    for name, path in pictures.items():
        logger.log_image(key=name, images=[str(path)], step=step)


WRITERS: tuple[tuple[type[Logger], Callable[..., None]], ...] = (
    (CSVLogger, _to_csv),
    (TensorBoardLogger, _to_tensorboard),
    (WandbLogger, _to_wandb),
)
"""Each logger type this module writes to, with its writer."""


def log_results(
    loggers: Sequence[Logger], results: Results, pictures: Mapping[str, Path], step: int = 0
) -> None:
    """Hands ``results`` and ``pictures`` (name -> PNG file) to each of ``loggers`` by its type
    (see the module), logged at ``step`` where the logger keeps steps."""
    for logger in loggers:
        writer = next((write for kind, write in WRITERS if isinstance(logger, kind)), None)
        if writer is None:
            log.warning(
                "the results and pictures are not handed to the %s logger: reidgen.logger_results "
                "has no writer for its type",
                type(logger).__name__,
            )
            continue
        writer(logger, results, pictures, step)
