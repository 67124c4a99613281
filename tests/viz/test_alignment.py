"""The AlignedReID alignment picture: the shortest path drawn between the two images' stripes."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from reidgen.data.dataset import EvalDataset
from reidgen.data.datasets.synthperson import index_synthperson
from reidgen.data.transforms import build_transforms
from reidgen.methods.alignedreid.local_distance import alignment_path
from reidgen.methods.alignedreid.method import AlignedReID
from reidgen.models import ResNetBackbone
from reidgen.viz.alignment import CAPTION_HEIGHT, GAP, draw_alignment, write_alignment_pictures


def shifted_matrix(stripes: int) -> torch.Tensor:
    """Stripe i of A matches stripe i + 1 of B (distance 0); every other pair is far (0.9)."""
    distances = torch.full((stripes, stripes), 0.9)
    for i in range(stripes - 1):
        distances[i, i + 1] = 0.0
    distances[stripes - 1, stripes - 1] = 0.0
    distances[0, 0] = 0.0
    return distances


def test_draw_alignment_joins_the_stripes_on_the_path() -> None:
    stripes = 4
    distances = shifted_matrix(stripes)
    path = alignment_path(distances)
    image = torch.zeros(3, 64, 32)
    picture = draw_alignment(image, image, distances, height=128)
    assert picture.size == (2 * 64 + GAP, 128 + CAPTION_HEIGHT)
    # A matched pair (distance 0) is drawn red; the line's middle lies in the gap.
    for i, j in path:
        centre_i, centre_j = (i + 0.5) * 128 / stripes, (j + 0.5) * 128 / stripes
        x, y = 64 + GAP // 2, round((centre_i + centre_j) / 2)
        pixel = max((picture.getpixel((x, y + dy)) for dy in (-1, 0, 1)), key=lambda p: p[0])
        if distances[i, j] == 0:
            assert pixel[0] > 200 and pixel[2] < 60, (i, j, pixel)
    with pytest.raises(ValueError, match=r"\[h, h\]"):
        draw_alignment(image, image, torch.zeros(3, 4))


def test_writer_draws_top_results_and_never_replaces_pictures(
    tiny_street: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    method = AlignedReID(
        num_classes=4,
        backbone=partial(ResNetBackbone, depth=18, last_stride=1),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        local_channels=8,
    )
    splits = index_synthperson(tiny_street)
    dataset = EvalDataset(
        splits.query[:3], splits.gallery[:12], build_transforms(64, 32, train=False)
    )
    paths = write_alignment_pictures(method, dataset, [0, 2], tmp_path, top=2, height=64)
    assert [p.name for p in paths] == ["query_0.png", "query_2.png"]
    from PIL import Image

    with Image.open(paths[0]) as picture:
        assert picture.height == 2 * (64 + CAPTION_HEIGHT)
    before = paths[0].read_bytes()
    with pytest.raises(FileExistsError, match="query_0.png"):
        write_alignment_pictures(method, dataset, [0], tmp_path)
    assert paths[0].read_bytes() == before
    with pytest.raises(IndexError, match="3 queries"):
        write_alignment_pictures(method, dataset, [3], tmp_path / "other")
    with pytest.raises(TypeError, match="not AlignedReID"):
        write_alignment_pictures(torch.nn.Linear(1, 1), dataset, [0], tmp_path / "other")
