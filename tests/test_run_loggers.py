"""The end of a real run (``python -m reidgen.run`` on the tiny preset, in a subprocess) with CSV,
TensorBoard and offline W&B loggers at once: the pictures in the run folder, and the results table
and the pictures in every logger's own files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from reidgen.viz.ranked_list import CAPTION_HEIGHT
from tests.test_run import QUICK, metrics_of, only_run, run_module

TARGET = "synth_studio_tiny"
SHEET = f"pictures/ranked_{TARGET}"
QUERIES = 3


@pytest.mark.slow
def test_every_logger_gets_the_results_and_the_pictures(
    tmp_path: Path, synth_data_dir: Path
) -> None:
    run_module(
        "reidgen.run",
        [
            *QUICK,
            "logger=[wandb,tensorboard]",
            "trainer.max_epochs=1",
            f"pictures.queries={QUERIES}",
            "pictures.top=4",
            "pictures.height=128",
        ],
        synth_data_dir,
        tmp_path,
    )
    run_dir = only_run(tmp_path)
    metrics = metrics_of(run_dir)["metrics"]

    with Image.open(run_dir / f"{SHEET}.png") as sheet:
        sheet.load()
        # One row per query: each at least the 128-pixel image and its caption.
        assert sheet.format == "PNG" and sheet.height >= QUERIES * (128 + CAPTION_HEIGHT)

    with open(run_dir / "csv" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["target"] for row in rows] == [TARGET, "mean"] and len(metrics) == 2
    for row in rows:
        assert float(row["mAP"]) == metrics[row["target"]]["mAP"]
    with open(run_dir / "csv" / "pictures.csv", newline="") as handle:
        (listed,) = csv.DictReader(handle)
    assert listed["name"] == SHEET
    assert (run_dir / "csv" / listed["path"]).resolve() == (run_dir / f"{SHEET}.png").resolve()

    events = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0}
    )
    events.Reload()
    (text,) = events.Tensors("results/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert f"| {TARGET} | {metrics[TARGET]['mAP']:.1f} |" in markdown
    (image,) = events.Images(SHEET)
    with Image.open(io.BytesIO(image.encoded_image_string)) as logged:
        assert logged.size == sheet.size

    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    media = offline / "files" / "media"
    (table_file,) = (media / "table").glob("results_*.table.json")
    table = json.loads(table_file.read_text())
    column = table["columns"].index("mAP")
    assert {row[0]: row[column] for row in table["data"]} == {
        name: values["mAP"] for name, values in metrics.items()
    }
    (picture,) = (media / "images" / "pictures").glob(f"ranked_{TARGET}_*.png")
    with Image.open(picture) as logged:
        assert logged.size == sheet.size
