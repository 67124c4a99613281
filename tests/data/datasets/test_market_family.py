"""Market-1501, DukeMTMC-reID, CUHK03-NP and VeRi-776 indexers on tiny hand-made trees."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from reidgen.data.datasets.cuhk03 import index_cuhk03_np
from reidgen.data.datasets.market import index_dukemtmc, index_market1501
from reidgen.data.datasets.veri import index_veri776
from reidgen.data.sample import Sample, Splits


def _tree(root: Path, files: dict[str, list[str]]) -> Path:
    for folder, names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (8, 16), (40, 90, 160)).save(root / folder / name)
    return root


def _names(samples: list[Sample]) -> dict[str, Sample]:
    return {Path(s.path).name: s for s in samples}


def _check_sorted(splits: Splits) -> None:
    for split in (splits.train, splits.query, splits.gallery):
        assert [s.path for s in split] == sorted(s.path for s in split)
        assert [s.index for s in split] == list(range(len(split)))


# --- Market-1501 -------------------------------------------------------------------------------

MARKET = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000301_01.jpg",
        "0007_c6s2_000050_01.jpg",
        "-1_c1s1_000401_03.jpg",
    ],
    "query": ["0003_c1s1_000551_01.jpg", "0004_c2s2_000020_01.jpg"],
    "bounding_box_test": [
        "0003_c2s1_000700_01.jpg",
        "0004_c6s1_000100_01.jpg",
        "0000_c4s1_000010_05.jpg",
        "-1_c1s1_000551_02.jpg",
    ],
}


@pytest.mark.parametrize(
    ("sub", "variant"),
    [
        ("", "Market-1501"),
        ("Market-1501-v15.09.15", "Market-1501-v15.09.15"),
        ("Market-1501", "Market-1501"),
    ],
)
def test_market1501_layouts(tmp_path: Path, sub: str, variant: str) -> None:
    _tree(tmp_path / sub, MARKET)
    splits = index_market1501(tmp_path)
    assert splits.variant == variant
    assert splits.name == "market1501"
    assert [(s.pid, s.camid) for s in splits.train] == [(2, 0), (2, 1), (7, 5)]
    assert sorted(s.pid for s in splits.gallery) == [0, 3, 4]  # distractor kept, junk dropped
    assert splits.dropped == {"train": 1, "query": 0, "gallery": 1}
    assert splits.expected == {
        "train": {"identities": 751, "images": 12_936, "cameras": 6},
        "query": {"identities": 750, "images": 3_368, "cameras": 6},
        "gallery": {"identities": 750, "images": 15_913, "cameras": 6},
    }
    _check_sorted(splits)


def test_market1501_timestamps_follow_qaconv(tmp_path: Path) -> None:
    splits = index_market1501(_tree(tmp_path, MARKET))
    ts = {n: s.timestamp for n, s in _names(splits.train + splits.query + splits.gallery).items()}
    # Camera 2, sequence 1 ends at frame 700 (gallery) -> sequence 2 starts there.
    assert ts["0004_c2s2_000020_01.jpg"] == pytest.approx((700 + 20) / 25)
    # Camera 6, sequence 1 ends at frame 100 (gallery) -> train's s2 frame 50 is at 150.
    assert ts["0007_c6s2_000050_01.jpg"] == pytest.approx(150 / 25)
    assert ts["0002_c1s1_000451_03.jpg"] == pytest.approx(451 / 25)


def test_market1501_500k_distractors(tmp_path: Path) -> None:
    _tree(
        tmp_path / "Market-1501-v15.09.15",
        {**MARKET, "images": ["0000_c1s3_000100_00.jpg", "0012_c5s4_000200_01.jpg"]},
    )
    plain = index_market1501(tmp_path)
    splits = index_market1501(tmp_path, name="m500k", distractors_500k=True)
    assert splits.variant == "Market-1501-v15.09.15 +500k"
    assert len(splits.gallery) == len(plain.gallery) + 2
    extra = [s for s in splits.gallery if "/images/" in s.path]
    # Every extra image is a distractor, whatever pid its name carries; no clock for them.
    assert [(s.pid, s.camid, s.timestamp, s.dataset) for s in extra] == [
        (0, 0, None, "m500k"),
        (0, 4, None, "m500k"),
    ]
    assert splits.expected["gallery"]["images"] == 515_913
    assert plain.expected["gallery"]["images"] == 15_913  # the constant was not mutated
    assert splits.summary()["gallery"]["identities"] == 2
    _check_sorted(splits)


def test_market1501_500k_errors(tmp_path: Path) -> None:
    _tree(tmp_path, MARKET)
    with pytest.raises(FileNotFoundError, match=r"distractors_500k.*images/"):
        index_market1501(tmp_path, distractors_500k=True)
    _tree(tmp_path, {"images": ["0000_c1s3_000100_00.jpg", "distractor_17.jpg"]})
    with pytest.raises(
        ValueError, match=r"images: 1 file name.*0002_c1s1_000451_03.*distractor_17"
    ):
        index_market1501(tmp_path, distractors_500k=True)


def test_market1501_missing_root_lists_every_candidate(tmp_path: Path) -> None:
    _tree(tmp_path, {"bounding_box_train": ["0002_c1s1_000451_03.jpg"]})
    with pytest.raises(FileNotFoundError) as error:
        index_market1501(tmp_path)
    message = str(error.value)
    assert "bounding_box_train/, query/, bounding_box_test/" in message
    assert f"{tmp_path} (lacks query/, bounding_box_test/)" in message
    assert f"{tmp_path / 'Market-1501-v15.09.15'} (does not exist)" in message
    assert f"{tmp_path / 'Market-1501'} (does not exist)" in message


def test_market1501_bad_names_and_cameras(tmp_path: Path) -> None:
    _tree(tmp_path, MARKET)
    _tree(tmp_path, {"query": ["0005_c7s1_000001_01.jpg"]})
    with pytest.raises(ValueError, match=r"camera outside 1\.\.6: 0005_c7s1"):
        index_market1501(tmp_path)
    (tmp_path / "query" / "0005_c7s1_000001_01.jpg").unlink()
    _tree(tmp_path, {"bounding_box_test": ["0005_c2_f0046985.jpg"]})
    with pytest.raises(ValueError, match=r"bounding_box_test: 1 file name.*0005_c2_f0046985"):
        index_market1501(tmp_path)


# --- DukeMTMC-reID -----------------------------------------------------------------------------

DUKE = {
    "bounding_box_train": ["0005_c2_f0046985.jpg", "0005_c8_f0000001.jpg"],
    "query": ["0019_c1_f0000100.jpg"],
    "bounding_box_test": ["0019_c5_f0000200.jpg", "0420_c3_f0000300.jpg"],
}


@pytest.mark.parametrize("sub", ["", "DukeMTMC-reID"])
def test_dukemtmc_layouts_and_clock(tmp_path: Path, sub: str) -> None:
    _tree(tmp_path / sub, DUKE)
    splits = index_dukemtmc(tmp_path)
    assert splits.variant == "DukeMTMC-reID"
    assert [(s.pid, s.camid) for s in splits.train] == [(5, 1), (5, 7)]
    ts = {n: s.timestamp for n, s in _names(splits.train + splits.query + splits.gallery).items()}
    assert ts["0005_c2_f0046985.jpg"] == pytest.approx((46985 + 3606) / 59.94)
    assert ts["0005_c8_f0000001.jpg"] == pytest.approx((1 + 46765) / 59.94)
    assert ts["0019_c1_f0000100.jpg"] == pytest.approx((100 + 5542) / 59.94)
    assert ts["0019_c5_f0000200.jpg"] == pytest.approx(200 / 59.94)
    assert splits.dropped == {"train": 0, "query": 0, "gallery": 0}
    assert splits.expected == {
        "train": {"identities": 702, "images": 16_522, "cameras": 8},
        "query": {"identities": 702, "images": 2_228, "cameras": 8},
        "gallery": {"identities": 1_110, "images": 17_661, "cameras": 8},
    }
    _check_sorted(splits)


def test_dukemtmc_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"(?s)nowhere \(does not exist\).*DukeMTMC-reID"):
        index_dukemtmc(tmp_path / "nowhere")
    _tree(tmp_path, {**DUKE, "query": ["0019_c9_f0000100.jpg"]})
    with pytest.raises(ValueError, match=r"camera outside 1\.\.8"):
        index_dukemtmc(tmp_path)
    (tmp_path / "query" / "0019_c9_f0000100.jpg").unlink()
    _tree(tmp_path, {"query": ["0002_c1s1_000451_03.jpg"]})
    with pytest.raises(ValueError, match=r"duke naming \(expected e\.g\. 0005_c2_f0046985"):
        index_dukemtmc(tmp_path)


# --- CUHK03-NP ---------------------------------------------------------------------------------

CUHK = {
    "bounding_box_train": ["0001_c1_1.png", "0001_c2_6.png", "0003_c2_7.png"],
    "query": ["0800_c1_1.png", "0801_c2_6.png"],
    "bounding_box_test": ["0800_c2_7.png", "0801_c1_2.png", "0802_c1_3.png"],
}


@pytest.mark.parametrize(
    ("sub", "root_sub", "variant"),
    [
        ("cuhk03-np/detected", "", "detected"),
        ("cuhk03_np/labeled", "", "labeled"),
        ("CUHK03-NP/detected", "", "detected"),
        ("cuhk03-np/labeled", "cuhk03-np", "labeled"),
        ("detected", "detected", "detected"),
    ],
)
def test_cuhk03_np_layouts(tmp_path: Path, sub: str, root_sub: str, variant: str) -> None:
    _tree(tmp_path / sub, CUHK)
    splits = index_cuhk03_np(tmp_path / root_sub, variant=variant)
    assert splits.variant == f"CUHK03-NP {variant}"
    assert splits.name == "cuhk03_np"
    assert [(s.pid, s.camid) for s in splits.train] == [(1, 0), (1, 1), (3, 1)]
    assert splits.summary()["gallery"] == {"identities": 3, "images": 3, "cameras": 2}
    assert all(s.timestamp is None for s in splits.train + splits.query + splits.gallery)
    assert splits.expected["train"] == {
        "identities": 767,
        "images": 7_365 if variant == "detected" else 7_368,
        "cameras": 2,
    }
    assert splits.expected["gallery"]["images"] == (5_332 if variant == "detected" else 5_328)
    assert splits.expected["query"] == {"identities": 700, "images": 1_400, "cameras": 2}
    _check_sorted(splits)


def test_cuhk03_np_picks_the_asked_variant(tmp_path: Path) -> None:
    _tree(tmp_path / "cuhk03-np" / "detected", CUHK)
    _tree(tmp_path / "cuhk03-np" / "labeled", {k: v[:1] for k, v in CUHK.items()})
    assert len(index_cuhk03_np(tmp_path).train) == 3
    assert len(index_cuhk03_np(tmp_path, variant="labeled").train) == 1
    with pytest.raises(ValueError, match=r"is the 'labeled' copy.*variant='detected'"):
        index_cuhk03_np(tmp_path / "cuhk03-np" / "labeled", variant="detected")
    with pytest.raises(ValueError, match=r"variant must be one of"):
        index_cuhk03_np(tmp_path, variant="classic")


def test_cuhk03_np_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        index_cuhk03_np(tmp_path, variant="labeled")
    message = str(error.value)
    for looked in ("cuhk03-np/labeled", "cuhk03_np/labeled", "CUHK03-NP/labeled", "labeled"):
        assert f"{tmp_path / looked} (does not exist)" in message
    assert f"{tmp_path} (lacks bounding_box_train/, query/, bounding_box_test/)" in message
    _tree(tmp_path / "cuhk03-np" / "detected", {**CUHK, "query": ["0800_c3_1.png"]})
    with pytest.raises(ValueError, match=r"camera outside 1\.\.2: 0800_c3_1\.png"):
        index_cuhk03_np(tmp_path)
    _tree(tmp_path / "cuhk03-np" / "detected", {"query": ["1_001_1_01.png"]})
    with pytest.raises(ValueError, match=r"cuhk03-np naming \(expected e\.g\. 0001_c1_1\.png"):
        index_cuhk03_np(tmp_path)


# --- VeRi-776 ----------------------------------------------------------------------------------

VERI = {
    "image_train": ["0001_c001_00016450_0.jpg", "0001_c020_00016500_1.jpg"],
    "image_query": ["0002_c002_00030600_0.jpg"],
    "image_test": ["0002_c002_00030610_0.jpg", "0002_c014_00031000_0.jpg"],
}


def _lists(root: Path) -> None:
    for split, folder in (
        ("train", "image_train"),
        ("query", "image_query"),
        ("test", "image_test"),
    ):
        (root / f"name_{split}.txt").write_text("\n".join(VERI[folder]) + "\n")


@pytest.mark.parametrize("sub", ["", "VeRi", "veri"])
def test_veri776_layouts(tmp_path: Path, sub: str) -> None:
    _tree(tmp_path / sub, VERI)
    splits = index_veri776(tmp_path)
    assert splits.variant == "VeRi-776"
    assert [(s.pid, s.camid) for s in splits.train] == [(1, 0), (1, 19)]
    assert [(s.pid, s.camid) for s in splits.gallery] == [(2, 1), (2, 13)]
    # Same-vehicle same-camera images are junk only at scoring time (VeRiProtocol).
    assert splits.dropped == {"train": 0, "query": 0, "gallery": 0}
    assert all(s.timestamp is None for s in splits.train + splits.query + splits.gallery)
    assert splits.expected == {
        "train": {"identities": 576, "images": 37_778, "cameras": 20},
        "query": {"identities": 200, "images": 1_678, "cameras": 19},
        "gallery": {"identities": 200, "images": 11_579},
    }
    _check_sorted(splits)


def test_veri776_name_lists(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _tree(tmp_path, VERI)
    _lists(tmp_path)
    splits = index_veri776(tmp_path)
    assert splits.variant == "VeRi-776 (name lists checked: train, query, gallery)"
    _tree(tmp_path, {"image_test": ["0003_c005_00040000_0.jpg"]})
    with caplog.at_level(logging.WARNING):
        assert len(index_veri776(tmp_path).gallery) == 3
    assert "1 image(s)" in caplog.text and "0003_c005_00040000_0.jpg" in caplog.text
    (tmp_path / "image_query" / "0002_c002_00030600_0.jpg").unlink()
    _tree(tmp_path, {"image_query": ["0004_c003_00000001_0.jpg"]})
    with pytest.raises(
        FileNotFoundError, match=r"1 file\(s\) listed in .*name_query\.txt.*0002_c002_00030600_0"
    ):
        index_veri776(tmp_path)


def test_veri776_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        index_veri776(tmp_path)
    message = str(error.value)
    assert "image_train/, image_query/, image_test/" in message
    for looked in ("VeRi", "veri", "VeRi_with_plate"):
        assert f"{tmp_path / looked} (does not exist)" in message
    _tree(tmp_path, {**VERI, "image_query": ["0002_c021_00030600_0.jpg"]})
    with pytest.raises(ValueError, match=r"camera outside 1\.\.20: 0002_c021"):
        index_veri776(tmp_path)
    _tree(tmp_path, {"image_query": ["0002_c2_00030600_0.jpg"]})
    with pytest.raises(ValueError, match=r"image_query: 1 file name.*veri naming.*0002_c2_0003"):
        index_veri776(tmp_path)
