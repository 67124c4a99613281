"""Generating a SynthPerson dataset on disk: planning, parallel rendering, atomic publication.

Layout of a generated dataset (Market-1501 layout and naming, plus structure maps)::

    <data_dir>/synthperson/<domain>-<preset>-<H>x<W>-seed<S>/
        bounding_box_train/PPPP_cCsS_FFFFFF_BB.jpg
        bounding_box_test/ ...     gallery: true matches, distractors (0000), junk (-1)
        query/ ...                 one image per test identity and camera
        structure/<split folder>/<image stem>.png
        manifest.json              written last: its presence marks a finished dataset
        contact_sheet.png          identities x cameras, for people to look at

A structure file is a palette PNG of H x 8W: eight body-part maps side by side, the first aligned
with the image, the others the same body in the same pose turned in place by 45, 90, ..., 315
degrees (the way GCL uses rendered 3-D meshes). Pixel values index
:data:`~reidgen.synthperson.figure.PART_NAMES`. Like a mesh render they show the whole body,
without clothes, carried objects or whatever occludes it in the image.

Every random draw comes from a generator seeded by (seed, domain, purpose, item), never from
shared state, so the bytes of every file are the same whatever the number of worker processes and
the order they run in.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from reidgen.procedural import MANIFEST, publish, render_in_workers
from reidgen.synthperson.figure import PART_NAMES
from reidgen.synthperson.identity import Identity, sample_identities
from reidgen.synthperson.network import (
    SEQUENCE_SECONDS,
    CameraNetwork,
    build_network,
    frame_fields,
    walk,
)
from reidgen.synthperson.presets import Preset, get_preset
from reidgen.synthperson.render import (
    STRUCTURE_YAWS_DEG,
    SUPERSAMPLE,
    CameraLook,
    CameraStrata,
    camera_look,
)
from reidgen.synthperson.scene import DISTRACTOR, JUNK, PERSON, RenderJob, render_job
from reidgen.synthperson.style import (
    BUILTIN_DOMAINS,
    BUILTIN_DRAW_KEYS,
    DomainStyle,
    load_domain_style,
)

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SPLIT_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
# Below this many images, starting worker processes costs more than it saves.
_PARALLEL_MIN_IMAGES = 400


@dataclass(frozen=True)
class SynthPersonSpec:
    """What identifies one generated dataset: same spec, same bytes."""

    domain: DomainStyle
    preset: Preset
    size: tuple[int, int] = (128, 64)
    seed: int = 0

    def __post_init__(self) -> None:
        height, width = self.size
        if height < 32 or width < 16:
            raise ValueError(f"SynthPerson image size must be at least 32x16, got {height}x{width}")
        if self.preset.visits[0] < 2:
            raise ValueError("SynthPerson presets need at least 2 visits per identity")

    @cached_property
    def domain_key(self) -> int:
        """A stable integer from the domain's full definition; names its folder."""
        return zlib.crc32(json.dumps(self.domain.to_dict(), sort_keys=True).encode())

    @cached_property
    def draw_key(self) -> int:
        """Mixed into every seed: a built-in domain's fixed key (:data:`BUILTIN_DRAW_KEYS`), that
        of the built-in domain it draws as (``DomainStyle.draws_of``), or its own ``domain_key``."""
        name = self.domain.draws_of
        if not name and BUILTIN_DOMAINS.get(self.domain.name) == self.domain:
            name = self.domain.name
        return BUILTIN_DRAW_KEYS[name] if name else self.domain_key

    @property
    def dirname(self) -> str:
        """Folder name; a domain that differs from the built-in of its name gets a hash suffix."""
        name = self.domain.name
        if BUILTIN_DOMAINS.get(name) != self.domain:
            name = f"{name}-{self.domain_key:08x}"
        return f"{name}-{self.preset.name}-{self.size[0]}x{self.size[1]}-seed{self.seed}"

    @property
    def sequence_frames(self) -> int:
        return int(round(SEQUENCE_SECONDS * self.domain.fps))

    def rng(self, purpose: str, *items: int) -> np.random.Generator:
        words = [self.seed, self.draw_key, zlib.crc32(purpose.encode()), *items]
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


