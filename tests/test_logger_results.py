"""The results table and the pictures handed to real CSV and TensorBoard loggers (W&B: the run's
end-to-end test), and a logger of another type named, not silently skipped."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from reidgen.logger_results import log_results, results_table
from reidgen.methods.base import METRIC_KEYS

METRICS = {key: 10.0 + k + 0.123456789 for k, key in enumerate(METRIC_KEYS)}
RESULTS = {"street": {**METRICS, "num_query": 3}, "mean": METRICS}


class PlainLogger(Logger):
    """A logger type reidgen.logger_results does not know."""

    name = "plain"
    version = "0"

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any) -> None:
        pass


def pictures_in(folder: Path) -> dict[str, Path]:
    pictures = {"pictures/ranked_street": (40, 30), "views/epoch_001": (20, 10)}
    paths = {}
    for name, size in pictures.items():
        paths[name] = folder / f"{name}.png"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (200, 30, 30)).save(paths[name])
    return paths


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_results_table_has_every_metric_and_none_where_missing() -> None:
    columns, rows = results_table(RESULTS)
    assert columns == ["target", *METRIC_KEYS, "num_query"]
    assert [row[0] for row in rows] == ["street", "mean"]
    assert rows[0][-1] == 3 and rows[1][-1] is None


def test_csv_and_tensorboard_get_the_table_and_pictures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pictures = pictures_in(tmp_path)
    csv_logger = CSVLogger(tmp_path, name="csv", version="")
    board = TensorBoardLogger(tmp_path, name="tensorboard", version="")
    # As after a run's test: the trainer has logged and closed the writer.
    board.log_metrics({"train/loss": 1.0}, step=0)
    board.finalize("success")

    with caplog.at_level(logging.WARNING, logger="reidgen.logger_results"):
        log_results([csv_logger, board, PlainLogger()], RESULTS, pictures, step=7)

    rows = read_csv(tmp_path / "csv" / "results.csv")
    assert [row["target"] for row in rows] == ["street", "mean"]
    # Full precision: the values read back are the results.
    assert float(rows[0]["mAP"]) == RESULTS["street"]["mAP"]
    assert rows[0]["num_query"] == "3" and rows[1]["num_query"] == ""
    listed = read_csv(tmp_path / "csv" / "pictures.csv")
    assert {row["name"]: (tmp_path / "csv" / row["path"]).resolve() for row in listed} == {
        name: path.resolve() for name, path in pictures.items()
    }

    events = EventAccumulator(
        str(tmp_path / "tensorboard"), size_guidance={"images": 0, "tensors": 0}
    )
    events.Reload()
    (text,) = events.Tensors("results/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert text.step == 7 and "| target | mAP |" in markdown and "| street | 10.1 |" in markdown
    for name, path in pictures.items():
        (image,) = events.Images(name)
        with Image.open(io.BytesIO(image.encoded_image_string)) as logged, Image.open(path) as png:
            assert logged.size == png.size and logged.tobytes() == png.convert("RGB").tobytes()
    assert events.Scalars("train/loss")[0].value == 1.0

    assert "not handed to the PlainLogger logger" in caplog.text
