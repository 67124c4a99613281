"""MSMT17 and VehicleID indexers on tiny hand-made trees in every accepted layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from reidgen.data.datasets.msmt17 import index_msmt17
from reidgen.data.datasets.vehicleid import index_vehicleid
from reidgen.eval.protocols import VehicleIDProtocol


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 16), (40, 160, 90)).save(path)


# ---------------------------------------------------------------------------------------------
# MSMT17

MSMT_LISTS = {
    "list_train.txt": [
        "0000/0000_000_01_0303morning_0015_0.jpg 0",
        "0000/0000_001_02_0303morning_0020_0.jpg 0",
        "0001/0001_000_15_0113noon_0100_1.jpg 1",
    ],
    "list_val.txt": ["0002/0002_000_03_0302afternoon_0005_0.jpg 2"],
    # Test lists restart their labels at 0: identity 0005 is label 1 here.
    "list_query.txt": [
        "0000/0000_000_04_0114morning_0010_0.jpg 0",
        "0005/0005_000_05_0114noon_0011_0.jpg 1",
    ],
    "list_gallery.txt": [
        "0000/0000_001_06_0114morning_0012_0.jpg 0",
        "0000/0000_002_04_0114morning_0013_0.jpg 0",
        "0005/0005_001_07_0114noon_0014_0.jpg 1",
    ],
}


def _msmt(folder: Path, version: str = "V1", lists: dict[str, list[str]] | None = None) -> Path:
    """A version folder: images for every listed line, and the list files."""
    train_dir, test_dir = (
        ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    )
    for list_name, lines in (lists or MSMT_LISTS).items():
        image_dir = train_dir if list_name in ("list_train.txt", "list_val.txt") else test_dir
        for line in lines:
            _image(folder / image_dir / line.split()[0])
        (folder / list_name).write_text("\n".join(lines) + "\n")
    return folder


def _names(samples: list) -> list[str]:
    return [Path(s.path).name for s in samples]


def test_msmt17_v1_trainval_ids_cameras_and_metadata(tmp_path: Path) -> None:
    _msmt(tmp_path / "MSMT17_V1")
    splits = index_msmt17(tmp_path)
    assert splits.variant == "MSMT17_V1 trainval"
    # Train identities p -> p + 1; test identities p -> p + 1042 (0000 is a real person).
    assert [(s.pid, s.camid) for s in splits.train] == [(1, 0), (1, 1), (2, 14), (3, 2)]
    assert [(s.pid, s.camid) for s in splits.query] == [(1042, 3), (1047, 4)]
    assert [(s.pid, s.camid) for s in splits.gallery] == [(1042, 5), (1042, 3), (1047, 6)]
    assert splits.summary() == {
        "train": {"identities": 3, "images": 4, "cameras": 4},
        "query": {"identities": 2, "images": 2, "cameras": 2},
        "gallery": {"identities": 2, "images": 3, "cameras": 3},
    }
    assert splits.dropped == {"train": 0, "query": 0, "gallery": 0}
    assert splits.expected == {
        "train": {"identities": 1041, "images": 32621, "cameras": 15},
        "query": {"identities": 3060, "images": 11659, "cameras": 15},
        "gallery": {"identities": 3060, "images": 82161, "cameras": 15},
    }
    every = splits.train + splits.query + splits.gallery
    assert all(s.dataset == "msmt17" and s.timestamp is None for s in every)
    assert all(Path(s.path).is_file() for s in every)
    assert splits.query[0].path == str(
        tmp_path / "MSMT17_V1" / "test" / "0000" / "0000_000_04_0114morning_0010_0.jpg"
    )
    for split in (splits.train, splits.query, splits.gallery):
        assert [s.path for s in split] == sorted(s.path for s in split)
        assert [s.index for s in split] == list(range(len(split)))


def test_msmt17_train_split_leaves_out_val_and_unverified_counts(tmp_path: Path) -> None:
    _msmt(tmp_path / "MSMT17_V1")
    splits = index_msmt17(tmp_path, name="msmt", split="train")
    assert splits.variant == "MSMT17_V1 train"
    assert _names(splits.train) == [
        "0000_000_01_0303morning_0015_0.jpg",
        "0000_001_02_0303morning_0020_0.jpg",
        "0001_000_15_0113noon_0100_1.jpg",
    ]
    assert {s.dataset for s in splits.train} == {"msmt"}
    assert splits.expected is not None and "train" not in splits.expected  # 30,248 unverified
    assert splits.expected["gallery"]["images"] == 82161
    # list_val.txt is not needed for the train-only split.
    (tmp_path / "MSMT17_V1" / "list_val.txt").unlink()
    assert len(index_msmt17(tmp_path, split="train").train) == 3


@pytest.mark.parametrize(
    ("layout", "version", "root_of"),
    [
        ("msmt17/MSMT17_V1", "V1", lambda tmp: tmp),  # torchreid / OpenUnReID / BoT
        ("MSMT17_V1", "V1", lambda tmp: tmp / "MSMT17_V1"),  # the version folder itself
        ("MSMT17_V2", "V2", lambda tmp: tmp),  # fast-reid, V2
        ("msmt17/MSMT17_V2", "V2", lambda tmp: tmp),
        ("renamed_copy", "V2", lambda tmp: tmp / "renamed_copy"),  # detected by its contents
    ],
)
def test_msmt17_root_layouts_and_versions(tmp_path: Path, layout, version, root_of) -> None:
    _msmt(tmp_path / layout, version)
    splits = index_msmt17(root_of(tmp_path))
    assert splits.variant == f"MSMT17_{version} trainval"
    assert (len(splits.train), len(splits.query), len(splits.gallery)) == (4, 2, 3)
    image_dir = "test" if version == "V1" else "mask_test_v2"
    assert all(Path(s.path).parent.parent.name == image_dir for s in splits.gallery)


def test_msmt17_both_versions_need_an_explicit_choice(tmp_path: Path) -> None:
    _msmt(tmp_path / "MSMT17_V1", "V1")
    _msmt(tmp_path / "MSMT17_V2", "V2")
    with pytest.raises(ValueError, match="both MSMT17 versions") as error:
        index_msmt17(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "MSMT17_V1") in message and str(tmp_path / "MSMT17_V2") in message
    assert "version='V1'" in message
    assert index_msmt17(tmp_path, version="V2").variant == "MSMT17_V2 trainval"
    assert index_msmt17(tmp_path, version="V1", split="train").variant == "MSMT17_V1 train"


def test_msmt17_missing_root_lists_every_looked_for_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        index_msmt17(tmp_path / "nowhere")
    message = str(error.value)
    for looked in (
        "nowhere/train/",
        "nowhere/MSMT17_V1/train/",
        "nowhere/msmt17/MSMT17_V1/train/",
        "nowhere/mask_train_v2/",
        "nowhere/MSMT17_V2/mask_train_v2/",
        "nowhere/msmt17/MSMT17_V2/mask_train_v2/",
        "list_{train,val,query,gallery}.txt",
    ):
        assert looked in message
    # An explicit version that is absent says which one was looked for.
    _msmt(tmp_path / "MSMT17_V1", "V1")
    with pytest.raises(FileNotFoundError, match="no MSMT17 V2 found"):
        index_msmt17(tmp_path, version="V2")


def test_msmt17_missing_list_file_is_named(tmp_path: Path) -> None:
    folder = _msmt(tmp_path / "MSMT17_V1")
    (folder / "list_gallery.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_gallery.txt"):
        index_msmt17(tmp_path)


def test_msmt17_listed_image_missing_on_disk(tmp_path: Path) -> None:
    folder = _msmt(tmp_path / "MSMT17_V1")
    (folder / "train" / "0002" / "0002_000_03_0302afternoon_0005_0.jpg").unlink()
    with pytest.raises(FileNotFoundError) as error:
        index_msmt17(tmp_path)
    message = str(error.value)
    assert "list_val.txt" in message and "0002/0002_000_03_0302afternoon_0005_0.jpg" in message
    assert "1 listed image(s)" in message


@pytest.mark.parametrize(
    ("bad_line", "expected_message"),
    [
        ("0003/0003_000_02.jpg 3", r"do not match the msmt17 naming \(expected e\.g\. 0000_000_01"),
        ("0003/0003_000_02_0303noon_0001_0.jpg", r"not '<relative path> <integer label>'"),
        ("0003/0003_000_02_0303noon_0001_0.jpg x", r"line 4: "),
        ("0004/0003_000_02_0303noon_0001_0.jpg 3", "sit in a folder that is not their identity"),
        ("0003/0003_000_16_0303noon_0001_0.jpg 3", r"camera outside 1\.\.15"),
        ("0003/0003_000_00_0303noon_0001_0.jpg 3", r"camera outside 1\.\.15"),
        ("0003/0003_000_02_0303noon_0001_0.jpg 1", "labels do not match the identities"),
        ("0000/0000_000_01_0303morning_0015_0.jpg 0", "listed more than once"),
    ],
)
def test_msmt17_bad_list_lines(tmp_path: Path, bad_line: str, expected_message: str) -> None:
    lists = {**MSMT_LISTS, "list_train.txt": [*MSMT_LISTS["list_train.txt"], bad_line]}
    if bad_line.endswith(" 0"):  # the duplicate: spread over train and val
        lists = {**MSMT_LISTS, "list_val.txt": [*MSMT_LISTS["list_val.txt"], bad_line]}
    _msmt(tmp_path / "MSMT17_V1", lists=lists)
    with pytest.raises(ValueError, match=expected_message) as error:
        index_msmt17(tmp_path)
    assert "list_" in str(error.value)


def test_msmt17_training_ids_beyond_1040_are_rejected(tmp_path: Path) -> None:
    lists = {**MSMT_LISTS, "list_val.txt": ["1041/1041_000_03_0302noon_0005_0.jpg 1041"]}
    _msmt(tmp_path / "MSMT17_V1", lists=lists)
    with pytest.raises(ValueError, match="above 1040"):
        index_msmt17(tmp_path)


# ---------------------------------------------------------------------------------------------
# VehicleID

VEHICLE_LISTS = {
    "train_list.txt": ["0000001 1", "0000002 1", "0000003 1", "0000004 2", "0000005 2"],
    "test_list_800.txt": ["0000010 10", "0000011 10", "0000012 11"],
    "test_list_1600.txt": ["0000010 10", "0000011 10", "0000012 11", "0000013 12"],
    "test_list_13164.txt": ["0000010 10", "0000014 13"],
}


def _vehicleid(folder: Path) -> Path:
    (folder / "train_test_split").mkdir(parents=True)
    for list_name, lines in VEHICLE_LISTS.items():
        for line in lines:
            _image(folder / "image" / f"{line.split()[0]}.jpg")
        (folder / "train_test_split" / list_name).write_text("\n".join(lines) + "\n")
    return folder


def test_vehicleid_train_and_test_pool(tmp_path: Path) -> None:
    _vehicleid(tmp_path / "VehicleID_V1.0")
    splits = index_vehicleid(tmp_path)
    assert splits.variant == "VehicleID test-800"
    assert [s.pid for s in splits.train] == [1, 1, 1, 2, 2]
    assert [(Path(s.path).name, s.pid) for s in splits.gallery] == [
        ("0000010.jpg", 10),
        ("0000011.jpg", 10),
        ("0000012.jpg", 11),
    ]
    assert splits.query == []  # the protocol draws query and gallery from the pool itself
    every = splits.train + splits.gallery
    assert all(s.camid == 0 and s.timestamp is None and s.dataset == "vehicleid" for s in every)
    assert all(Path(s.path).is_file() for s in every)
    assert splits.dropped == {"train": 0, "query": 0, "gallery": 0}
    assert splits.expected == {
        "train": {"identities": 13164, "images": 113346},
        "gallery": {"identities": 800, "images": 6493},
    }
    assert [s.index for s in splits.gallery] == [0, 1, 2]
    # The contract with VehicleIDProtocol: one gallery image per vehicle, the rest are queries.
    (query, gallery), *_ = VehicleIDProtocol(repeats=1).splits([s.pid for s in splits.gallery])
    assert len(gallery) == 2 and len(query) == 1


@pytest.mark.parametrize(
    ("test_size", "expected_gallery"),
    [
        (1600, {"identities": 1600, "images": 13377}),
        (13164, None),  # present on disk, but no published count
    ],
)
def test_vehicleid_test_sizes(tmp_path: Path, test_size: int, expected_gallery) -> None:
    _vehicleid(tmp_path / "VehicleID_V1.0")
    splits = index_vehicleid(tmp_path, name="vid", test_size=test_size)
    assert splits.variant == f"VehicleID test-{test_size}"
    assert len(splits.gallery) == len(VEHICLE_LISTS[f"test_list_{test_size}.txt"])
    assert splits.expected is not None
    assert splits.expected.get("gallery") == expected_gallery
    assert {s.dataset for s in splits.train + splits.gallery} == {"vid"}


@pytest.mark.parametrize(
    ("layout", "root_of"),
    [
        ("VehicleID_V1.0", lambda tmp: tmp / "VehicleID_V1.0"),  # the dataset folder itself
        ("vehicleid", lambda tmp: tmp),  # fast-reid
        ("vehicleid/VehicleID_V1.0", lambda tmp: tmp),
        ("anything", lambda tmp: tmp / "anything"),
    ],
)
def test_vehicleid_root_layouts(tmp_path: Path, layout: str, root_of) -> None:
    _vehicleid(tmp_path / layout)
    splits = index_vehicleid(root_of(tmp_path), test_size=1600)
    assert (len(splits.train), len(splits.gallery)) == (5, 4)


def test_vehicleid_missing_root_lists_candidates(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        index_vehicleid(tmp_path)
    message = str(error.value)
    for candidate in ("VehicleID_V1.0", "vehicleid", "vehicleid/VehicleID_V1.0"):
        assert f"{tmp_path / candidate} (does not exist)" in message
    assert f"{tmp_path} (lacks image/, train_test_split/)" in message


def test_vehicleid_missing_test_list_names_it_and_what_exists(tmp_path: Path) -> None:
    _vehicleid(tmp_path / "VehicleID_V1.0")
    with pytest.raises(FileNotFoundError, match="test_list_2400.txt not found") as error:
        index_vehicleid(tmp_path, test_size=2400)
    assert "test_list_1600.txt" in str(error.value)
    with pytest.raises(ValueError, match="positive integer"):
        index_vehicleid(tmp_path, test_size=0)


def test_vehicleid_listed_image_missing(tmp_path: Path) -> None:
    folder = _vehicleid(tmp_path / "VehicleID_V1.0")
    (folder / "image" / "0000012.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_list_800\.txt: 1 listed image.*0000012"):
        index_vehicleid(tmp_path)


@pytest.mark.parametrize(
    ("bad_line", "expected_message"),
    [
        ("0000020.jpg 20", r"line 4: '0000020\.jpg 20'"),
        ("0000020", "do not match '<image name without .jpg> <vehicle id>'"),
        ("0000012 11", "listed more than once"),
        ("0000020 1", r"share 1 vehicle id\(s\).*: 1$"),
    ],
)
def test_vehicleid_bad_lists(tmp_path: Path, bad_line: str, expected_message: str) -> None:
    folder = _vehicleid(tmp_path / "VehicleID_V1.0")
    lines = [*VEHICLE_LISTS["test_list_800.txt"], bad_line]
    (folder / "train_test_split" / "test_list_800.txt").write_text("\n".join(lines) + "\n")
    _image(folder / "image" / "0000020.jpg")
    with pytest.raises(ValueError, match=expected_message):
        index_vehicleid(tmp_path)


def test_msmt17_all_split_trains_on_every_image_with_distinct_test_ids(tmp_path: Path) -> None:
    _msmt(tmp_path / "MSMT17_V1")
    splits = index_msmt17(tmp_path, split="all")
    assert splits.variant == "MSMT17_V1 all"
    # train + val (pids 1..3) then query + gallery (pids 1042.., never colliding with train)
    assert sorted((s.pid, s.camid) for s in splits.train) == sorted(
        [(1, 0), (1, 1), (2, 14), (3, 2), (1042, 3), (1047, 4), (1042, 5), (1042, 3), (1047, 6)]
    )
    assert [s.index for s in splits.train] == list(range(9))
    assert splits.expected["train"] == {"identities": 4101, "images": 126441, "cameras": 15}
    with pytest.raises(ValueError, match="'all'"):
        index_msmt17(tmp_path, split="everything")