@dataclass(frozen=True)
class FilePlan:
    """One file to write: its folder and Market name, and what to draw."""

    folder: str
    filename: str
    pid: int
    camera: int
    time_s: float
    job: RenderJob


@dataclass
class DatasetPlan:
    spec: SynthPersonSpec
    network: CameraNetwork
    identities: list[Identity]
    train_count: int  # identities[:train_count] are training identities
    files: list[FilePlan] = field(default_factory=list)


def plan_dataset(spec: SynthPersonSpec) -> DatasetPlan:
    """Decides every file: who, which camera, when, which split. Cheap and deterministic."""
    preset, style = spec.preset, spec.domain
    network = build_network(spec.rng("network"), style)
    total = preset.num_train_ids + preset.num_test_ids
    if total > 9999:
        raise ValueError(f"Market names have 4-digit pids: at most 9999 identities, got {total}")
    pids = spec.rng("pids").permutation(np.arange(1, total + 1))
    train_pids = sorted(int(p) for p in pids[: preset.num_train_ids])
    test_pids = sorted(int(p) for p in pids[preset.num_train_ids :])
    identities = sample_identities(spec.rng("identities", 0), style, train_pids)
    identities += sample_identities(spec.rng("identities", 1), style, test_pids)
    plan = DatasetPlan(spec, network, identities, train_count=len(train_pids))

    entries: list[tuple[str, int, int, float, RenderJob]] = []

    def add(folder: str, pid: int, sighting_job: RenderJob, time_s: float) -> None:
        entries.append((folder, pid, sighting_job.camera, time_s, sighting_job))

    gallery_people = 0
    for index, identity in enumerate(identities):
        sightings = walk(
            spec.rng("walk", identity.pid), network, style, preset, index, identity.walking_speed
        )
        jobs = [
            (s, RenderJob(PERSON, index, s.camera, s.yaw, s.phase, s.scale, s.resolution))
            for s in sightings
        ]
        if index < plan.train_count:
            for sighting, job in jobs:
                add("bounding_box_train", identity.pid, job, sighting.time_s)
            continue
        by_camera: dict[int, list[int]] = defaultdict(list)
        for position, (sighting, _) in enumerate(jobs):
            by_camera[sighting.camera].append(position)
        choose = spec.rng("query", identity.pid)
        queries = {
            positions[int(choose.integers(len(positions)))]
            for _, positions in sorted(by_camera.items())
        }
        for position, (sighting, job) in enumerate(jobs):
            folder = "query" if position in queries else "bounding_box_test"
            gallery_people += folder == "bounding_box_test"
            add(folder, identity.pid, job, sighting.time_s)

    extra = spec.rng("extras")
    recording = style.recording_hours * 3600.0
    for _ in range(int(round(preset.distractor_fraction * gallery_people))):
        camera = int(extra.integers(network.num_cameras))
        job = RenderJob(
            DISTRACTOR,
            -1,
            camera,
            float(extra.uniform(-np.pi, np.pi)),
            float(extra.uniform(0, 2 * np.pi)),
            0.9,
            float(extra.uniform(*style.resolution)),
        )
        add("bounding_box_test", 0, job, float(extra.uniform(0.0, recording)))
    test_gallery = [e for e in entries if e[0] == "bounding_box_test" and e[1] > 0]
    for _ in range(int(round(preset.junk_fraction * gallery_people))):
        _, _, camera, time_s, source = test_gallery[int(extra.integers(len(test_gallery)))]
        job = RenderJob(
            JUNK, source.identity, camera, source.yaw, source.phase, source.scale, source.resolution
        )
        add("bounding_box_test", -1, job, time_s + float(extra.uniform(0.04, 0.4)))

    # Detections in one frame are numbered, as in Market's last name field.
    per_frame: dict[tuple[int, int, int], int] = defaultdict(int)
    named: list[FilePlan] = []
    for folder, pid, camera, time_s, job in sorted(entries, key=lambda e: (e[3], e[2], e[1])):
        sequence, frame = frame_fields(time_s, style.fps)
        per_frame[(camera, sequence, frame)] += 1
        detection = per_frame[(camera, sequence, frame)]
        pid_text = "-1" if pid < 0 else f"{pid:04d}"
        filename = f"{pid_text}_c{camera + 1}s{sequence}_{frame:06d}_{detection:02d}.jpg"
        named.append(FilePlan(folder, filename, pid, camera, time_s, job))
    plan.files = sorted(named, key=lambda f: (f.folder, f.filename))
    return plan


