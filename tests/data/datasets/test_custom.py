"""Custom-data indexers: identity folders and list files, with and without cameras."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from reidgen.data.datasets.custom import index_custom_folder, index_custom_lists
from reidgen.data.sample import Splits
from reidgen.eval.protocols import MarketProtocol


def _tree(root: Path, files: list[str]) -> Path:
    for relative in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 16), (200, 80, 10)).save(path)
    return root


def _rows(samples: list) -> dict[str, tuple[int, int]]:
    return {Path(s.path).name: (s.pid, s.camid) for s in samples}


def _assert_sorted(splits: Splits) -> None:
    for split in (splits.train, splits.query, splits.gallery):
        assert [s.path for s in split] == sorted(s.path for s in split)
        assert [s.index for s in split] == list(range(len(split)))


FOLDERS = [
    "train/alice/c1_0001.jpg",
    "train/alice/c2_0002.jpg",
    "train/bob/c2_0007.png",
    "query/carol/c1_0003.jpg",
    "gallery/carol/c3_0100.jpg",
    "gallery/dave/c1_0200.jpg",
]


def test_folder_identities_and_cameras(tmp_path: Path) -> None:
    splits = index_custom_folder(_tree(tmp_path, FOLDERS), name="mine")
    # Names sorted over all splits -> 1..N; cameras 1, 2, 3 -> 0, 1, 2.
    assert _rows(splits.train) == {
        "c1_0001.jpg": (1, 0),
        "c2_0002.jpg": (1, 1),
        "c2_0007.png": (2, 1),
    }
    assert _rows(splits.query) == {"c1_0003.jpg": (3, 0)}
    assert _rows(splits.gallery) == {"c3_0100.jpg": (3, 2), "c1_0200.jpg": (4, 0)}
    assert splits.variant == "custom folders: train, query, gallery; cameras given"
    assert splits.expected is None
    assert splits.dropped == {"train": 0, "query": 0, "gallery": 0}
    assert all(s.dataset == "mine" and s.timestamp is None for s in splits.train)
    _assert_sorted(splits)


def test_folder_numeric_names_sort_as_numbers(tmp_path: Path) -> None:
    _tree(tmp_path, ["train/10/c1_a.jpg", "train/2/c1_b.jpg", "train/1/c1_c.jpg"])
    splits = index_custom_folder(tmp_path)
    assert _rows(splits.train) == {"c1_c.jpg": (1, 0), "c1_b.jpg": (2, 0), "c1_a.jpg": (3, 0)}
    assert splits.query == [] and splits.gallery == []  # training-only data
    assert splits.variant == "custom folders: train; cameras given"


def test_folder_without_cameras_keeps_every_true_match(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        [
            "train/x/img_01.jpg",
            "query/p/img_02.jpg",
            "gallery/p/img_03.jpg",
            "gallery/q/img_04.jpg",
        ],
    )
    splits = index_custom_folder(tmp_path)
    assert {s.camid for s in splits.train + splits.query} == {0}
    assert {s.camid for s in splits.gallery} == {1}
    assert splits.variant.endswith("no cameras: query 0, gallery 1")
    # Under the Market protocol the gallery image of the query's identity still counts.
    metrics = MarketProtocol(ranks=(1,)).evaluate(
        torch.tensor([[0.1, 0.9]]),
        torch.tensor([s.pid for s in splits.query]),
        torch.tensor([s.camid for s in splits.query]),
        torch.tensor([s.pid for s in splits.gallery]),
        torch.tensor([s.camid for s in splits.gallery]),
    )
    assert metrics["num_valid_queries"] == 1 and metrics["rank1"] == pytest.approx(100.0)
    # camera_regex=None ignores camera-like text in names.
    forced = index_custom_folder(_tree(tmp_path / "named", FOLDERS), camera_regex=None)
    assert {s.camid for s in forced.gallery} == {1}


def test_folder_custom_camera_regex(tmp_path: Path) -> None:
    _tree(tmp_path, ["query/a/cam07-1.jpg", "gallery/a/cam09-1.jpg"])
    splits = index_custom_folder(tmp_path, camera_regex=r"cam(\d+)")
    assert splits.variant == "custom folders: query, gallery; cameras given"
    assert [s.camid for s in splits.query + splits.gallery] == [0, 1]
    with pytest.raises(ValueError, match="needs a group"):
        index_custom_folder(tmp_path, camera_regex=r"cam\d+")
    with pytest.raises(ValueError, match="captured 'm', not a number"):
        index_custom_folder(tmp_path, camera_regex=r"ca(\w)")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        index_custom_folder(tmp_path / "none")
    for split in ("train", "query", "gallery"):
        assert str(tmp_path / "none" / split) in str(error.value)
    _tree(tmp_path / "half", ["query/a/c1_1.jpg"])
    with pytest.raises(FileNotFoundError, match="has a query folder but no gallery folder"):
        index_custom_folder(tmp_path / "half")
    _tree(tmp_path / "loose", ["train/c1_1.jpg", "train/a/c1_2.jpg"])
    with pytest.raises(ValueError, match=r"1 image\(s\) outside identity folders: c1_1.jpg"):
        index_custom_folder(tmp_path / "loose")
    _tree(tmp_path / "mixed", ["train/a/c1_1.jpg", "train/a/photo.jpg"])
    with pytest.raises(ValueError, match=r"1 of 2 file name\(s\) carry no camera.*photo.jpg"):
        index_custom_folder(tmp_path / "mixed")
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        index_custom_folder(tmp_path / "empty")


LIST_IMAGES = ["img/a1.jpg", "img/a2.jpg", "img/j.jpg", "img/q1.jpg", "img/g1.jpg", "img/g0.jpg"]


def test_lists_with_cameras_junk_and_distractors(tmp_path: Path) -> None:
    _tree(tmp_path, LIST_IMAGES)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text(
        "# path pid camid\nimg/a1.jpg 1 4\n\nimg/a2.jpg 1 6\nimg/j.jpg -1 4\n"
    )
    (tmp_path / "lists" / "query.txt").write_text("img/q1.jpg 7 4\n")
    (tmp_path / "lists" / "gallery.txt").write_text("img/g1.jpg 7 9\nimg/g0.jpg 0 4\n")
    splits = index_custom_lists(
        tmp_path,
        train_list="lists/train.txt",
        query_list="lists/query.txt",
        gallery_list=tmp_path / "lists" / "gallery.txt",
    )
    # Cameras 4, 6, 9 -> 0, 1, 2; junk dropped; the distractor stays in the gallery.
    assert _rows(splits.train) == {"a1.jpg": (1, 0), "a2.jpg": (1, 1)}
    assert _rows(splits.query) == {"q1.jpg": (7, 0)}
    assert _rows(splits.gallery) == {"g1.jpg": (7, 2), "g0.jpg": (0, 0)}
    assert splits.dropped == {"train": 1, "query": 0, "gallery": 0}
    assert splits.summary()["gallery"] == {"identities": 1, "images": 2, "cameras": 2}
    assert splits.variant == "custom lists: train, query, gallery; cameras given"
    assert splits.expected is None
    assert all(Path(s.path).is_file() for s in splits.train + splits.query + splits.gallery)
    _assert_sorted(splits)


def test_lists_without_cameras(tmp_path: Path) -> None:
    _tree(tmp_path, LIST_IMAGES)
    (tmp_path / "q.txt").write_text("img/q1.jpg 7\n")
    (tmp_path / "g.txt").write_text("img/g1.jpg 7\n")
    splits = index_custom_lists(tmp_path, query_list="q.txt", gallery_list="g.txt")
    assert splits.train == []
    assert [s.camid for s in splits.query] == [0] and [s.camid for s in splits.gallery] == [1]
    assert splits.variant == "custom lists: query, gallery; no cameras: query 0, gallery 1"


def test_lists_errors(tmp_path: Path) -> None:
    _tree(tmp_path, LIST_IMAGES)
    listing = tmp_path / "train.txt"
    listing.write_text("img/a1.jpg 1\nimg/a2.jpg one\n")
    with pytest.raises(ValueError, match=r"train.txt, line 2: expected 'relative/path pid"):
        index_custom_lists(tmp_path, train_list="train.txt")
    listing.write_text("img/a1.jpg 1\nimg/a2.jpg 1 3\n")
    with pytest.raises(ValueError, match=r"train.txt, line 2: has a camid, unlike .*line 1"):
        index_custom_lists(tmp_path, train_list="train.txt")
    listing.write_text("img/a1.jpg 0\n")
    with pytest.raises(ValueError, match=r"line 1: pid 0 is not allowed in the train list"):
        index_custom_lists(tmp_path, train_list="train.txt")
    listing.write_text("img/a1.jpg 1 -2\n")
    with pytest.raises(ValueError, match=r"line 1: camid -2 is negative"):
        index_custom_lists(tmp_path, train_list="train.txt")
    listing.write_text("img/missing.jpg 1\n")
    with pytest.raises(FileNotFoundError, match=r"1 listed image\(s\) .*line 1: .*missing.jpg"):
        index_custom_lists(tmp_path, train_list="train.txt")
    with pytest.raises(FileNotFoundError, match="query list .*nope.txt does not exist"):
        index_custom_lists(tmp_path, query_list="nope.txt", gallery_list="train.txt")
    with pytest.raises(FileNotFoundError, match="has a query list but no gallery list"):
        index_custom_lists(tmp_path, query_list="train.txt")
    with pytest.raises(ValueError, match="give train_list"):
        index_custom_lists(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        index_custom_lists(tmp_path / "nowhere", train_list="train.txt")
