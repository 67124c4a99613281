"""reidgen.search on folders of unlabelled crops: the ranking is the method's own distance (and
re-ranking's), a gallery feature file ranks like its folder, the CSV and pictures are written once,
and bad input is named."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from reidgen.data.datasets.synthperson import index_synthperson
from reidgen.data.transforms import build_transforms
from reidgen.eval.features import Features
from reidgen.eval.rerank import rerank
from reidgen.extract import ImageRecord, write_feature_file
from reidgen.methods.base import ReIDMethod
from reidgen.run_support import build_method
from reidgen.search import ImageFiles, image_files, search_from_config
from reidgen.viz.ranked import extract_features
from tests.test_extract import BASELINE, saved

TEST_TRANSFORM = {
    "_target_": "reidgen.data.transforms.build_transforms",
    "height": 64,
    "width": 32,
    "train": False,
}


@pytest.fixture(scope="module")
def crops(tiny_street: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A query folder of 3 crops and a gallery folder of 14 in two subfolders, renamed so that
    nothing tells who is who."""
    root = tmp_path_factory.mktemp("crops")
    splits = index_synthperson(tiny_street)
    for folder, samples in (("query", splits.query[:3]), ("gallery", splits.gallery[:14])):
        for i, sample in enumerate(samples):
            target = root / folder / f"part{i % 2}" / f"crop_{i:03d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sample.path, target)
    return root / "query", root / "gallery"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    method = build_method(BASELINE, num_classes=4, test_transform=TEST_TRANSFORM)
    return saved(method, tmp_path_factory.mktemp("search-model") / "model.ckpt")


def config(*overrides: str):
    with initialize_config_module("reidgen.conf", version_base="1.3"):
        return compose("search", overrides=["device=cpu", "progress=false", *overrides])


def features_of(method: ReIDMethod, files: list[Path]) -> Features:
    dataset = ImageFiles(files, build_transforms(64, 32, train=False), "test")
    return extract_features(method, dataset, range(len(files)))


def ranking_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_search_ranks_unlabelled_crops_by_the_methods_distance(
    crops: tuple[Path, Path], checkpoint: Path, tmp_path: Path
) -> None:
    query, gallery = crops
    out = tmp_path / "out"
    args = [f"ckpt={checkpoint}", f"query={query}", f"gallery={gallery}", "top=5"]
    paths = search_from_config(config(*args, f"out_dir={out}", "height=64"))
    assert [p.name for p in paths] == ["ranking.csv", "query_0.png", "query_1.png", "query_2.png"]
    rows = ranking_rows(out / "ranking.csv")
    assert len(rows) == 3 * 5
    query_files, gallery_files = image_files(query, "query"), image_files(gallery, "gallery")
    assert [p.parent.name for p in gallery_files[:2]] == ["part0", "part0"]  # sorted paths
    method = build_method(BASELINE, num_classes=4, test_transform=TEST_TRANSFORM)
    method.load_state_dict(torch.load(checkpoint, weights_only=False)["state_dict"])
    method.eval()
    distance = method.distance(features_of(method, query_files), features_of(method, gallery_files))
    expected = torch.sort(distance(0, 3), dim=1, stable=True)
    for row in rows:
        q, rank = int(row["query"]), int(row["rank"])
        assert int(row["gallery"]) == int(expected.indices[q, rank - 1])
        assert row["gallery_path"] == str(gallery_files[int(row["gallery"])])
        assert row["query_path"] == str(query_files[q])
        assert float(row["distance"]) == pytest.approx(float(expected.values[q, rank - 1]), 1e-4)
    with Image.open(out / "query_0.png") as picture:
        assert picture.width > 6 * 32  # the query and 5 results
    before = (out / "ranking.csv").read_text()
    with pytest.raises(FileExistsError, match="ranking.csv"):
        search_from_config(config(*args, f"out_dir={out}"))
    assert (out / "ranking.csv").read_text() == before

    # Re-ranked: k-reciprocal re-ranking of the method's distances among all images.
    reranked = tmp_path / "reranked"
    search_from_config(config(*args, f"out_dir={reranked}", "rerank=true"))
    everything = Features.cat(
        [features_of(method, query_files), features_of(method, gallery_files)]
    )
    rows_fn = method.rerank_rows(everything, 3)
    final = rerank(rows_fn, 3, 20, 6, 0.3, num_total=len(everything))(0, 3)
    order = torch.sort(final, dim=1, stable=True).indices[:, :5]
    got = [int(r["gallery"]) for r in ranking_rows(reranked / "ranking.csv")]
    assert got == order.flatten().tolist()


def test_a_gallery_feature_file_ranks_like_its_folder(
    crops: tuple[Path, Path], checkpoint: Path, tmp_path: Path
) -> None:
    query, gallery = crops
    method = build_method(BASELINE, num_classes=4, test_transform=TEST_TRANSFORM)
    method.load_state_dict(torch.load(checkpoint, weights_only=False)["state_dict"])
    gallery_files = image_files(gallery, "gallery")
    records = [ImageRecord(i, str(p), -1, -1, None, "gallery") for i, p in enumerate(gallery_files)]
    features_path, _ = write_feature_file(
        features_of(method, gallery_files), records, tmp_path / "gallery"
    )
    base = [f"ckpt={checkpoint}", f"query={query}", "top=4"]
    search_from_config(config(*base, f"gallery={gallery}", f"out_dir={tmp_path / 'a'}"))
    search_from_config(config(*base, f"gallery={features_path}", f"out_dir={tmp_path / 'b'}"))
    folder, from_file = (
        ranking_rows(tmp_path / "a/ranking.csv"),
        ranking_rows(tmp_path / "b/ranking.csv"),
    )
    assert [r["gallery_path"] for r in folder] == [r["gallery_path"] for r in from_file]
    for a, b in zip(folder, from_file, strict=True):
        assert float(a["distance"]) == pytest.approx(float(b["distance"]), abs=1e-5)
    other = write_feature_file(
        Features({"maps": torch.zeros(len(records), 2, 2, 2)}), records, tmp_path / "maps"
    )[0]
    with pytest.raises(ValueError, match="holds maps but this checkpoint's method describes"):
        search_from_config(config(*base, f"gallery={other}", f"out_dir={tmp_path / 'c'}"))


def test_bad_query_and_gallery_are_named(tmp_path: Path, crops: tuple[Path, Path]) -> None:
    with pytest.raises(FileNotFoundError, match=r"query .*missing does not exist"):
        image_files(tmp_path / "missing", "query")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=r"gallery folder .*empty holds no image"):
        image_files(tmp_path / "empty", "gallery")
    with pytest.raises(ValueError, match="is not an image"):
        image_files(tmp_path / "empty" / "notes.txt", "query")
    assert len(image_files(crops[0], "query")) == 3
