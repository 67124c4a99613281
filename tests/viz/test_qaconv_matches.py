"""QAConv match pictures: location matches against their definition, the drawings, the writer and
the CLI's config path, with a small QAConv-GS model on tiny SynthPerson data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor

from reidgen.data.dataset import EvalDataset
from reidgen.data.datasets.synthperson import index_synthperson
from reidgen.data.transforms import build_transforms
from reidgen.methods.base import ReIDMethod
from reidgen.methods.qaconv.matcher import QAConvMatcher
from reidgen.methods.qaconv.matches import location_matches
from reidgen.methods.qaconv.method import QAConvMethod
from reidgen.run_support import build_method
from reidgen.viz.qaconv_matches import (
    BORDER,
    CAPTION_HEIGHT,
    FALSE_MATCH,
    GAP,
    HEADER_HEIGHT,
    TRUE_MATCH,
    draw_matches,
    draw_ranked_matches,
    pictures_from_config,
    write_match_pictures,
)
from tests.methods.qaconv.test_matcher import configured as configured_matcher
from tests.viz.test_ranked import brute_force

C, H, W = 5, 3, 2
N = H * W
# The stand-in model's input: 64 x 32 images give a 4 x 2 grid at layer3 (stride 16).
INPUT_H, INPUT_W = 64, 32
GRID = (4, 2)
RED = (255, 0, 0)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: the stand-in model is small, and two threads per process slow down
    tenfold when the cores are shared (``make test`` runs two pytest workers on two cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def unit_maps(*shape: int, seed: int) -> Tensor:
    """Random float64 maps ``[*shape]`` with unit norm over dim -3 (channels) at each location."""
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=gen, dtype=torch.float64), dim=-3)


def configured(version: str) -> QAConvMatcher:
    """A float64 eval-mode matcher with non-trivial running stats, affine and FC parameters."""
    return configured_matcher(version, N)


QACONV = {
    "_target_": "reidgen.methods.qaconv.method.QAConvGS",
    "backbone": {
        "_target_": "reidgen.models.ResNetBackbone",
        "depth": 18,
        "pretrained": None,
        "out_stage": 3,
    },
    "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01},
    "input_size": [INPUT_H, INPUT_W],
    "neck_channels": 16,
    "loss": {"_target_": "reidgen.methods.qaconv.losses.ScoreTripletLoss"},
}
NOT_QACONV = {
    "_target_": "reidgen.methods.baseline.Baseline",
    "backbone": {"_target_": "reidgen.models.ResNetBackbone", "depth": 18},
    "pooling": {"_target_": "reidgen.models.GlobalAvgPool"},
    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True},
}


def qaconv() -> QAConvMethod:
    """A small QAConv-GS (16 channels, a 4 x 2 grid) in eval mode."""
    torch.manual_seed(0)
    return build_method(QACONV, num_classes=0).eval()


@pytest.fixture(scope="module")
def street_set(tiny_street: Path) -> EvalDataset:
    """Part of the tiny street target (few images keep the CPU tests fast)."""
    splits = index_synthperson(tiny_street)
    return EvalDataset(
        splits.query[:8], splits.gallery[:30], build_transforms(INPUT_H, INPUT_W, train=False)
    )


# --------------------------------------------------------------------------- drawing
def shifted_pair() -> tuple[Tensor, Tensor, QAConvMatcher]:
    """A query map and the gallery map showing it one row lower (cyclically), and a 2.1 matcher
    whose FC weight grows with the location, so the last locations match strongest."""
    h, w = 4, 2
    query = unit_maps(8, h, w, seed=3)
    gallery = torch.roll(query, shifts=1, dims=1)  # gallery row (i + 1) % h = query row i
    m = QAConvMatcher(h * w, "2.1").double().eval()
    with torch.no_grad():
        m.fc.weight.copy_(torch.arange(1, h * w + 1, dtype=torch.float64)[None] / (h * w))
    return query, gallery, m


def test_shifted_map_matches_the_row_below_and_draws_those_lines() -> None:
    query, gallery, m = shifted_pair()
    info = location_matches(query, gallery, m)
    h, w = info.grid
    below = [((s // w + 1) % h) * w + s % w for s in range(h * w)]
    assert info.query_to_gallery.tolist() == below
    assert info.gallery_to_query.tolist() == [below.index(r) for r in range(h * w)]
    torch.testing.assert_close(
        info.similarity.max(dim=1).values, torch.ones(h * w, dtype=torch.float64)
    )
    # Every location finds itself (S = 1), so the FC weight orders the contributions.
    assert [(s, r) for s, r, _ in info.strongest_query_matches(3)] == [(7, 1), (6, 0), (5, 7)]
    assert info.cell(7) == (3, 1) and info.cell(1) == (0, 1)

    image = torch.rand(3, INPUT_H, INPUT_W, generator=torch.Generator().manual_seed(0))
    lined = draw_matches(image, image.flip(2), info, top_k=3)
    # Panels of 256 x 128 (upsampled x4); the strongest line, red, joins the centres of the query's
    # cell (3, 1) and the gallery's cell (0, 1), one panel and the gap to the right.
    assert lined.size == (2 * 128 + GAP, 256 + CAPTION_HEIGHT)
    cell_w, cell_h = 128 / w, 256 / h
    query_centre = (round(1.5 * cell_w), round(3.5 * cell_h))
    gallery_centre = (128 + GAP + round(1.5 * cell_w), round(0.5 * cell_h))
    assert lined.getpixel(query_centre) == RED
    assert lined.getpixel(gallery_centre) == RED
    plain = draw_matches(image, image.flip(2), info, top_k=0)
    assert plain.getpixel(query_centre) != RED


def test_draw_matches_size_and_lines_over_the_plain_images() -> None:
    query, gallery, m = shifted_pair()
    info = location_matches(query, gallery, m)
    gen = torch.Generator().manual_seed(1)
    images = [
        Image.fromarray(
            torch.randint(0, 256, (90, 40, 3), generator=gen, dtype=torch.uint8).numpy()
        )
        for _ in range(2)
    ]
    panel = (round(256 * 40 / 90), 256)  # at least 256 tall, aspect kept
    expected_size = (2 * panel[0] + GAP, panel[1] + CAPTION_HEIGHT)

    plain = draw_matches(images[0], images[1], info, top_k=0)
    lined = draw_matches(images[0], images[1], info, top_k=5)
    assert plain.size == lined.size == expected_size
    resized = [image.resize(panel, Image.Resampling.BICUBIC) for image in images]
    boxes = [(0, 0, *panel), (panel[0] + GAP, 0, 2 * panel[0] + GAP, panel[1])]
    for image, box in zip(resized, boxes, strict=True):
        assert plain.crop(box).tobytes() == image.tobytes()
        changed = (np.asarray(lined.crop(box)) != np.asarray(image)).any(axis=2).sum()
        assert changed > 500  # lines and cell outlines on both panels
    # A larger height upsamples more; a taller image than asked is never shrunk.
    assert draw_matches(images[0], images[1], info, height=300).size[1] == 300 + CAPTION_HEIGHT
    assert draw_matches(images[0], images[1], info, height=50).size[1] == 90 + CAPTION_HEIGHT
    with pytest.raises(ValueError, match="top_k"):
        draw_matches(images[0], images[1], info, top_k=-1)


def test_draw_ranked_matches_frames_true_and_false_matches() -> None:
    query, gallery, m = shifted_pair()
    infos = [location_matches(query, gallery, m), location_matches(query, query, m)]
    image = torch.rand(3, INPUT_H, INPUT_W, generator=torch.Generator().manual_seed(2))
    picture = draw_ranked_matches(image, [image, image], infos, 7, [7, 3], top_k=4, title="q")
    tile_w, tile_h = 2 * 128 + GAP, 256 + CAPTION_HEIGHT
    framed_h = tile_h + 2 * BORDER
    assert picture.size == (tile_w + 2 * BORDER, HEADER_HEIGHT + 2 * framed_h)
    assert picture.getpixel((1, HEADER_HEIGHT + 1)) == TRUE_MATCH
    assert picture.getpixel((1, HEADER_HEIGHT + framed_h + 1)) == FALSE_MATCH
    with pytest.raises(ValueError, match="both"):
        draw_ranked_matches(image, [image, image], infos, 7, None)
    with pytest.raises(ValueError, match="one MatchInfo per gallery image"):
        draw_ranked_matches(image, [image], infos)


# --------------------------------------------------------------------------- writer
def expected_rankings(
    method: QAConvMethod, dataset: EvalDataset, queries: list[int], top: int
) -> list[list[int]]:
    """The ``top`` gallery dataset indices of each query by the method's distance, from all the
    maps at once, sorted in Python with the Market rule (same identity and camera left out)."""
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.no_grad():
        maps = method.feature_maps(images)
        distances = method.matcher.distance_fn(maps[queries], maps[dataset.num_query :])(
            0, len(queries)
        )
    target = dataset.target
    return [
        brute_force(distances, target, query, row, exclude_same_camera=True)[:top]
        for row, query in enumerate(queries)
    ]


def test_writer_ranks_by_the_method_and_refuses_to_overwrite(
    street_set: EvalDataset, tmp_path: Path
) -> None:
    method = qaconv()
    pictures = write_match_pictures(method, street_set, [2, 0, 2], tmp_path, top=2, top_k=4)
    assert [p.ranking.query for p in pictures] == [2, 0]  # one per query, in the order given
    expected = expected_rankings(method, street_set, [2, 0], 2)
    for picture, gallery in zip(pictures, expected, strict=True):
        assert picture.path == tmp_path / f"query_{picture.ranking.query}.png"
        assert list(picture.ranking.results) == gallery
        assert list(picture.ranking.distances) == sorted(picture.ranking.distances)
        with Image.open(picture.path) as image:
            assert image.format == "PNG"
            # The images as read from disk (128 x 64) are shown at 256 x 128.
            tile = (2 * 128 + GAP + 2 * BORDER, 256 + CAPTION_HEIGHT + 2 * BORDER)
            assert image.size == (tile[0], HEADER_HEIGHT + 2 * tile[1])

    before = (tmp_path / "query_0.png").read_bytes()
    with pytest.raises(FileExistsError, match="query_0.png"):
        write_match_pictures(method, street_set, [1, 0], tmp_path)
    assert not (tmp_path / "query_1.png").exists()  # refused before anything was written
    assert (tmp_path / "query_0.png").read_bytes() == before
    again = write_match_pictures(method, street_set, [0], tmp_path, top=1, overwrite=True)
    assert again[0].ranking.results == pictures[1].ranking.results[:1]
    assert (tmp_path / "query_0.png").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["query_0.png", "query_2.png"]


def test_drawn_matches_decompose_the_ranked_distance(street_set: EvalDataset) -> None:
    """The location terms drawn sum to the score the gallery was ranked by."""
    method = qaconv()
    images = torch.stack([street_set[i]["image"] for i in (0, 9, 12)])
    with torch.no_grad():
        maps = method.feature_maps(images)
        distances = method.matcher.distance_fn(maps[:1], maps[1:])(0, 1)[0]
    for item, distance in zip(maps[1:], distances, strict=True):
        info = location_matches(maps[0], item, method.matcher)
        torch.testing.assert_close(torch.sigmoid(-info.score.float() / 10), distance)


def test_writer_errors(street_set: EvalDataset, tmp_path: Path) -> None:
    with pytest.raises(IndexError, match=f"has {street_set.num_query} queries"):
        write_match_pictures(qaconv(), street_set, [street_set.num_query], tmp_path)
    with pytest.raises(IndexError, match="out of range"):
        write_match_pictures(qaconv(), street_set, [-1], tmp_path)
    with pytest.raises(TypeError, match="not QAConv"):
        write_match_pictures(build_method(NOT_QACONV, 4), street_set, [0], tmp_path)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- CLI config
def save_checkpoint(method: ReIDMethod, path: Path) -> Path:
    """A reidgen checkpoint that ``load_method`` rebuilds (hyper-parameters + weights, no
    Lightning)."""
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams)}, path)
    return path


def cli_config(synth_data_dir: Path, *overrides: str) -> DictConfig:
    """The CLI's config as ``python -m reidgen.viz.qaconv_matches`` composes it, on the tiny
    street target at the model's input size."""
    with initialize_config_module("reidgen.conf", version_base="1.3"):
        return compose(
            "viz_matches",
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


def test_cli_config_writes_pictures_of_a_checkpoint(
    tiny_street: Path, synth_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = save_checkpoint(qaconv(), tmp_path / "qaconv.ckpt")
    out = tmp_path / "pictures"
    overrides = ["target=synth_street_tiny", "queries=[1,4]", "top=2", f"out_dir={out}"]
    pictures = pictures_from_config(cli_config(synth_data_dir, f"ckpt={ckpt}", *overrides))
    assert sorted(p.name for p in out.iterdir()) == ["query_1.png", "query_4.png"]
    num_query = len(index_synthperson(tiny_street).query)
    assert [p.ranking.query for p in pictures] == [1, 4]
    assert all(
        len(p.ranking.results) == 2 and min(p.ranking.results) >= num_query for p in pictures
    )
    assert f"query 1: {out / 'query_1.png'}" in capsys.readouterr().out


def test_cli_config_errors(tiny_street: Path, synth_data_dir: Path, tmp_path: Path) -> None:
    ckpt = save_checkpoint(qaconv(), tmp_path / "qaconv.ckpt")
    out = f"out_dir={tmp_path / 'pictures'}"
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match=re.escape(f"checkpoint {missing} does not exist")):
        pictures_from_config(cli_config(synth_data_dir, f"ckpt={missing}", out))
    other = save_checkpoint(build_method(NOT_QACONV, 4), tmp_path / "other.ckpt")
    with pytest.raises(TypeError, match="this checkpoint's method is not QAConv"):
        pictures_from_config(cli_config(synth_data_dir, f"ckpt={other}", out))
    with pytest.raises(ValueError, match="unknown target 'market'.*: synth_street_tiny"):
        pictures_from_config(cli_config(synth_data_dir, f"ckpt={ckpt}", "target=market", out))
    with pytest.raises(IndexError, match="query index 999 out of range"):
        pictures_from_config(cli_config(synth_data_dir, f"ckpt={ckpt}", "queries=[999]", out))
    assert not (tmp_path / "pictures").exists()
