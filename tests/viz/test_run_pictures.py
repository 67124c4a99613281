"""The end-of-run pictures: which method pictures a method gets, the queries, the ranked sheet and
the method's picture on tiny SynthPerson data, the training pictures, and that a second run into
the same folder writes a new folder rather than replacing or crashing."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from reidgen.data.dataset import EvalDataset
from reidgen.eval.protocols import VehicleIDProtocol
from reidgen.run_support import build_method
from reidgen.viz.drawing import stack_rows
from reidgen.viz.ranked import draw_ranking, rank_queries
from reidgen.viz.run_pictures import RunPictures, method_pictures, spread_queries
from tests.methods.esnet.test_method import make_method as esnet
from tests.viz.test_alignment import (
    aligned,
    street_set,  # noqa: F401 (fixture)
)
from tests.viz.test_qaconv_matches import NOT_QACONV, qaconv
from tests.viz.test_ranked import toy_dataset

HEIGHT = 64


def test_method_pictures_follow_what_the_method_is() -> None:
    assert [entry.kind for entry in method_pictures(qaconv())] == ["matches"]
    assert [entry.kind for entry in method_pictures(aligned())] == ["alignment"]
    assert [entry.kind for entry in method_pictures(esnet())] == ["saliency"]
    # Without its erasing branch ES-Net has no saliency to draw; the baseline has no own picture.
    assert method_pictures(esnet(erase_branch=False, inference_feature="global")) == []
    assert method_pictures(build_method(NOT_QACONV, num_classes=4)) == []


def test_spread_queries_are_even_and_deterministic() -> None:
    assert spread_queries(29, 4) == [0, 7, 14, 21]
    assert spread_queries(3, 4) == [0, 1, 2]
    assert spread_queries(5, 0) == [] and spread_queries(0, 4) == []
    with pytest.raises(ValueError, match="non-negative"):
        spread_queries(5, -1)


def test_settings_fail_when_built() -> None:
    with pytest.raises(ValueError, match="top >= 1.*top=0"):
        RunPictures(top=0)
    with pytest.raises(ValueError, match="queries=-1"):
        RunPictures(queries=-1)


def touch_png(path: Path, mtime: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)
    os.utime(path, ns=(mtime, mtime))
    return path


def test_run_pictures_and_a_second_run_into_the_same_folder(
    street_set: EvalDataset,  # noqa: F811 (fixture)
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    method = aligned()
    # What methods draw while training: the latest of each is handed over as it is.
    touch_png(tmp_path / "views" / "epoch_000.png", 1_000)
    latest_view = touch_png(tmp_path / "views" / "epoch_001.png", 2_000)
    labels = touch_png(tmp_path / "pseudo_labels.png", 1_000)
    targets = {
        "street": street_set,
        "pooled": toy_dataset(3, 4, VehicleIDProtocol()),
        "no_gallery": EvalDataset(street_set.samples[:2], [], street_set.transform),
    }
    settings = RunPictures(queries=2, top=3, height=HEIGHT)
    with caplog.at_level(logging.INFO, logger="reidgen.viz.run_pictures"):
        pictures = settings.write(method, targets, tmp_path)
    sheet = tmp_path / "pictures" / "ranked_street.png"
    assert pictures == {
        "pictures/ranked_street": sheet,
        "pictures/alignment_street/query_0": tmp_path / "pictures/alignment_street/query_0.png",
        "pseudo_labels": labels,
        "views/epoch_001": latest_view,
    }
    # One row per query (queries 0 and 1 of three): the query and its top 3 by the method.
    ranked = rank_queries(method, street_set, [0, 1], top=3)
    rows = [draw_ranking(street_set, r, HEIGHT, f"query {r.query}") for r in ranked.rankings]
    with Image.open(sheet) as written:
        assert written.tobytes() == stack_rows(rows, (255, 255, 255)).tobytes()
    # The pooled target is skipped with a reason; the one without a gallery fails alone, logged.
    assert "no pictures of pooled: its protocol has no fixed query set" in caplog.text
    assert "the ranked-list sheet of no_gallery failed" in caplog.text
    assert "no gallery to rank" in caplog.text

    before = sheet.read_bytes()
    again = settings.write(method, {"street": street_set}, tmp_path)
    assert again["pictures_2/ranked_street"] == tmp_path / "pictures_2" / "ranked_street.png"
    assert sheet.read_bytes() == before

    # queries=0: nothing drawn, the training pictures still handed over.
    assert RunPictures(queries=0).write(method, targets, tmp_path) == {
        "pseudo_labels": labels,
        "views/epoch_001": latest_view,
    }
    assert not (tmp_path / "pictures_3").exists()
