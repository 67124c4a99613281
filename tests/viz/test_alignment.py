"""The AlignedReID alignment picture: the shortest path drawn between the two images' stripes, the
writer on tiny SynthPerson data, and the CLI's config path with a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from PIL import Image

from reidgen.data.dataset import EvalDataset, read_image
from reidgen.data.datasets.synthperson import index_synthperson
from reidgen.data.transforms import build_transforms
from reidgen.methods.alignedreid.local_distance import alignment_path
from reidgen.methods.alignedreid.method import AlignedReID
from reidgen.run_support import build_method, load_method
from reidgen.viz.alignment import (
    CAPTION_HEIGHT,
    GAP,
    draw_alignment,
    pictures_from_config,
    write_alignment_pictures,
)
from reidgen.viz.ranked import rank_gallery, rank_queries

INPUT_H, INPUT_W = 64, 32
CONFIG = {
    "_target_": "reidgen.methods.alignedreid.method.AlignedReID",
    "backbone": {
        "_target_": "reidgen.models.ResNetBackbone",
        "_partial_": True,
        "depth": 18,
        "last_stride": 1,
        "pretrained": None,
    },
    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
    "local_channels": 8,
    "test_distance": "global",
}


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


def aligned(**changes: Any) -> AlignedReID:
    torch.manual_seed(0)
    return build_method({**CONFIG, **changes}, num_classes=4)


@pytest.fixture(scope="module")
def street_set(tiny_street: Path) -> EvalDataset:
    splits = index_synthperson(tiny_street)
    return EvalDataset(
        splits.query[:3], splits.gallery[:12], build_transforms(INPUT_H, INPUT_W, train=False)
    )


def test_writer_draws_the_top_results_by_the_test_distance(
    street_set: EvalDataset, tmp_path: Path
) -> None:
    method = aligned()
    pictures = write_alignment_pictures(method, street_set, [2, 0], tmp_path, top=2, height=64)
    assert [p.path.name for p in pictures] == ["query_2.png", "query_0.png"]
    # The ranking is the evaluation's: the method's distance over every image at once.
    images = torch.stack([street_set[i]["image"] for i in range(len(street_set))])
    method.eval()
    with torch.no_grad():
        features = method.extract(images)
    num_query = street_set.num_query
    distance = method.distance(
        features.rows(slice(0, num_query)), features.rows(slice(num_query, None))
    )
    expected = rank_gallery(distance(0, num_query)[[2, 0]], street_set.target, [2, 0], top=2)
    assert [p.ranking for p in pictures] == expected
    # Images are shown as read from disk: never shrunk below their own height.
    disk_width, disk_height = read_image(street_set.samples[0].path).size
    with Image.open(pictures[0].path) as written:
        assert written.size == (2 * disk_width + GAP, 2 * (disk_height + CAPTION_HEIGHT))


def test_writer_errors_and_never_replaces_pictures(street_set: EvalDataset, tmp_path: Path) -> None:
    method = aligned()
    (path,) = [p.path for p in write_alignment_pictures(method, street_set, [0], tmp_path, top=1)]
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="query_0.png"):
        write_alignment_pictures(method, street_set, [1, 0], tmp_path)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]
    with pytest.raises(IndexError, match="3 queries"):
        write_alignment_pictures(method, street_set, [3], tmp_path / "other")
    with pytest.raises(TypeError, match="not AlignedReID"):
        write_alignment_pictures(torch.nn.Linear(1, 1), street_set, [0], tmp_path / "other")
    assert not (tmp_path / "other").exists()


# --------------------------------------------------------------------------- CLI config
def cli_config(synth_data_dir: Path, *overrides: str) -> DictConfig:
    """The CLI's config as ``python -m reidgen.viz.alignment`` composes it, on the tiny street
    target at the test input size."""
    with initialize_config_module("reidgen.conf", version_base="1.3"):
        return compose(
            "viz_alignment",
            overrides=[
                "data=synth_tiny",
                "data.targets=[synth_street_tiny]",
                f"paths.data_dir={synth_data_dir}",
                f"data.test_transform.height={INPUT_H}",
                f"data.test_transform.width={INPUT_W}",
                "device=cpu",
                *overrides,
            ],
        )


def test_cli_config_ranks_by_the_checkpoints_overridden_distance(
    tiny_street: Path, synth_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    method = aligned()
    ckpt = tmp_path / "aligned.ckpt"
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams)}, ckpt)
    out = tmp_path / "pictures"
    overrides = [
        f"ckpt={ckpt}",
        "+method_overrides.test_distance=global_local",
        "queries=[1]",
        "top=2",
        f"out_dir={out}",
    ]
    pictures = pictures_from_config(cli_config(synth_data_dir, *overrides))
    assert [p.name for p in out.iterdir()] == ["query_1.png"]
    assert f"query 1: {out / 'query_1.png'}" in capsys.readouterr().out
    # The ranking of the method as overridden: global + local distance.
    local = load_method(ckpt, overrides={"test_distance": "global_local"})
    splits = index_synthperson(tiny_street)
    dataset = EvalDataset(
        splits.query, splits.gallery, build_transforms(INPUT_H, INPUT_W, train=False)
    )
    assert [p.ranking for p in pictures] == rank_queries(local, dataset, [1], top=2).rankings
    other = build_method(
        {
            "_target_": "reidgen.methods.baseline.Baseline",
            "backbone": {"_target_": "reidgen.models.ResNetBackbone", "depth": 18},
            "pooling": {"_target_": "reidgen.models.GlobalAvgPool"},
            "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True},
        },
        num_classes=4,
    )
    other_ckpt = tmp_path / "other.ckpt"
    torch.save(
        {"state_dict": other.state_dict(), "hyper_parameters": dict(other.hparams)}, other_ckpt
    )
    with pytest.raises(TypeError, match="this checkpoint's method is not AlignedReID"):
        pictures_from_config(cli_config(synth_data_dir, f"ckpt={other_ckpt}", f"out_dir={out}"))