def camera_looks(spec: SynthPersonSpec) -> list[CameraLook]:
    canvas = (spec.size[0] * SUPERSAMPLE, spec.size[1] * SUPERSAMPLE)
    count = spec.domain.num_cameras
    strata: list[CameraStrata | None] = [None] * count
    if spec.domain.spread_cameras:
        rng = spec.rng("camera strata")
        brightness, contrast = rng.permutation(count), rng.permutation(count)
        strata = [
            CameraStrata(int(brightness[camera]), int(contrast[camera]), count)
            for camera in range(count)
        ]
    return [
        camera_look(spec.rng("camera", camera), spec.domain, canvas, strata[camera])
        for camera in range(count)
    ]


_STRUCTURE_PALETTE = [
    0,
    0,
    0,
    230,
    190,
    160,
    200,
    60,
    60,
    60,
    120,
    220,
    120,
    180,
    250,
    220,
    120,
    40,
    250,
    200,
    90,
] + [60, 160, 60, 140, 220, 140, 160, 60, 180, 220, 150, 230]


def write_structure(path: Path, strip: np.ndarray) -> None:
    """Saves a part-label strip as a palette PNG (indices read back with ``np.asarray``)."""
    image = Image.frombytes("P", (strip.shape[1], strip.shape[0]), strip.tobytes())
    image.putpalette(_STRUCTURE_PALETTE)
    image.save(path, optimize=False)


class _Renderer:
    """Per-process state: the identities and camera looks, rebuilt from the spec, never pickled."""

    def __init__(self, spec: SynthPersonSpec, root: Path) -> None:
        self.spec = spec
        self.root = root
        self.identities = plan_dataset(spec).identities
        self.looks = camera_looks(spec)

    def render(self, ordinal: int, plan: FilePlan) -> None:
        rng = self.spec.rng("image", ordinal)
        image, strip = render_job(
            plan.job, rng, self.identities, self.looks, self.spec.domain, self.spec.size
        )
        quality = self.looks[plan.camera].jpeg_quality
        image.save(self.root / plan.folder / plan.filename, quality=quality)
        stem = Path(plan.filename).stem
        write_structure(self.root / "structure" / plan.folder / f"{stem}.png", strip)


def render_files(
    spec: SynthPersonSpec, plan: DatasetPlan, root: Path, workers: int | None = None
) -> None:
    """Renders every planned file under ``root`` (whose split folders must exist)."""
    render_in_workers(
        _Renderer,
        (spec, root),
        plan.files,
        workers,
        _PARALLEL_MIN_IMAGES,
        f"SynthPerson {spec.dirname}",
    )


def _counts(plan: DatasetPlan) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for folder in SPLIT_FOLDERS:
        files = [f for f in plan.files if f.folder == folder]
        counts[folder] = {
            "images": len(files),
            "identities": len({f.pid for f in files if f.pid > 0}),
            "cameras": len({f.camera for f in files}),
            "distractors": sum(f.pid == 0 for f in files),
            "junk": sum(f.pid < 0 for f in files),
        }
    return counts


