"""RandPerson, PersonX, UnrealPerson and ClonedPerson indexers on tiny hand-made trees."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from reidgen.data.datasets.synthetic import (
    PERSONX_SUBSET1,
    RANDPERSON_SUBSET,
    UNREAL_TRAIN_LIST,
    index_clonedperson,
    index_personx,
    index_randperson,
    index_unrealperson,
)
from reidgen.data.sample import Splits


def _images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 16), (40, 160, 90)).save(folder / name)
    return folder


def _by_name(samples: list) -> dict:
    return {Path(s.path).name: s for s in samples}


def _assert_sorted(splits: Splits) -> None:
    for split in (splits.train, splits.query, splits.gallery):
        assert [s.path for s in split] == sorted(s.path for s in split)
        assert [s.index for s in split] == list(range(len(split)))


# --- RandPerson -------------------------------------------------------------------------------

RANDPERSON = [
    "000000_s00_c00_f000228.jpg",
    "000000_c01_s00_f000264.jpg",  # the older field order: camera before scene
    "000001_s05_c00_f000048.jpg",
    "000007_s10_c03_f000024.jpg",
]


def test_randperson_ids_cameras_timestamps(tmp_path: Path) -> None:
    _images(tmp_path / "randperson_subset", RANDPERSON)
    splits = index_randperson(tmp_path)
    by_name = _by_name(splits.train)
    # pid + 1 (RandPerson counts from 0); camera = scene offset + scene-local camera;
    # time = (scene frame offset + frame) / 24.
    expected = {
        "000000_s00_c00_f000228.jpg": (1, 0, 228 / 24),
        "000000_c01_s00_f000264.jpg": (1, 1, 264 / 24),
        "000001_s05_c00_f000048.jpg": (2, 9, (1_070_000 + 48) / 24),
        "000007_s10_c03_f000024.jpg": (8, 18, (3_490_000 + 24) / 24),
    }
    for name, (pid, camid, seconds) in expected.items():
        sample = by_name[name]
        assert (sample.pid, sample.camid) == (pid, camid)
        assert sample.timestamp == pytest.approx(seconds)
        assert sample.dataset == "randperson"
    assert splits.query == [] and splits.gallery == []
    assert splits.dropped == {"train": 0, "query": 0, "gallery": 0}
    assert splits.variant == "RandPerson subset (_s_c_ and _c_s_ names)"
    assert splits.expected == RANDPERSON_SUBSET
    assert splits.expected["train"] == {"identities": 8000, "images": 132145, "cameras": 19}
    assert splits.summary()["train"] == {"identities": 3, "images": 4, "cameras": 4}
    _assert_sorted(splits)
    assert index_randperson(tmp_path, fps=None).train[0].timestamp is None


@pytest.mark.parametrize("layout", ["", "randperson_subset", "randperson_subset/randperson_subset"])
def test_randperson_root_layouts(tmp_path: Path, layout: str) -> None:
    _images(tmp_path / layout, RANDPERSON[:1] + RANDPERSON[2:3])
    splits = index_randperson(tmp_path, name="rp")
    assert [s.camid for s in splits.train] == [0, 9]
    assert splits.variant == "RandPerson subset (_s_c_ names)"
    assert all(s.dataset == "rp" for s in splits.train)


def test_randperson_missing_root_lists_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        index_randperson(tmp_path / "nowhere")
    message = str(error.value)
    for path in ("nowhere", "nowhere/randperson_subset", "randperson_subset/randperson_subset"):
        assert path in message
    assert "000000_s00_c00_f000228.jpg" in message


def test_randperson_malformed_and_out_of_range_names(tmp_path: Path) -> None:
    folder = _images(tmp_path / "bad", RANDPERSON[:1] + ["000001_s00_s01_f000001.jpg", "x.jpg"])
    with pytest.raises(ValueError) as error:
        index_randperson(folder)
    message = str(error.value)
    assert "2 file name(s)" in message and "x.jpg" in message and "000001_s00_s01" in message
    assert "000000_s00_c00_f000228.jpg" in message  # the expected example

    # Scene 04 owns one camera (offsets 8, 9): c01 would collide with scene 05's c00.
    folder = _images(tmp_path / "range", ["000001_s04_c01_f000001.jpg", "000001_s11_c00_f1.jpg"])
    with pytest.raises(ValueError, match=r"2 file\(s\) name a scene outside 00-10"):
        index_randperson(folder)


# --- ClonedPerson -----------------------------------------------------------------------------


def _clonedperson(root: Path) -> Path:
    _images(
        root / "train",
        [
            "700000_s02_c00_f000024.jpg",
            "700000_s03_c00_f000048.jpg",
            "700001_c01_s02_f000072.jpg",
        ],
    )
    _images(root / "test" / "query", ["700100_s02_c00_f000240.jpg"])
    _images(
        root / "test" / "gallery",
        ["700100_s03_c01_f000480.jpg", "700100_s02_c00_f000010.jpg", "-1_s02_c00_f000001.jpg"],
    )
    return root


def test_clonedperson_cameras_keyed_by_scene(tmp_path: Path) -> None:
    _clonedperson(tmp_path / "ClonedPerson")
    splits = index_clonedperson(tmp_path)
    train = _by_name(splits.train)
    # (scene, camera) pairs (2,0) (2,1) (3,0) (3,1) -> 0..3: s03_c00 is not s02_c00.
    assert train["700000_s02_c00_f000024.jpg"].camid == 0
    assert train["700001_c01_s02_f000072.jpg"].camid == 1
    assert train["700000_s03_c00_f000048.jpg"].camid == 2
    gallery = _by_name(splits.gallery)
    assert gallery["700100_s03_c01_f000480.jpg"].camid == 3
    assert gallery["700100_s03_c01_f000480.jpg"].timestamp == pytest.approx(20.0)
    assert splits.query[0].pid == 700100 and splits.query[0].timestamp == pytest.approx(10.0)
    assert splits.dropped == {"train": 0, "query": 0, "gallery": 1}  # the -1 junk
    assert splits.summary() == {
        "train": {"identities": 2, "images": 3, "cameras": 3},
        "query": {"identities": 1, "images": 1, "cameras": 1},
        "gallery": {"identities": 1, "images": 2, "cameras": 2},
    }
    assert splits.variant == "ClonedPerson (_s_c_ and _c_s_ names)"
    assert splits.expected is None
    _assert_sorted(splits)
    # The dataset folder itself is accepted too.
    direct = index_clonedperson(tmp_path / "ClonedPerson", fps=None)
    assert [s.path for s in direct.train] == [s.path for s in splits.train]
    assert direct.train[0].timestamp is None


def test_clonedperson_missing_layout(tmp_path: Path) -> None:
    _images(tmp_path / "train", ["700000_s02_c00_f000024.jpg"])  # no test/ folders
    with pytest.raises(FileNotFoundError) as error:
        index_clonedperson(tmp_path)
    message = str(error.value)
    assert f"{tmp_path} (lacks test/query/, test/gallery/)" in message
    assert f"{tmp_path / 'clonedperson'} (does not exist)" in message


# --- PersonX ----------------------------------------------------------------------------------


def _personx_subset(folder: Path, cameras: tuple[int, ...] = (3, 4, 8, 10, 11, 12)) -> Path:
    first, second, *rest = cameras
    _images(
        folder / "bounding_box_train",
        [f"0001_c{first}_0001.jpg", f"0001_c{second}_0002.jpg", "0000_c3_0001.jpg"],
    )
    _images(folder / "query", [f"0500_c{rest[0] if rest else first}_0001.jpg"])
    _images(
        folder / "bounding_box_test",
        [f"0500_c{c}_0002.jpg" for c in rest or (second,)] + ["-1_c3_0009.jpg"],
    )
    return folder


def test_personx_subset1(tmp_path: Path) -> None:
    _personx_subset(tmp_path / "personx" / "subset1")
    splits = index_personx(tmp_path)
    # Cameras 3, 4, 8, 10, 11, 12 become 0..5 in numeric order.
    assert [s.camid for s in splits.train] == [0, 1]
    assert sorted(s.camid for s in splits.gallery) == [2, 3, 4, 5]
    assert {s.pid for s in splits.gallery} == {500}
    # pid 0 (PersonX's start-up copy of pid 1) and -1 are dropped everywhere.
    assert splits.dropped == {"train": 1, "query": 0, "gallery": 1}
    assert splits.variant == "PersonX subset1"
    assert splits.expected == PERSONX_SUBSET1
    assert splits.expected["gallery"] == {"identities": 856, "images": 30816, "cameras": 6}
    assert all(s.timestamp is None for s in splits.train + splits.query + splits.gallery)
    _assert_sorted(splits)
    direct = index_personx(tmp_path / "personx" / "subset1")
    assert direct.variant == "PersonX subset1"
    assert [s.path for s in direct.gallery] == [s.path for s in splits.gallery]


def test_personx_456_cameras_keyed_by_subset(tmp_path: Path) -> None:
    for subset in ("1", "4", "5", "6"):
        _personx_subset(tmp_path / "PersonX_v1" / subset, cameras=(1, 2))
    splits = index_personx(tmp_path)
    assert splits.variant == "PersonX 4+5+6"
    assert splits.expected is None
    # The same camera number in three subsets is three cameras; pid 1 is one person.
    assert splits.summary()["train"] == {"identities": 1, "images": 6, "cameras": 6}
    assert sorted({s.camid for s in splits.train}) == [0, 1, 2, 3, 4, 5]
    picked = index_personx(tmp_path / "PersonX_v1", subsets=["1"])
    assert picked.variant == "PersonX 1"
    assert picked.summary()["train"]["cameras"] == 2


def test_personx_ambiguous_missing_and_malformed(tmp_path: Path) -> None:
    for subset in ("1", "2"):
        _personx_subset(tmp_path / "PersonX_v1" / subset)
    with pytest.raises(ValueError, match=r"several PersonX subsets \(1, 2\).*subsets="):
        index_personx(tmp_path)
    with pytest.raises(FileNotFoundError, match="lacks the PersonX subset"):
        index_personx(tmp_path, subsets=["9"])
    with pytest.raises(FileNotFoundError) as error:
        index_personx(tmp_path / "elsewhere")
    assert str(tmp_path / "elsewhere" / "PersonX_v1") in str(error.value)
    _images(tmp_path / "PersonX_v1" / "2" / "query", ["person_one.jpg"])
    with pytest.raises(ValueError, match=r"1 file name\(s\) do not match the PersonX naming"):
        index_personx(tmp_path, subsets=["2"])


@pytest.mark.parametrize("split", ["bounding_box_train", "query", "bounding_box_test"])
def test_personx_empty_split_folder_is_named(tmp_path: Path, split: str) -> None:
    # A realistic broken copy: subset1's split folder exists but holds no image, only the
    # Windows thumbnail cache that real copies carry.
    subset = _personx_subset(tmp_path / "personx" / "subset1")
    for image in (subset / split).iterdir():
        image.unlink()
    (subset / split / "Thumbs.db").write_bytes(b"\0")
    with pytest.raises(ValueError, match="no images") as error:
        index_personx(tmp_path)
    assert str(subset / split) in str(error.value)


def test_personx_empty_split_in_one_of_several_subsets(tmp_path: Path) -> None:
    for subset in ("4", "5", "6"):
        _personx_subset(tmp_path / "PersonX_v1" / subset, cameras=(1, 2))
    query = tmp_path / "PersonX_v1" / "5" / "query"
    for image in query.iterdir():
        image.unlink()
    with pytest.raises(ValueError, match="no images") as error:
        index_personx(tmp_path)
    assert str(query) in str(error.value)
    # The other subsets alone still index.
    assert index_personx(tmp_path / "PersonX_v1", subsets=["4", "6"]).variant == "PersonX 4+6"


# --- UnrealPerson -----------------------------------------------------------------------------

UNREAL = {
    "unreal_v1.1": ["333_c001_78.jpg"],
    "unreal_v1.2": ["333_c001_80.jpg"],
    "unreal_v2.1": ["333_c001_5.jpg", "12_c002_7.jpg"],
}
UNREAL_LIST = (
    "data/unreal_v1.1/images/333_c001_78.jpg 0 0 \n"  # the CBN writer's trailing space
    "data/unreal_v1.2/images/333_c001_80.jpg 1 0 \n"
    "\n"
    "/abs/elsewhere/unreal_v2.1/images/333_c001_5.jpg 0 1 \n"
)


def _unreal(base: Path) -> Path:
    for folder, names in UNREAL.items():
        _images(base / folder / "images", names)
    return base


def test_unrealperson_list_defines_the_benchmark(tmp_path: Path) -> None:
    _unreal(tmp_path)
    (tmp_path / "list_unreal_train.txt").write_text(UNREAL_LIST)
    splits = index_unrealperson(tmp_path)
    got = {
        (Path(s.path).parent.parent.name, Path(s.path).name): (s.pid, s.camid) for s in splits.train
    }
    # pid = version * 100000 + P; cameras (environment, D) sorted: (1,1) (2,1).
    assert got == {
        ("unreal_v1.1", "333_c001_78.jpg"): (100333, 0),
        ("unreal_v1.2", "333_c001_80.jpg"): (200333, 0),
        ("unreal_v2.1", "333_c001_5.jpg"): (100333, 1),
    }
    assert all(Path(s.path).is_file() and s.timestamp is None for s in splits.train)
    assert splits.query == [] and splits.gallery == []
    assert splits.variant == "UnrealPerson list_unreal_train.txt"
    assert splits.expected == UNREAL_TRAIN_LIST
    assert splits.expected["train"] == {"identities": 3000, "images": 120000, "cameras": 34}
    _assert_sorted(splits)

    everything = index_unrealperson(tmp_path, list_file=None)
    assert everything.summary()["train"] == {"identities": 3, "images": 4, "cameras": 3}
    assert everything.variant == "UnrealPerson all images (3 folders)"
    assert everything.expected is None


def test_unrealperson_nested_layout_and_other_list(tmp_path: Path) -> None:
    _unreal(tmp_path / "unreal")
    (tmp_path / "list_unreal").mkdir()
    (tmp_path / "list_unreal" / "my_list.txt").write_text("unreal_v2.1/images/12_c002_7.jpg 5 2\n")
    splits = index_unrealperson(tmp_path, list_file="my_list.txt")
    assert [(s.pid, s.camid) for s in splits.train] == [(100012, 0)]
    assert splits.variant == "UnrealPerson my_list.txt"
    assert splits.expected is None


def test_unrealperson_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        index_unrealperson(tmp_path)
    assert str(tmp_path / "UnrealPerson") in str(error.value)
    _unreal(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        index_unrealperson(tmp_path)  # no list file
    assert str(tmp_path / "list_unreal" / "list_unreal_train.txt") in str(error.value)
    assert "list_file=None" in str(error.value)

    listing = tmp_path / "list_unreal_train.txt"
    listing.write_text("unreal_v1.1/images/333_c001_78.jpg 0 0\nunreal_v1.1/images/9.jpg zero\n")
    with pytest.raises(ValueError, match=r"list_unreal_train.txt:2: expected 'relative/path"):
        index_unrealperson(tmp_path)
    listing.write_text("images/333_c001_78.jpg 0 0\n")
    with pytest.raises(ValueError, match=r":1: path 'images/333_c001_78.jpg' does not end in"):
        index_unrealperson(tmp_path)
    listing.write_text("unreal_v1.1/images/404_c001_1.jpg 0 0\n")
    with pytest.raises(FileNotFoundError, match=r"1 of 1 listed image\(s\) are missing"):
        index_unrealperson(tmp_path)
    _images(tmp_path / "unreal_v1.1" / "images", ["333-c001.jpg"])
    with pytest.raises(ValueError, match=r"do not match the UnrealPerson naming.*333-c001"):
        index_unrealperson(tmp_path, list_file=None)
