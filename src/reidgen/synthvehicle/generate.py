"""Generating a SynthVehicle dataset on disk: planning, parallel rendering, atomic publication.

VeRi-776 layout and naming (``layout="veri"``, read by
:func:`reidgen.data.datasets.veri.index_veri776`)::

    <data_dir>/synthvehicle/<preset>-<H>x<W>-seed<S>/
        image_train/VVVV_cCCC_FFFFFFFF_K.jpg    vehicle, camera (1-based), frame, detection
        image_query/ ...     one image per test vehicle and camera it passed
        image_test/ ...      the gallery: the test vehicles' other images
        name_train.txt  name_query.txt  name_test.txt   (sorted file names)
        manifest.json        written last: its presence marks a finished dataset
        contact_sheet.png    vehicles x cameras, for people to look at

VehicleID layout (``layout="vehicleid"``, read by
:func:`reidgen.data.datasets.vehicleid.index_vehicleid`), the same vehicles seen from the front
or rear only, as VehicleID's images::

    <data_dir>/synthvehicle/vehicleid-<preset>-<H>x<W>-seed<S>/
        image/NNNNNNN.jpg
        train_test_split/train_list.txt  test_list_<n>.txt ...   '<image> <vehicle id>' lines;
                             the test lists nested (small in medium in large), named by vehicles
        manifest.json  contact_sheet.png

Every random draw comes from a generator seeded by (seed, purpose, item), never from shared
state, so the bytes of every file are the same whatever the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reidgen.procedural import MANIFEST, publish, render_in_workers
from reidgen.synthperson.generate import DatasetDamagedError
from reidgen.synthvehicle.identity import Vehicle, near_duplicate_groups, sample_vehicles
from reidgen.synthvehicle.network import FPS, CameraView, camera_views, drive, vehicle_camera
from reidgen.synthvehicle.presets import VehiclePreset, get_preset
from reidgen.synthvehicle.render import VehicleMesh, build_mesh, render_vehicle

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
LAYOUTS = ("veri", "vehicleid")
VERI_FOLDERS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
VERI_LISTS = {
    "image_train": "name_train.txt",
    "image_query": "name_query.txt",
    "image_test": "name_test.txt",
}
VEHICLEID_FOLDER = "image"
# Below this many images, starting worker processes costs more than it saves.
_PARALLEL_MIN_IMAGES = 400


@dataclass(frozen=True)
class SynthVehicleSpec:
    """What identifies one generated dataset: same spec, same bytes."""

    preset: VehiclePreset
    size: tuple[int, int] = (96, 96)
    seed: int = 0
    layout: str = "veri"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(
                f"unknown SynthVehicle layout {self.layout!r}; expected one of {list(LAYOUTS)}"
            )
        if min(self.size) < 32:
            raise ValueError(f"SynthVehicle images are at least 32x32, got {self.size}")

    @property
    def dirname(self) -> str:
        name = f"{self.preset.name}-{self.size[0]}x{self.size[1]}-seed{self.seed}"
        return name if self.layout == "veri" else f"vehicleid-{name}"

    def rng(self, purpose: str, *items: int) -> np.random.Generator:
        # The layout is not mixed in: both layouts show the same vehicles on the same drives.
        words = [self.seed, zlib.crc32(purpose.encode()), *items]
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


@dataclass(frozen=True)
class FilePlan:
    """One image to write: where, whom, and the view."""

    folder: str
    filename: str
    vid: int
    index: int  # the vehicle's position in DatasetPlan.vehicles
    camera: int  # 0-based
    frame: int
    yaw: float
    elevation: float
    resolution: float


@dataclass
class DatasetPlan:
    spec: SynthVehicleSpec
    views: list[CameraView]
    vehicles: list[Vehicle]
    train_count: int  # vehicles[:train_count] are training vehicles
    files: list[FilePlan] = field(default_factory=list)
    test_lists: dict[int, list[int]] = field(default_factory=dict)  # VehicleID: size -> vids

    @property
    def train_vids(self) -> list[int]:
        return [v.vid for v in self.vehicles[: self.train_count]]


def plan_dataset(spec: SynthVehicleSpec) -> DatasetPlan:
    """Decides every file: which vehicle, camera, frame, view and split. Cheap, deterministic."""
    preset = spec.preset
    total = preset.num_train_ids + preset.num_test_ids
    if total > 9999:
        raise ValueError(f"VeRi names have 4-digit vehicle ids: at most 9999, got {total}")
    vids = spec.rng("vids").permutation(np.arange(1, total + 1))
    train_vids = sorted(int(v) for v in vids[: preset.num_train_ids])
    test_vids = sorted(int(v) for v in vids[preset.num_train_ids :])
    fraction = preset.near_duplicate_fraction
    vehicles = sample_vehicles(spec.rng, train_vids, fraction)
    vehicles += sample_vehicles(spec.rng, test_vids, fraction)
    order = spec.rng("camera axes").permutation(4)
    rngs = [spec.rng("camera view", camera) for camera in range(preset.num_cameras)]
    views = camera_views(rngs, order, spec.layout)
    plan = DatasetPlan(spec, views, vehicles, len(train_vids))

    entries: list[tuple[str, int, Any]] = []  # (split, vehicle index, sighting)
    for index, vehicle in enumerate(vehicles):
        sightings = drive(spec.rng("drive", vehicle.vid), views, preset)
        if index < plan.train_count or spec.layout == "vehicleid":
            entries += [
                ("train" if index < plan.train_count else "test", index, s) for s in sightings
            ]
            continue
        by_camera: dict[int, list[int]] = defaultdict(list)
        for position, sighting in enumerate(sightings):
            by_camera[sighting.camera].append(position)
        choose = spec.rng("query", vehicle.vid)
        queries = {
            positions[int(choose.integers(len(positions)))]
            for _, positions in sorted(by_camera.items())
        }
        entries += [
            ("query" if position in queries else "gallery", index, sighting)
            for position, sighting in enumerate(sightings)
        ]
    entries.sort(key=lambda e: (e[2].frame, e[2].camera, vehicles[e[1]].vid))

    def file_plan(folder: str, filename: str, index: int, sighting: Any) -> FilePlan:
        return FilePlan(
            folder,
            filename,
            vehicles[index].vid,
            index,
            sighting.camera,
            sighting.frame,
            sighting.yaw,
            sighting.elevation,
            sighting.resolution,
        )

    files: list[FilePlan] = []
    if spec.layout == "veri":
        # Detections in one frame of one camera are numbered, as VeRi's last name field.
        per_frame: dict[tuple[int, int], int] = defaultdict(int)
        for split, index, sighting in entries:
            detection = per_frame[(sighting.camera, sighting.frame)]
            per_frame[(sighting.camera, sighting.frame)] += 1
            name = (
                f"{vehicles[index].vid:04d}_c{sighting.camera + 1:03d}_"
                f"{sighting.frame:08d}_{detection}.jpg"
            )
            files.append(file_plan(VERI_FOLDERS[split], name, index, sighting))
    else:
        # VehicleID's image numbers carry no order: a seeded permutation.
        numbers = spec.rng("image numbers").permutation(len(entries)) + 1
        for number, (_, index, sighting) in zip(numbers, entries, strict=True):
            files.append(file_plan(VEHICLEID_FOLDER, f"{int(number):07d}.jpg", index, sighting))
        shuffled = [int(v) for v in spec.rng("test lists").permutation(test_vids)]
        plan.test_lists = {size: sorted(shuffled[:size]) for size in preset.test_sizes}
    plan.files = sorted(files, key=lambda f: (f.folder, f.filename))
    return plan


class _Renderer:
    """Per-process state: vehicles and cameras rebuilt from the spec, never pickled."""

    def __init__(self, spec: SynthVehicleSpec, root: Path) -> None:
        self.spec = spec
        self.root = root
        self.vehicles = plan_dataset(spec).vehicles
        self.cameras = [
            vehicle_camera(spec.rng("camera", camera), spec.size)
            for camera in range(spec.preset.num_cameras)
        ]
        self.meshes: dict[int, VehicleMesh] = {}

    def render(self, ordinal: int, plan: FilePlan) -> None:
        if plan.index not in self.meshes:
            self.meshes[plan.index] = build_mesh(self.vehicles[plan.index])
        camera = self.cameras[plan.camera]
        image = render_vehicle(
            self.spec.rng("image", ordinal),
            self.meshes[plan.index],
            camera,
            plan.yaw,
            plan.elevation,
            self.spec.size,
            camera.look.resolution * plan.resolution,
        )
        image.save(self.root / plan.folder / plan.filename, quality=camera.look.jpeg_quality)


def render_files(
    spec: SynthVehicleSpec, plan: DatasetPlan, root: Path, workers: int | None = None
) -> None:
    """Renders every planned file under ``root`` (whose folders must exist)."""
    render_in_workers(
        _Renderer,
        (spec, root),
        plan.files,
        workers,
        _PARALLEL_MIN_IMAGES,
        f"SynthVehicle {spec.dirname}",
    )


def _write_lists(plan: DatasetPlan, root: Path) -> None:
    if plan.spec.layout == "veri":
        for folder, list_name in VERI_LISTS.items():
            names = sorted(f.filename for f in plan.files if f.folder == folder)
            (root / list_name).write_text("".join(f"{name}\n" for name in names))
        return
    split_dir = root / "train_test_split"
    split_dir.mkdir()
    train = set(plan.train_vids)
    lists = {"train_list.txt": train}
    lists.update({f"test_list_{size}.txt": set(v) for size, v in plan.test_lists.items()})
    for list_name, vids in lists.items():
        lines = sorted((f.vid, Path(f.filename).stem) for f in plan.files if f.vid in vids)
        (split_dir / list_name).write_text("".join(f"{stem} {vid}\n" for vid, stem in lines))


def _counts(plan: DatasetPlan) -> dict[str, dict[str, int]]:
    """Images, vehicles and cameras per VeRi folder, or per VehicleID list."""
    groups: dict[str, list[FilePlan]] = {}
    if plan.spec.layout == "veri":
        for folder in VERI_FOLDERS.values():
            groups[folder] = [f for f in plan.files if f.folder == folder]
    else:
        train = set(plan.train_vids)
        groups["train_list"] = [f for f in plan.files if f.vid in train]
        for size, vids in plan.test_lists.items():
            chosen = set(vids)
            groups[f"test_list_{size}"] = [f for f in plan.files if f.vid in chosen]
    return {
        name: {
            "images": len(files),
            "vehicles": len({f.vid for f in files}),
            "cameras": len({f.camera for f in files}),
        }
        for name, files in groups.items()
    }


def manifest(spec: SynthVehicleSpec, plan: DatasetPlan | None) -> dict[str, Any]:
    """The manifest's content; without a plan, only what the spec decides (no counts)."""
    record: dict[str, Any] = {
        "generator": "reidgen.synthvehicle",
        "generator_version": GENERATOR_VERSION,
        "seed": spec.seed,
        "layout": spec.layout,
        "preset": spec.preset.to_dict(),
        "image_size": list(spec.size),
        "num_cameras": spec.preset.num_cameras,
        "fps": FPS,
    }
    if spec.layout == "vehicleid":
        record["test_sizes"] = list(spec.preset.test_sizes)
    if plan is not None:
        record["counts"] = _counts(plan)
        record["near_duplicate_groups"] = near_duplicate_groups(plan.vehicles)
        record["vehicles"] = {
            f"{v.vid:04d}": {**v.summary(), "split": "train" if i < plan.train_count else "test"}
            for i, v in enumerate(plan.vehicles)
        }
    return record


