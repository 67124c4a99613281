"""QAConv match pictures: location matches against their definition, the drawings, the writer and
the CLI's config path, with a small stand-in QAConv model on tiny SynthPerson data."""

from __future__ import annotations

import math
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
from torch import Tensor, nn

from reidgen.data.dataset import EvalDataset
from reidgen.data.datasets.synthperson import index_synthperson
from reidgen.data.transforms import build_transforms
from reidgen.methods.base import CHECKPOINT_KEY
from reidgen.methods.qaconv.matcher import QAConvMatcher
from reidgen.models import ResNetBackbone
from reidgen.viz.qaconv_matches import (
    BORDER,
    CAPTION_HEIGHT,
    FALSE_MATCH,
    GAP,
    HEADER_HEIGHT,
    TRUE_MATCH,
    draw_matches,
    draw_ranked_matches,
    location_matches,
    pictures_from_config,
    write_match_pictures,
)
from tests.methods.qaconv.test_matcher import configured as configured_matcher

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


class StandIn(nn.Module):
    """What match pictures need of a QAConv method: ``feature_maps`` and ``matcher``."""

    def __init__(self, num_classes: int = 0, channels: int = 16) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(depth=18, out_stage=3, pretrained=None)
        self.neck = nn.Conv2d(self.backbone.out_channels, channels, 1)
        self.matcher = QAConvMatcher(GRID[0] * GRID[1])

    def feature_maps(self, images: Tensor) -> Tensor:
        return F.normalize(self.neck(self.backbone(images)), dim=1)


class NotQAConv(nn.Module):
    """A method without feature maps or matcher."""

    def __init__(self, num_classes: int = 0) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)


def stand_in() -> StandIn:
    torch.manual_seed(0)
    return StandIn().eval()


@pytest.fixture(scope="module")
def street_set(tiny_street: Path) -> EvalDataset:
    """Part of the tiny street target (few images keep the CPU tests fast)."""
    splits = index_synthperson(tiny_street)
    return EvalDataset(
        splits.query[:8], splits.gallery[:30], build_transforms(INPUT_H, INPUT_W, train=False)
    )


# --------------------------------------------------------------------------- location_matches
def slow_matches(m: QAConvMatcher, query: Tensor, gallery: Tensor) -> dict[str, list]:
    """The definition, loop by loop, for single maps ``[C, h, w]``: correspondences, each
    location's term of the eval-mode score, and the score through BN -> FC -> BN itself."""

    def bn(x: float, layer: nn.BatchNorm1d) -> float:
        mean, var = layer.running_mean.item(), layer.running_var.item()
        return (x - mean) / math.sqrt(var + layer.eps) * layer.weight.item() + layer.bias.item()

    def gain(layer: nn.BatchNorm1d) -> float:
        return layer.weight.item() / math.sqrt(layer.running_var.item() + layer.eps)

    q, g = query.reshape(query.shape[0], -1), gallery.reshape(gallery.shape[0], -1)
    n = q.shape[1]
    sim = [
        [sum(q[c, s].item() * g[c, r].item() for c in range(q.shape[0])) for r in range(n)]
        for s in range(n)
    ]
    q2g = [max(range(n), key=lambda r, s=s: sim[s][r]) for s in range(n)]
    g2q = [max(range(n), key=lambda s, r=r: sim[s][r]) for r in range(n)]
    a = [sim[s][q2g[s]] for s in range(n)]
    b = [sim[g2q[r]][r] for r in range(n)]
    w = m.fc.weight.reshape(-1).tolist()
    w_a, w_b = (w, w) if m.version == "2.1" else (w[:n], w[n:])
    k = gain(m.bn) * gain(m.logit_bn)  # what one maximum's unit change moves the logit by, per w
    beta = m.fc.bias.item()
    a_bn, b_bn = [bn(x, m.bn) for x in a], [bn(x, m.bn) for x in b]
    y = sum(wi * x for wi, x in zip(w_a, a_bn, strict=True))
    y += sum(wi * x for wi, x in zip(w_b, b_bn, strict=True))
    y += 2 * beta if m.version == "2.1" else beta
    return {
        "q2g": q2g,
        "g2q": g2q,
        "query_contribution": [k * w_a[s] * a[s] for s in range(n)],
        "gallery_contribution": [k * w_b[r] * b[r] for r in range(n)],
        "score": bn(y, m.logit_bn),
    }


@pytest.mark.parametrize("version", ["2.1", "1.x"])
def test_location_matches_equals_a_direct_computation(version: str) -> None:
    m = configured(version)
    query, gallery = unit_maps(C, H, W, seed=1), unit_maps(C, H, W, seed=2)
    info = location_matches(query, gallery, m)
    slow = slow_matches(m, query, gallery)

    assert info.grid == (H, W) and info.similarity.shape == (N, N)
    assert info.query_to_gallery.tolist() == slow["q2g"]
    assert info.gallery_to_query.tolist() == slow["g2q"]
    torch.testing.assert_close(
        info.query_contribution, torch.tensor(slow["query_contribution"], dtype=torch.float64)
    )
    torch.testing.assert_close(
        info.gallery_contribution, torch.tensor(slow["gallery_contribution"], dtype=torch.float64)
    )
    # The score is the sum of the location terms plus the offset, and is the matcher's score.
    total = info.query_contribution.sum() + info.gallery_contribution.sum() + info.offset
    torch.testing.assert_close(info.score, total)
    torch.testing.assert_close(info.score.item(), slow["score"], rtol=0, atol=1e-10)
    chunked = m.scores_in_chunks(query[None], gallery[None])[0, 0]
    torch.testing.assert_close(info.score, chunked, rtol=0, atol=1e-10)
    torch.testing.assert_close(info.score, m(query[None], gallery[None])[0, 0], rtol=0, atol=1e-10)
    # The matcher's mode does not matter: location_matches uses the eval-mode head.
    m.train()
    torch.testing.assert_close(location_matches(query, gallery, m).score, info.score)


