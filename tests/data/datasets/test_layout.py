"""The Market-1501 layout indexer on hand-made trees and on generated SynthPerson trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from reidgen.data.datasets.layout import DUKE_NAMES, index_market_layout
from reidgen.data.datasets.synthperson import index_synthperson


def _tree(root: Path, files: dict[str, list[str]]) -> Path:
    for folder, names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (8, 16), (120, 30, 200)).save(root / folder / name)
    return root


MARKET_TREE = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000301_01.jpg",
        "0007_c3s1_000101_01.jpg",
        "-1_c1s1_000401_03.jpg",
    ],
    "query": ["0003_c1s1_000551_01.jpg", "0004_c2s2_000020_01.jpg"],
    "bounding_box_test": [
        "0003_c2s1_000700_01.jpg",
        "0003_c1s1_000600_02.jpg",
        "0004_c6s1_000100_01.jpg",
        "0000_c4s1_000010_05.jpg",
        "-1_c1s1_000551_02.jpg",
        "-1_c2s2_000030_01.jpg",
    ],
}


def test_market_tree_counts_junk_and_distractors(tmp_path: Path) -> None:
    root = _tree(tmp_path, MARKET_TREE)
    splits = index_market_layout(root, "market")
    assert [s.pid for s in splits.train] == [2, 2, 7]
    assert splits.dropped == {"train": 1, "query": 0, "gallery": 2}
    assert sorted(s.pid for s in splits.gallery) == [0, 3, 3, 4]  # distractor kept, junk gone
    assert {s.camid for s in splits.train} == {0, 1, 2}  # c1..c3 become 0-based
    assert all(s.dataset == "market" for s in splits.train + splits.query + splits.gallery)
    assert splits.summary()["gallery"] == {"identities": 2, "images": 4, "cameras": 4}
    # Sorted by path and indexed by position: the same on every process.
    for split in (splits.train, splits.query, splits.gallery):
        assert [s.path for s in split] == sorted(s.path for s in split)
        assert [s.index for s in split] == list(range(len(split)))
    assert all(s.timestamp is None for s in splits.train)


def test_market_timestamps_concatenate_sequences_per_camera(tmp_path: Path) -> None:
    root = _tree(tmp_path, MARKET_TREE)
    splits = index_market_layout(root, "market", fps=25.0)
    by_name = {Path(s.path).name: s.timestamp for s in splits.query + splits.gallery}
    # Camera 2 saw frames up to 700 in sequence 1 (train 301, gallery 700), so sequence 2 starts
    # at frame 700: query 0004_c2s2_000020 is at (700 + 20) / 25 = 28.8 s.
    assert by_name["0004_c2s2_000020_01.jpg"] == pytest.approx(28.8)
    assert by_name["0003_c1s1_000551_01.jpg"] == pytest.approx(551 / 25)
    fixed = index_market_layout(root, "market", fps=25.0, sequence_frames=1000)
    fixed_by_name = {Path(s.path).name: s.timestamp for s in fixed.query}
    assert fixed_by_name["0004_c2s2_000020_01.jpg"] == pytest.approx(1020 / 25)


def test_duke_names_and_camera_offsets(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "bounding_box_train": ["0005_c2_f0046985.jpg", "0005_c8_f0000001.jpg"],
            "query": ["0019_c1_f0000100.jpg"],
            "bounding_box_test": ["0019_c3_f0000200.jpg", "0000_c1_f0000300.jpg"],
        },
    )
    offsets = [10, 20, 30, 40, 50, 60, 70, 80]
    splits = index_market_layout(
        root, "duke", DUKE_NAMES, num_cameras=8, fps=50.0, camera_frame_offsets=offsets
    )
    assert [(s.pid, s.camid) for s in splits.train] == [(5, 1), (5, 7)]
    assert splits.query[0].timestamp == pytest.approx((100 + 10) / 50)
    assert splits.gallery[1].timestamp == pytest.approx((200 + 30) / 50)


def test_non_image_files_are_skipped_but_malformed_names_fail(tmp_path: Path) -> None:
    root = _tree(tmp_path, MARKET_TREE)
    (root / "query" / "Thumbs.db").write_bytes(b"\0")
    assert len(index_market_layout(root, "market").query) == 2
    Image.new("RGB", (8, 16)).save(root / "query" / "person_12.jpg")
    with pytest.raises(
        ValueError, match=r"query: 1 file name\(s\).*0002_c1s1_000451_03\.jpg.*person_12\.jpg"
    ):
        index_market_layout(root, "market")


def test_camera_outside_range_fails(tmp_path: Path) -> None:
    root = _tree(tmp_path, MARKET_TREE)
    with pytest.raises(ValueError, match=r"camera outside 1\.\.4: 0004_c6s1"):
        index_market_layout(root, "market", num_cameras=4)


def test_missing_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        index_market_layout(tmp_path / "nowhere", "market")
    _tree(tmp_path, {"bounding_box_train": ["0002_c1s1_000451_03.jpg"]})
    with pytest.raises(
        FileNotFoundError, match=r"lacks query/, bounding_box_test/.*bounding_box_train"
    ):
        index_market_layout(tmp_path, "market")


def test_empty_split_fails(tmp_path: Path) -> None:
    root = _tree(tmp_path, {k: v for k, v in MARKET_TREE.items() if k != "query"})
    (root / "query").mkdir()
    with pytest.raises(ValueError, match="query: no images"):
        index_market_layout(root, "market")


def test_generated_tree_matches_its_manifest(tiny_street: Path) -> None:
    manifest = json.loads((tiny_street / "manifest.json").read_text())
    splits = index_synthperson(tiny_street)
    counts = manifest["counts"]
    summary = splits.summary()
    for split, folder in (("train", "bounding_box_train"), ("query", "query")):
        assert summary[split]["images"] == counts[folder]["images"]
        assert summary[split]["identities"] == counts[folder]["identities"]
    gallery = counts["bounding_box_test"]
    assert summary["gallery"]["images"] == gallery["images"] - gallery["junk"]
    assert splits.dropped["gallery"] == gallery["junk"] > 0
    assert sum(s.pid == 0 for s in splits.gallery) == gallery["distractors"] > 0
    assert manifest["preset"]["num_train_ids"] == summary["train"]["identities"]


def test_generated_protocol(tiny_street: Path) -> None:
    splits = index_synthperson(tiny_street)
    train_ids = {s.pid for s in splits.train}
    test_ids = {s.pid for s in splits.query}
    assert not train_ids & test_ids  # disjoint identities
    # At most one query per identity and camera, and every query has a gallery match elsewhere.
    pairs = [(s.pid, s.camid) for s in splits.query]
    assert len(pairs) == len(set(pairs))
    gallery_pairs = {(s.pid, s.camid) for s in splits.gallery}
    for pid in test_ids:
        cameras = {c for p, c in gallery_pairs if p == pid} | {c for p, c in pairs if p == pid}
        assert len(cameras) >= 2
    assert all(s.timestamp is not None for s in splits.train + splits.query + splits.gallery)