def _image_folder_counts(spec: SynthVehicleSpec, counts: dict[str, dict[str, int]]) -> dict:
    if spec.layout == "veri":
        return {folder: counts[folder]["images"] for folder in VERI_FOLDERS.values()}
    largest = max(spec.preset.test_sizes)
    images = counts["train_list"]["images"] + counts[f"test_list_{largest}"]["images"]
    return {VEHICLEID_FOLDER: images}


def _check_existing(path: Path, spec: SynthVehicleSpec) -> None:
    """Raises :class:`DatasetDamagedError` unless ``path`` is the finished dataset of ``spec``."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise DatasetDamagedError(
            f"{path} exists but has no {MANIFEST}, so it is not a finished SynthVehicle "
            "dataset. Move or delete it to regenerate."
        )
    found = json.loads(manifest_path.read_text())
    requested = json.loads(json.dumps(manifest(spec, None)))
    for key, value in requested.items():
        if found.get(key) != value:
            raise DatasetDamagedError(
                f"{path}: {MANIFEST} records {key} = {found.get(key)!r}, expected {value!r} "
                "(the generator changed since it was made?). Move or delete it to regenerate."
            )
    for folder, expected in _image_folder_counts(spec, found["counts"]).items():
        present = sum(1 for _ in (path / folder).glob("*.jpg")) if (path / folder).is_dir() else 0
        if present != expected:
            raise DatasetDamagedError(
                f"{path / folder}: expected {expected} images as {MANIFEST} records, found "
                f"{present}. The dataset was modified; move or delete {path} to regenerate."
            )


def generate(spec: SynthVehicleSpec, data_dir: str | Path, workers: int | None = None) -> Path:
    """Returns the dataset's folder, generating it first unless a finished one is there.

    Once, whatever the number of processes, and atomically (:func:`reidgen.procedural.publish`).
    """

    def build(temporary: Path) -> dict[str, Any]:
        plan = plan_dataset(spec)
        for folder in sorted({f.folder for f in plan.files}):
            (temporary / folder).mkdir()
        log.info("generating SynthVehicle %s: %d images", spec.dirname, len(plan.files))
        render_files(spec, plan, temporary, workers)
        _write_lists(plan, temporary)
        from reidgen.synthvehicle.contact_sheet import contact_sheet

        contact_sheet(temporary, plan).save(temporary / "contact_sheet.png")
        return manifest(spec, plan)

    parent = Path(data_dir).expanduser().resolve() / "synthvehicle"
    return publish(parent, spec.dirname, lambda path: _check_existing(path, spec), build)


def ensure_synthvehicle(
    data_dir: str | Path,
    preset: str | VehiclePreset = "small",
    size: Sequence[int] = (96, 96),
    seed: int = 0,
    layout: str = "veri",
    workers: int | None = None,
) -> Path:
    """The folder of the SynthVehicle dataset with these settings, generated on first use."""
    sizes = preset if isinstance(preset, VehiclePreset) else get_preset(preset)
    spec = SynthVehicleSpec(sizes, (int(size[0]), int(size[1])), int(seed), layout)
    return generate(spec, data_dir, workers)
