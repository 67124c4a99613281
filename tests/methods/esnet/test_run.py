"""ES-Net end to end on the tiny SynthPerson preset: both branches learn, the erased fraction and
the learned exponent are logged, and a checkpoint is evaluated with the global feature alone."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from PIL import Image

from reidgen.viz.saliency import CAPTION_HEIGHT, GAP
from tests.test_run import metrics_of, only_run, run_module

ESNET = [
    "method=esnet",
    "experiment=quick",
    "trainer.max_epochs=3",
    # Faster than the SynthPerson schedule: the tiny preset's 6 batches an epoch must show learning.
    "method.optimizer.lr=1e-3",
    "method.scheduler=null",
    "hardware=cpu",
    "trainer.precision=32-true",
]


def epoch_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return [row for row in csv.DictReader(handle) if row.get("train/erase_id_loss_epoch")]


@pytest.fixture(scope="module")
def esnet_run(tmp_path_factory: pytest.TempPathFactory, synth_data_dir: Path) -> Path:
    log_dir = tmp_path_factory.mktemp("esnet")
    run_module("reidgen.run", ESNET, synth_data_dir, log_dir)
    return only_run(log_dir)


def test_both_branches_learn_and_erasing_is_logged(esnet_run: Path) -> None:
    rows = epoch_rows(esnet_run)
    assert len(rows) == 3
    for branch in ("global", "erase"):
        first, last = (float(rows[i][f"train/{branch}_id_loss_epoch"]) for i in (0, -1))
        assert last < 0.9 * first, (branch, first, last)
    # 128x64 images give 8x4 maps: round(0.3 * 8) = 2 full-width rows of 8, every sample.
    for row in rows:
        assert float(row["train/erased_fraction_epoch"]) == pytest.approx(0.25)
    assert float(rows[-1]["train/pooling_p_epoch"]) != pytest.approx(3.0, abs=1e-3)
    record = metrics_of(esnet_run)
    assert record["method"] == "reidgen.methods.esnet.method.ESNet"
    assert math.isfinite(record["metrics"]["synth_studio_tiny"]["mAP"])


def test_checkpoint_evaluates_with_the_global_feature_alone(
    esnet_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    checkpoint = esnet_run / "checkpoints" / "last.ckpt"
    args = [
        f"ckpt={checkpoint}",
        "data=synth_tiny",
        "hardware=cpu",
        "trainer.precision=32-true",
        "+method_overrides.inference_feature=global",
    ]
    run_module("reidgen.evaluate", args, synth_data_dir, tmp_path)
    alone = metrics_of(only_run(tmp_path, "evaluations"))["metrics"]["synth_studio_tiny"]
    both = metrics_of(esnet_run)["metrics"]["synth_studio_tiny"]
    assert alone["num_query"] == both["num_query"]
    assert alone["mAP"] != pytest.approx(both["mAP"])


def test_saliency_pictures_from_the_checkpoint(
    esnet_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    checkpoint = esnet_run / "checkpoints" / "last.ckpt"
    args = [
        f"ckpt={checkpoint}",
        "data=synth_tiny",
        "queries=[0,2]",
        "top=2",
        f"out_dir={tmp_path}",
    ]
    run_module("reidgen.viz.saliency", args, synth_data_dir, tmp_path / "logs")
    for query in (0, 2):
        with Image.open(tmp_path / f"query_{query}.png") as picture:
            # query + 2 results, each a row of 3 panels of 128x256 (the minimum height 256).
            assert picture.size == (3 * 128 + 2 * GAP, 3 * (256 + CAPTION_HEIGHT))
    again = run_module("reidgen.viz.saliency", args, synth_data_dir, tmp_path / "logs", check=False)
    assert again.returncode != 0 and "query_0.png" in again.stderr