def test_location_matches_rejects_mismatched_maps() -> None:
    m = configured("2.1")
    with pytest.raises(ValueError, match="one shape"):
        location_matches(unit_maps(C, H, W, seed=1), unit_maps(C, W, H, seed=2), m)
    with pytest.raises(ValueError, match="built for 6"):
        location_matches(unit_maps(C, 2, 2, seed=1), unit_maps(C, 2, 2, seed=2), m)


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
    method: StandIn, dataset: EvalDataset, queries: list[int], top: int
) -> list[list[int]]:
    """The ``top`` gallery dataset indices of each query by the matcher's scores, with the Market
    rule (same identity and camera left out), straight from all the maps at once."""
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.no_grad():
        maps = method.feature_maps(images)
        scores = method.matcher.scores_in_chunks(maps[queries], maps[dataset.num_query :])
    rankings = []
    for row, query in enumerate(queries):
        q = dataset.samples[query]
        ranked = [
            index
            for index in (
                dataset.num_query + j for j in scores[row].argsort(descending=True, stable=True)
            )
            if (dataset.samples[index].pid, dataset.samples[index].camid) != (q.pid, q.camid)
        ]
        rankings.append(ranked[:top])
    return rankings


def test_writer_ranks_by_the_matcher_and_refuses_to_overwrite(
    street_set: EvalDataset, tmp_path: Path
) -> None:
    method = stand_in()
    pictures = write_match_pictures(method, street_set, [2, 0, 2], tmp_path, top=2, top_k=4)
    assert [p.query for p in pictures] == [2, 0]  # one picture per query, in the order given
    expected = expected_rankings(method, street_set, [2, 0], 2)
    for picture, gallery in zip(pictures, expected, strict=True):
        assert picture.path == tmp_path / f"query_{picture.query}.png"
        assert picture.gallery == gallery
        assert picture.scores == sorted(picture.scores, reverse=True)
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
    assert again[0].gallery == pictures[1].gallery[:1]
    assert (tmp_path / "query_0.png").read_bytes() != before


def test_writer_errors(street_set: EvalDataset, tmp_path: Path) -> None:
    with pytest.raises(IndexError, match=f"has {street_set.num_query} queries"):
        write_match_pictures(stand_in(), street_set, [street_set.num_query], tmp_path)
    with pytest.raises(IndexError, match="out of range"):
        write_match_pictures(stand_in(), street_set, [-1], tmp_path)
    with pytest.raises(TypeError, match="not QAConv"):
        write_match_pictures(NotQAConv(), street_set, [0], tmp_path)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- CLI config
def save_checkpoint(method: nn.Module, path: Path) -> Path:
    """A reidgen checkpoint that ``load_method`` rebuilds (config + weights, no Lightning)."""
    config = {"_target_": f"{type(method).__module__}.{type(method).__qualname__}"}
    meta = {"method_config": config, "num_classes": 0}
    torch.save({"state_dict": method.state_dict(), CHECKPOINT_KEY: meta}, path)
    return path


def cli_config(synth_data_dir: Path, *overrides: str) -> DictConfig:
    """The CLI's config as ``python -m reidgen.viz.qaconv_matches`` composes it, on the tiny
    street target at the stand-in's input size."""
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
    ckpt = save_checkpoint(stand_in(), tmp_path / "standin.ckpt")
    out = tmp_path / "pictures"
    overrides = ["target=synth_street_tiny", "queries=[1,4]", "top=2", f"out_dir={out}"]
    pictures = pictures_from_config(cli_config(synth_data_dir, f"ckpt={ckpt}", *overrides))
    assert sorted(p.name for p in out.iterdir()) == ["query_1.png", "query_4.png"]
    num_query = len(index_synthperson(tiny_street).query)
    assert [p.query for p in pictures] == [1, 4]
    assert all(len(p.gallery) == 2 and min(p.gallery) >= num_query for p in pictures)
    assert f"query 1: {out / 'query_1.png'}" in capsys.readouterr().out


def test_cli_config_errors(tiny_street: Path, synth_data_dir: Path, tmp_path: Path) -> None:
    ckpt = save_checkpoint(stand_in(), tmp_path / "standin.ckpt")
    out = f"out_dir={tmp_path / 'pictures'}"
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match=re.escape(f"checkpoint {missing} does not exist")):
        pictures_from_config(cli_config(synth_data_dir, f"ckpt={missing}", out))
    other = save_checkpoint(NotQAConv(), tmp_path / "other.ckpt")
    with pytest.raises(TypeError, match="this checkpoint's method is not QAConv"):
        pictures_from_config(cli_config(synth_data_dir, f"ckpt={other}", out))
    with pytest.raises(ValueError, match="unknown target 'market'.*: synth_street_tiny"):
        pictures_from_config(cli_config(synth_data_dir, f"ckpt={ckpt}", "target=market", out))
    with pytest.raises(IndexError, match="query index 999 out of range"):
        pictures_from_config(cli_config(synth_data_dir, f"ckpt={ckpt}", "queries=[999]", out))
    assert not (tmp_path / "pictures").exists()
