"""The pictures' ranked-list core: query selection, the target, feature extraction, ranking by the
method's own distance against a brute-force ranking, and the atomic, never-replacing PNG writes."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from reidgen.data.dataset import EvalDataset
from reidgen.data.datasets.synthperson import index_synthperson
from reidgen.data.sample import Sample
from reidgen.data.transforms import build_transforms
from reidgen.eval.features import Features
from reidgen.eval.protocols import MarketProtocol, VehicleIDProtocol
from reidgen.eval.ranking import JUNK_PID
from reidgen.eval.target import EvalTarget
from reidgen.methods.base import ReIDMethod
from reidgen.viz.ranked import (
    extract_features,
    picture_paths,
    rank_gallery,
    rank_queries,
    select_queries,
    target_dataset,
    write_png,
)


def picture(colour: tuple[int, int, int] = (200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (8, 6), colour)


# --------------------------------------------------------------------------- files
def test_write_png_writes_whole_pictures_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = write_png(picture(), tmp_path / "new" / "query_0.png")
    assert path == tmp_path / "new" / "query_0.png"
    assert os.listdir(path.parent) == ["query_0.png"]
    with Image.open(path) as written:
        assert written.format == "PNG" and written.getpixel((0, 0)) == (200, 30, 30)

    # A picture PNG cannot hold fails while it is written: no file, no temporary file.
    with pytest.raises(OSError, match="CMYK"):
        write_png(Image.new("CMYK", (8, 6)), tmp_path / "new" / "query_1.png")
    assert os.listdir(path.parent) == ["query_0.png"]
    # Nor does it harm the picture it was to replace.
    before = path.read_bytes()
    with pytest.raises(OSError, match="CMYK"):
        write_png(Image.new("CMYK", (8, 6)), path, overwrite=True)
    assert path.read_bytes() == before and os.listdir(path.parent) == ["query_0.png"]


def test_write_png_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = write_png(picture(), tmp_path / "query_0.png")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"query_0\.png.*another folder.*overwrite=true"):
        write_png(picture((0, 0, 255)), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["query_0.png"]

    write_png(picture((0, 0, 255)), path, overwrite=True)
    with Image.open(path) as written:
        assert written.getpixel((0, 0)) == (0, 0, 255)
    assert os.listdir(tmp_path) == ["query_0.png"]


def test_write_png_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the filesystem has no hard links, the picture is renamed into place instead."""

    def no_links(source: object, target: object) -> None:
        raise PermissionError("hard links are not supported here")

    monkeypatch.setattr(os, "link", no_links)
    path = write_png(picture(), tmp_path / "query_0.png")
    assert os.listdir(tmp_path) == ["query_0.png"]
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="query_0.png"):
        write_png(picture((0, 0, 255)), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["query_0.png"]


def test_picture_paths_name_every_existing_picture_before_anything_is_written(
    tmp_path: Path,
) -> None:
    assert picture_paths(tmp_path / "absent", [3, 1]) == [
        tmp_path / "absent" / "query_3.png",
        tmp_path / "absent" / "query_1.png",
    ]
    assert not (tmp_path / "absent").exists()
    for name in ("query_2.png", "query_5.png"):
        (tmp_path / name).write_bytes(b"old")
    with pytest.raises(FileExistsError) as error:
        picture_paths(tmp_path, [1, 2, 5])
    message = str(error.value)
    assert "query_2.png" in message and "query_5.png" in message and "query_1.png" not in message
    assert "out_dir" in message
    assert picture_paths(tmp_path, [2], overwrite=True) == [tmp_path / "query_2.png"]


# --------------------------------------------------------------------------- queries
def samples(count: int, first_pid: int = 1) -> list[Sample]:
    return [Sample(f"/x/{i}.png", first_pid + i, i % 2, "toy") for i in range(count)]


def toy_dataset(num_query: int, num_gallery: int, protocol: object = None) -> EvalDataset:
    return EvalDataset(
        samples(num_query), samples(num_gallery), lambda image: image, protocol=protocol
    )


def test_select_queries_checks_positions_and_names_the_valid_range() -> None:
    dataset = toy_dataset(3, 4)
    assert select_queries(dataset, [2, 0, 2, 1]) == [2, 0, 1]  # repeats dropped, order kept
    with pytest.raises(IndexError, match=r"query index 3, -1 out of range.*3 queries.*0 to 2"):
        select_queries(dataset, [0, 3, -1])
    with pytest.raises(ValueError, match="no queries"):
        select_queries(dataset, [])
    with pytest.raises(TypeError):
        select_queries(dataset, [1.0])
    with pytest.raises(IndexError, match="0 queries"):
        select_queries(toy_dataset(0, 4), [0])
    with pytest.raises(ValueError, match="no gallery"):
        select_queries(toy_dataset(3, 0), [0])
    with pytest.raises(ValueError, match="VehicleIDProtocol.*no fixed query set"):
        select_queries(toy_dataset(3, 4, VehicleIDProtocol()), [0])


class StubDataModule:
    """What ``target_dataset`` needs of a data module: targets, their names, setup, eval sets."""

    def __init__(self, *names: str) -> None:
        self.targets = [SimpleNamespace(name=name) for name in names]
        self.eval_sets: dict[str, str] = {}

    @property
    def target_names(self) -> list[str]:
        return [target.name for target in self.targets]

    def setup(self, stage: str) -> None:
        self.eval_sets = {name: f"{name} test set" for name in self.target_names}


def test_target_dataset_indexes_only_the_chosen_target() -> None:
    datamodule = StubDataModule("street", "studio")
    assert target_dataset(datamodule, "studio") == "studio test set"
    assert datamodule.target_names == ["studio"]
    assert target_dataset(StubDataModule("street"), None) == "street test set"
    with pytest.raises(ValueError, match="2 targets; choose one with target=<name>: a, b"):
        target_dataset(StubDataModule("a", "b"), None)
    with pytest.raises(ValueError, match="unknown target 'c'.*: a, b"):
        target_dataset(StubDataModule("a", "b"), "c")


# --------------------------------------------------------------------------- ranking
def random_target(num_query: int, num_gallery: int, seed: int) -> EvalTarget:
    """Few identities and cameras, so that junk, same-camera and true matches all occur."""
    gen = torch.Generator().manual_seed(seed)
    pids = torch.randint(0, 4, (num_query + num_gallery,), generator=gen)
    pids[num_query:][torch.rand(num_gallery, generator=gen) < 0.2] = JUNK_PID
    camids = torch.randint(0, 3, (num_query + num_gallery,), generator=gen)
    return EvalTarget(
        name="toy",
        pids=pids,
        camids=camids,
        num_query=num_query,
        protocol=MarketProtocol(),
        timestamps=torch.full((num_query + num_gallery,), math.nan, dtype=torch.float64),
    )


def brute_force(
    distances: Tensor, target: EvalTarget, query: int, row: int, exclude_same_camera: bool
) -> list[int]:
    """Dataset indices of the kept gallery, best first: a Python sort by (NaN last, distance,
    gallery position)."""
    nq = target.num_query
    kept = []
    for j in range(target.num_gallery):
        pid, camid = int(target.pids[nq + j]), int(target.camids[nq + j])
        if pid == JUNK_PID:
            continue
        same = pid == int(target.pids[query]) and camid == int(target.camids[query])
        if exclude_same_camera and same:
            continue
        kept.append(j)
    d = distances[row].tolist()
    return [nq + j for j in sorted(kept, key=lambda j: (math.isnan(d[j]), d[j], j))]


@pytest.mark.parametrize("exclude_same_camera", [True, False])
def test_rank_gallery_equals_a_brute_force_ranking(exclude_same_camera: bool) -> None:
    target = random_target(num_query=6, num_gallery=40, seed=3)
    queries = [4, 0, 5]
    gen = torch.Generator().manual_seed(4)
    # Few distinct values: many ties, which must keep gallery order; some NaN and inf.
    distances = torch.randint(0, 4, (3, 40), generator=gen).float()
    distances[0, 5] = distances[1, 7] = distances[1, 8] = math.nan
    distances[2, 9] = math.inf
    full = rank_gallery(distances, target, queries, exclude_same_camera=exclude_same_camera)
    top = rank_gallery(distances, target, queries, 5, exclude_same_camera)
    for row, (query, ranking, short) in enumerate(zip(queries, full, top, strict=True)):
        expected = brute_force(distances, target, query, row, exclude_same_camera)
        assert ranking.query == short.query == query
        assert list(ranking.results) == expected
        assert ranking.kept == short.kept == len(expected)
        assert short.results == ranking.results[:5]
        nq = target.num_query
        expected_distances = [distances[row, i - nq].item() for i in expected]
        assert ranking.distances == pytest.approx(expected_distances, nan_ok=True)
    assert math.isnan(full[1].distances[-1])  # NaN distances are ranked last, not dropped


def test_rank_gallery_errors() -> None:
    target = random_target(num_query=2, num_gallery=5, seed=0)
    with pytest.raises(ValueError, match=r"\[2 queries, 5 gallery items\]"):
        rank_gallery(torch.zeros(2, 4), target, [0, 1])
    with pytest.raises(ValueError, match="top must be at least 1"):
        rank_gallery(torch.zeros(1, 5), target, [0], top=0)
    junk = EvalTarget(
        "junk",
        torch.tensor([1, JUNK_PID, JUNK_PID]),
        torch.tensor([0, 0, 1]),
        1,
        MarketProtocol(),
        torch.full((3,), math.nan, dtype=torch.float64),
    )
    with pytest.raises(ValueError, match="every gallery item is left out for query 0"):
        rank_gallery(torch.zeros(1, 2), junk, [0])


# --------------------------------------------------------------------------- with a method
class Toy(ReIDMethod):
    """A small method with a BN layer (whose train mode would change the features) and the
    default cosine distance of its embeddings."""

    def __init__(self, num_classes: int = 0, **settings: object) -> None:
        super().__init__(num_classes, **settings)
        self.conv = nn.Conv2d(3, 8, 5, stride=4)
        self.bn = nn.BatchNorm2d(8)

    def extract(self, images: Tensor) -> Features:
        return Features.embedding(self.bn(self.conv(images)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def street_set(tiny_street: Path) -> EvalDataset:
    splits = index_synthperson(tiny_street)
    return EvalDataset(splits.query[:6], splits.gallery[:25], build_transforms(64, 32, train=False))


def toy_method() -> Toy:
    torch.manual_seed(0)
    method = Toy()
    with torch.no_grad():
        method.bn.running_mean.uniform_(-0.5, 0.5)
        method.bn.running_var.uniform_(0.5, 2.0)
    return method


def test_extract_features_in_eval_mode_batched_and_modes_restored(street_set: EvalDataset) -> None:
    method = toy_method()
    method.train()
    method.conv.eval()  # a part held in eval mode while training keeps that mode
    features = extract_features(method, street_set, [5, 0, 7], batch_size=2)
    assert method.training and method.bn.training and not method.conv.training
    images = torch.stack([street_set[i]["image"] for i in (5, 0, 7)])
    method.eval()
    with torch.no_grad():
        expected = method.extract(images)["embedding"]
    assert features.names == ("embedding",)
    torch.testing.assert_close(features["embedding"], expected)
    with pytest.raises(ValueError, match="no images"):
        extract_features(method, street_set, [])


def test_rank_queries_ranks_by_the_methods_own_distance(street_set: EvalDataset) -> None:
    method = toy_method()
    ranked = rank_queries(method, street_set, [3, 1, 3], top=4)
    assert [r.query for r in ranked.rankings] == [3, 1]
    assert len(ranked.query_features) == 2 and len(ranked.gallery_features) == 25

    # Brute force: every image's embedding at once, the cosine distance written out, a Python
    # sort with the protocol's rule.
    images = torch.stack([street_set[i]["image"] for i in range(len(street_set))])
    method.eval()
    with torch.no_grad():
        embeddings = F.normalize(method.extract(images)["embedding"], dim=1)
    target = street_set.target
    for row, ranking in enumerate(ranked.rankings):
        distances = 1 - embeddings[[ranking.query]] @ embeddings[6:].t()
        expected = brute_force(distances, target, ranking.query, 0, exclude_same_camera=True)
        assert list(ranking.results) == expected[:4]
        assert ranking.kept == len(expected)
        torch.testing.assert_close(
            torch.tensor(ranking.distances), distances[0, [i - 6 for i in expected[:4]]]
        )
        torch.testing.assert_close(
            ranked.result_features(row)["embedding"],
            ranked.gallery_features["embedding"][[i - 6 for i in ranking.results]],
        )