def manifest(spec: SynthPersonSpec, plan: DatasetPlan | None) -> dict[str, Any]:
    """The manifest's content; without a plan, only what the spec decides (no counts)."""
    record: dict[str, Any] = {
        "generator": "reidgen.synthperson",
        "generator_version": GENERATOR_VERSION,
        "seed": spec.seed,
        "domain": spec.domain.to_dict(),
        "preset": spec.preset.to_dict(),
        "image_size": list(spec.size),
        "num_cameras": spec.domain.num_cameras,
        "fps": spec.domain.fps,
        "sequence_frames": spec.sequence_frames,
        "structure": {
            "layout": "structure/<split folder>/<image stem>.png, H x 8W palette PNG",
            "yaw_offsets_deg": list(STRUCTURE_YAWS_DEG),
            "part_names": list(PART_NAMES),
        },
    }
    if plan is not None:
        record["counts"] = _counts(plan)
        record["near_duplicates"] = sum(i.near_duplicate_of is not None for i in plan.identities)
    return record


class DatasetDamagedError(RuntimeError):
    """A dataset folder exists but is not the complete dataset its name promises."""


def _check_existing(path: Path, spec: SynthPersonSpec) -> None:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise DatasetDamagedError(
            f"{path} exists but has no {MANIFEST}, so it is not a finished SynthPerson dataset; "
            "it was not written by this generator's atomic publish. "
            "Move or delete it to regenerate."
        )
    found = json.loads(manifest_path.read_text())
    if found.get("generator_version") != GENERATOR_VERSION or found.get("seed") != spec.seed:
        raise DatasetDamagedError(
            f"{path}: {MANIFEST} records generator version {found.get('generator_version')} and "
            f"seed {found.get('seed')}, expected {GENERATOR_VERSION} and {spec.seed}. "
            "Move or delete the folder to regenerate."
        )
    requested = manifest(spec, None)
    for key in ("domain", "preset", "image_size"):
        value = json.loads(json.dumps(requested[key]))
        if found.get(key) != value:
            raise DatasetDamagedError(
                f"{path}: {MANIFEST} records a different {key} than requested (the generator's "
                "built-in settings changed since it was made?). Move or delete it to regenerate."
            )
    for folder, counts in found["counts"].items():
        present = sum(1 for _ in (path / folder).glob("*.jpg")) if (path / folder).is_dir() else 0
        if present != counts["images"]:
            raise DatasetDamagedError(
                f"{path / folder}: expected {counts['images']} images as {MANIFEST} records, found "
                f"{present}. The dataset was modified; move or delete {path} to regenerate."
            )


def generate(spec: SynthPersonSpec, data_dir: str | Path, workers: int | None = None) -> Path:
    """Returns the dataset's folder, generating it first unless a finished one is there.

    Safe to call from several processes at once (e.g. DDP ranks): a file lock makes one of them
    generate while the others wait, then all return the same folder. Generation writes into a
    temporary folder and renames it into place after the manifest is written, so an interrupted
    run never leaves something that looks finished; its leftovers are removed by the next run.
    """

    def build(temporary: Path) -> dict[str, Any]:
        for folder in SPLIT_FOLDERS:
            (temporary / folder).mkdir(parents=True)
            (temporary / "structure" / folder).mkdir(parents=True)
        plan = plan_dataset(spec)
        log.info("generating SynthPerson %s: %d images", spec.dirname, len(plan.files))
        render_files(spec, plan, temporary, workers)
        from reidgen.synthperson.contact_sheet import contact_sheet

        contact_sheet(temporary).save(temporary / "contact_sheet.png")
        return manifest(spec, plan)

    parent = Path(data_dir).expanduser().resolve() / "synthperson"
    return publish(parent, spec.dirname, lambda path: _check_existing(path, spec), build)


def ensure_synthperson(
    data_dir: str | Path,
    domain: str | DomainStyle = "street",
    preset: str | Preset = "small",
    size: Sequence[int] = (128, 64),
    seed: int = 0,
    workers: int | None = None,
) -> Path:
    """The folder of the SynthPerson dataset with these settings, generated on first use."""
    style = domain if isinstance(domain, DomainStyle) else load_domain_style(domain)
    sizes = preset if isinstance(preset, Preset) else get_preset(preset)
    spec = SynthPersonSpec(style, sizes, (int(size[0]), int(size[1])), int(seed))
    return generate(spec, data_dir, workers)
