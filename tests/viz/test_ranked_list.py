"""The ranked-list picture of any method: marks against the protocol's rule, frames in the marks'
colours, the writer on tiny SynthPerson data, and the CLI with a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from reidgen.data.dataset import EvalDataset, read_image
from reidgen.eval.protocols import MarketProtocol
from reidgen.eval.target import EvalTarget
from reidgen.run_support import build_method
from reidgen.viz.drawing import panel_size
from reidgen.viz.ranked import pictures_from_config, rank_queries, write_ranked_pictures
from reidgen.viz.ranked_list import (
    BORDER,
    CAPTION_HEIGHT,
    GAP,
    MARK_COLOURS,
    QUERY_COLOUR,
    draw_ranked_list,
    result_marks,
)
from tests.test_extract import BASELINE, saved
from tests.viz.test_alignment import street_set  # noqa: F401 (fixture)

WHITE = (255, 255, 255)


def frame_pixel(picture: Image.Image, position: int, cell_width: int) -> tuple[int, int, int]:
    """The top-left frame pixel of cell ``position`` (0: the query)."""
    left = position * cell_width + (GAP if position else 0)
    return picture.getpixel((left + 1, 1))


def test_marks_follow_the_protocol_rule() -> None:
    # Query 0: pid 5 in camera 0; gallery: same pid other camera, same pid same camera, another
    # pid, junk.
    target = EvalTarget(
        name="t",
        pids=torch.tensor([5, 5, 5, 7, -1]),
        camids=torch.tensor([0, 1, 0, 0, 1]),
        num_query=1,
        protocol=MarketProtocol(),
        timestamps=torch.full((5,), float("nan"), dtype=torch.float64),
    )
    assert result_marks(target, 0, [1, 2, 3, 4]) == ["correct", "junk", "wrong", "junk"]


def test_draw_frames_each_result_in_its_marks_colour() -> None:
    query = torch.zeros(3, 64, 32)
    results = [torch.ones(3, 64, 32) * v for v in (0.2, 0.4, 0.6, 0.8)]
    marks = ["correct", "wrong", "junk", None]
    picture = draw_ranked_list(query, results, marks, ["#1", "#2", "#3", "#4"], height=128)
    width, height = panel_size(query, 128)
    cell_width = width + 2 * BORDER
    assert picture.size == (5 * cell_width + GAP, height + 2 * BORDER + CAPTION_HEIGHT)
    expected = [QUERY_COLOUR, *(MARK_COLOURS[m] for m in marks[:3]), WHITE]
    assert [frame_pixel(picture, k, cell_width) for k in range(5)] == expected
    # The image inside the frame: the third result's grey (0.6 -> 153).
    left = 3 * cell_width + GAP
    assert picture.getpixel((left + BORDER + 5, BORDER + 5)) == (153, 153, 153)
    with pytest.raises(ValueError, match="one mark and one caption per result"):
        draw_ranked_list(query, results, marks[:2], ["a"] * 4)
    with pytest.raises(ValueError, match=r"unknown mark\(s\) \['right'\]"):
        draw_ranked_list(query, results[:1], ["right"], ["a"])


def test_writer_marks_the_methods_ranking(
    street_set: EvalDataset,  # noqa: F811 (fixture)
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    method = build_method(BASELINE, num_classes=4)
    pictures = write_ranked_pictures(method, street_set, [2, 0], tmp_path, top=4, height=64)
    assert [p.path.name for p in pictures] == ["query_2.png", "query_0.png"]
    assert [p.ranking for p in pictures] == rank_queries(method, street_set, [2, 0], 4).rankings
    disk_width, disk_height = read_image(street_set.samples[0].path).size
    cell_width = max(disk_width, round(64 * disk_width / disk_height)) + 2 * BORDER
    samples = street_set.samples
    for picture in pictures:
        with Image.open(picture.path) as written:
            frames = [frame_pixel(written, k + 1, cell_width) for k in range(4)]
        query_pid = samples[picture.ranking.query].pid
        expected = [
            MARK_COLOURS["correct" if samples[i].pid == query_pid else "wrong"]
            for i in picture.ranking.results
        ]
        assert frames == expected
    before = pictures[0].path.read_bytes()
    with pytest.raises(FileExistsError, match="query_2.png"):
        write_ranked_pictures(method, street_set, [2], tmp_path)
    assert pictures[0].path.read_bytes() == before


def test_cli_pictures_a_checkpoint(
    synth_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    ckpt = saved(build_method(BASELINE, num_classes=4), tmp_path / "model.ckpt")
    out = tmp_path / "pictures"
    with initialize_config_module("reidgen.conf", version_base="1.3"):
        config = compose(
            "viz_ranked",
            overrides=[
                "data=synth_tiny",
                "data.targets=[synth_street_tiny]",
                f"paths.data_dir={synth_data_dir}",
                "data.test_transform.height=64",
                "data.test_transform.width=32",
                "device=cpu",
                f"ckpt={ckpt}",
                "queries=[1]",
                "top=3",
                f"out_dir={out}",
            ],
        )
    (picture,) = pictures_from_config(config)
    assert [p.name for p in out.iterdir()] == ["query_1.png"]
    assert f"query 1: {out / 'query_1.png'}" in capsys.readouterr().out
    assert len(picture.ranking.results) == 3
