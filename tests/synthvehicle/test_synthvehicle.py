"""SynthVehicle: determinism, the VeRi-776 and VehicleID layouts read by the real indexers and
scored by their protocols, near-duplicate identities, viewpoint-correct details, errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

import reidgen.synthvehicle.generate as generate_module
from reidgen.data.datasets.synthvehicle import index_synthvehicle
from reidgen.data.datasets.vehicleid import index_vehicleid
from reidgen.data.datasets.veri import index_veri776
from reidgen.data.sources import SynthVehicleSource
from reidgen.eval.protocols import VehicleIDProtocol, VeRiProtocol
from reidgen.synthperson.generate import DatasetDamagedError
from reidgen.synthvehicle import PRESETS, SynthVehicleSpec, ensure_synthvehicle
from reidgen.synthvehicle.__main__ import main as cli_main
from reidgen.synthvehicle.generate import MANIFEST, plan_dataset
from reidgen.synthvehicle.identity import Sticker, sample_vehicle
from reidgen.synthvehicle.network import vehicle_camera
from reidgen.synthvehicle.presets import get_preset
from reidgen.synthvehicle.render import build_mesh, render_vehicle
from tests.test_run import QUICK, metrics_of, only_run, run_module

VERI_NAME = re.compile(r"^(\d{4})_c(\d{3})_(\d{8})_(\d+)\.jpg$")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthvehicle-data")


@pytest.fixture(scope="module")
def tiny_veri(data_dir: Path) -> Path:
    return ensure_synthvehicle(data_dir, "tiny", workers=1)


@pytest.fixture(scope="module")
def tiny_vehicleid(data_dir: Path) -> Path:
    return ensure_synthvehicle(data_dir, "tiny", layout="vehicleid", workers=1)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_bytes_on_regeneration_and_for_any_worker_count(
    tiny_veri: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two worker processes even for the tiny preset (normally rendered in-process).
    monkeypatch.setattr(generate_module, "_PARALLEL_MIN_IMAGES", 0)
    again = ensure_synthvehicle(tmp_path, "tiny", workers=2)
    first, second = file_bytes(tiny_veri), file_bytes(again)
    assert sorted(first) == sorted(second) and len(first) > 200
    assert [name for name in first if first[name] != second[name]] == []


def test_veri_layout_read_by_the_veri_indexer(tiny_veri: Path) -> None:
    assert tiny_veri.name == "tiny-96x96-seed0"
    splits = index_veri776(tiny_veri, "synth")
    assert splits.variant == "VeRi-776 (name lists checked: train, query, gallery)"
    for folder, samples in (
        ("image_train", splits.train),
        ("image_query", splits.query),
        ("image_test", splits.gallery),
    ):
        names = [Path(s.path).name for s in samples]
        assert all(VERI_NAME.match(name) for name in names)
        listed = (tiny_veri / f"name_{folder.removeprefix('image_')}.txt").read_text().split()
        assert listed == sorted(listed) == sorted(names)
    train_vids = {s.pid for s in splits.train}
    test_vids = {s.pid for s in splits.query} | {s.pid for s in splits.gallery}
    assert not train_vids & test_vids and len(train_vids) == len(test_vids) == 12
    # One query per test vehicle and camera it passed, each with a gallery match elsewhere.
    seen = {(s.pid, s.camid) for s in splits.query + splits.gallery}
    assert sorted((s.pid, s.camid) for s in splits.query) == sorted(seen)
    gallery_cameras = defaultdict(set)
    for sample in splits.gallery:
        gallery_cameras[sample.pid].add(sample.camid)
    assert all(gallery_cameras[q.pid] - {q.camid} for q in splits.query)
    assert max(s.camid for s in splits.train) < 20
    # The VeRi protocol scores every query (none skipped) on any distance.
    distance = torch.rand(len(splits.query), len(splits.gallery), generator=torch.manual_seed(0))
    metrics = VeRiProtocol().evaluate(
        distance,
        [s.pid for s in splits.query],
        [s.camid for s in splits.query],
        [s.pid for s in splits.gallery],
        [s.camid for s in splits.gallery],
    )
    assert metrics["num_skipped_queries"] == 0 and 0 < metrics["mAP"] <= 100
    # The project's reader checks the folder against the manifest's counts.
    read = index_synthvehicle(tiny_veri)
    manifest = json.loads((tiny_veri / MANIFEST).read_text())
    assert read.expected["query"]["images"] == manifest["counts"]["image_query"]["images"]
    assert read.summary()["train"] == read.expected["train"]


def test_near_duplicates_share_model_and_colour_and_differ_in_details(tiny_veri: Path) -> None:
    manifest = json.loads((tiny_veri / MANIFEST).read_text())
    groups = manifest["near_duplicate_groups"]
    assert groups
    plan = plan_dataset(SynthVehicleSpec(get_preset("tiny")))
    by_vid = {v.vid: v for v in plan.vehicles}
    for group in groups:
        original = by_vid[group[0]]
        for vid in group[1:]:
            copy = by_vid[vid]
            assert copy.near_duplicate_of == original.vid
            model = ("type_name", "length", "width", "height", "cabin_shift", "colour")
            assert all(getattr(copy, f) == getattr(original, f) for f in model)
            assert copy.details() != original.details()
            # Both in the same split: they compete in one gallery.
            assert (
                manifest["vehicles"][f"{vid:04d}"]["split"]
                == (manifest["vehicles"][f"{original.vid:04d}"]["split"])
            )


def test_vehicleid_layout_read_by_the_vehicleid_indexer(tiny_vehicleid: Path) -> None:
    assert tiny_vehicleid.name == "vehicleid-tiny-96x96-seed0"
    assert all(re.fullmatch(r"\d{7}\.jpg", p.name) for p in (tiny_vehicleid / "image").iterdir())
    pools = {size: index_vehicleid(tiny_vehicleid, "v", test_size=size) for size in (4, 8, 12)}
    vehicles = {size: {s.pid for s in splits.gallery} for size, splits in pools.items()}
    assert [len(vehicles[size]) for size in (4, 8, 12)] == [4, 8, 12]
    assert vehicles[4] < vehicles[8] < vehicles[12]  # nested, as VehicleID's lists
    assert not {s.pid for s in pools[12].train} & vehicles[12]
    read = index_synthvehicle(tiny_vehicleid, test_size=8)
    assert read.summary()["gallery"]["identities"] == 8 and read.query == []
    with pytest.raises(ValueError, match="test lists of"):
        index_synthvehicle(tiny_vehicleid, test_size=800)
    metrics = VehicleIDProtocol().evaluate_all(
        torch.rand(len(read.gallery), len(read.gallery), generator=torch.manual_seed(0)),
        [s.pid for s in read.gallery],
    )
    assert metrics["num_gallery"] == 8 and 0 < metrics["rank1"] <= 100


def _count(image, colour: tuple[int, int, int]) -> int:
    """Pixels close in hue to a saturated ``colour`` (whatever the lighting)."""
    pixels = np.asarray(image, dtype=np.float32)
    target = np.asarray(colour, dtype=np.float32) / max(colour)
    scaled = pixels / np.maximum(pixels.max(axis=2, keepdims=True), 1)
    return int((np.abs(scaled - target).max(axis=2) < 0.2).sum() * (pixels.max() > 0))


def test_details_show_only_from_where_they_are() -> None:
    size = (96, 96)
    camera = vehicle_camera(np.random.default_rng(0), size)
    clean = dataclasses.replace(
        camera.look,
        blur_sigma=0.0,
        noise_std=0.0,
        resolution=1.0,
        image_colour_cast=0.0,
        gain=np.ones(3, np.float32),
    )
    camera = dataclasses.replace(camera, look=clean, band=None)
    magenta, cyan, green = (255, 0, 255), (0, 255, 255), (0, 255, 0)
    vehicle = dataclasses.replace(
        sample_vehicle(np.random.default_rng(1), 1),
        type_name="sedan",
        colour=(120, 120, 120),
        roof="sign",
        stickers=(
            Sticker("left", 0.3, 0.6, 0.3, 0.55, magenta),
            Sticker("rear", 0.5, 0.75, -0.4, 0.4, cyan),
            Sticker("windscreen", 0.05, 0.35, 0.3, 0.8, green),
        ),
    )
    mesh = build_mesh(vehicle)

    def seen(yaw_deg: float) -> dict[str, bool]:
        rng = np.random.default_rng(0)
        image = render_vehicle(
            rng, mesh, camera, math.radians(yaw_deg), math.radians(15), size, 1.0
        )
        found = {
            name: _count(image, c) >= 4
            for name, c in (("left", magenta), ("rear", cyan), ("windscreen", green))
        }
        return {**found, "roof": _count(image, (245, 200, 35)) >= 4}

    assert seen(0) == {"left": False, "rear": False, "windscreen": True, "roof": True}
    # From the side and above, the windscreen (sloped, facing up) may show at a grazing angle.
    assert seen(90) | {"windscreen": False} == {
        "left": True,
        "rear": False,
        "windscreen": False,
        "roof": True,
    }
    assert seen(270) | {"windscreen": False} == {
        "left": False,
        "rear": False,
        "windscreen": False,
        "roof": True,
    }
    assert seen(180) == {"left": False, "rear": True, "windscreen": False, "roof": True}
    assert seen(135)["rear"] and seen(135)["left"] and not seen(135)["windscreen"]
    assert seen(45)["windscreen"] and seen(45)["left"] and not seen(45)["rear"]


def test_reuse_and_damage(tiny_veri: Path, data_dir: Path) -> None:
    assert ensure_synthvehicle(data_dir, "tiny") == tiny_veri
    copy = data_dir / "damaged"
    spec = SynthVehicleSpec(get_preset("tiny"))
    target = copy / "synthvehicle" / spec.dirname
    target.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(tiny_veri, target)
    next((target / "image_test").iterdir()).unlink()
    with pytest.raises(DatasetDamagedError, match="expected"):
        ensure_synthvehicle(copy, "tiny")


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"unknown SynthVehicle preset 'huge'.*'small', 'tiny'"):
        get_preset("huge")
    with pytest.raises(ValueError, match=r"unknown SynthVehicle layout 'kitti'.*'veri'"):
        SynthVehicleSpec(PRESETS["tiny"], layout="kitti")
    with pytest.raises(ValueError, match="unknown SynthVehicle layout"):
        SynthVehicleSource("tiny", layout="market")
    with pytest.raises(ValueError, match="VehicleID layout only"):
        SynthVehicleSource("tiny", layout="veri", test_size=4)
    with pytest.raises(ValueError, match="at least 2 passes"):
        dataclasses.replace(PRESETS["tiny"], passes=(1, 2))
    with pytest.raises(SystemExit):
        cli_main(["--preset", "huge"])


def test_cli_prints_the_folder(
    tiny_vehicleid: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_main(["--preset", "tiny", "--layout", "vehicleid", "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    assert str(tiny_vehicleid) in out and "test_list_4" in out and "near-duplicate" in out
    assert (tiny_vehicleid / "contact_sheet.png").is_file()


def test_sources_default_to_their_layouts_protocol() -> None:
    assert isinstance(SynthVehicleSource("tiny").protocol, VeRiProtocol)
    vehicleid = SynthVehicleSource("tiny", layout="vehicleid", test_size=4)
    assert isinstance(vehicleid.protocol, VehicleIDProtocol) and vehicleid.protocol.repeats == 10
    assert vehicleid.name == "synth_vehicleid"


@pytest.mark.slow
def test_es_net_run_on_both_layouts(tmp_path: Path) -> None:
    """One epoch of ES-Net with the vehicle erase block on SynthVehicle tiny (VeRi layout),
    tested on it and on the VehicleID layout's test list: both protocols through the real entry
    point."""
    args = [
        *QUICK,
        "method=esnet",
        "method.erasing.height_ratio=0.5",
        "method.erasing.width_ratio=0.5",
        "data=synth_vehicle_tiny",
        "trainer.max_epochs=1",
        "data.targets=[synth_vehicle_tiny,synth_vehicleid_tiny]",
    ]
    run_module("reidgen.run", args, tmp_path / "data", tmp_path / "logs")
    run_dir = only_run(tmp_path / "logs")
    with open(run_dir / "csv" / "metrics.csv") as handle:
        fractions = [row["train/erased_fraction_epoch"] for row in csv.DictReader(handle)]
    # 96x96 images give 6x6 maps: a 3x3 block around each vehicle's peak.
    assert [float(f) for f in fractions if f] == [pytest.approx(0.25)]
    record = metrics_of(run_dir)
    assert record["sources"] == ["synth_vehicle_tiny"]
    veri, vehicleid = (
        record["metrics"]["synth_vehicle_tiny"],
        record["metrics"]["synth_vehicleid_tiny"],
    )
    assert math.isfinite(veri["mAP"]) and 0 < veri["mAP"] <= 100
    assert veri["num_valid_queries"] == veri["num_query"]
    # The pool of test_list_12; every round puts one image per vehicle in the gallery.
    assert vehicleid["num_valid_queries"] == vehicleid["num_gallery"] - 12
    for key in ("rank1", "rank5", "mAP"):
        assert math.isfinite(vehicleid[key]) and 0 < vehicleid[key] <= 100
