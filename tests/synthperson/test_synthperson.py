"""SynthPerson: determinism, protocol, structure maps, concurrency, interruption, domains."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reidgen.synthperson.generate as generate_module
from reidgen.data.datasets.synthperson import index_synthperson, load_structure
from reidgen.synthperson import (
    BUILTIN_DOMAINS,
    SynthPersonSpec,
    ensure_synthperson,
    load_domain_style,
)
from reidgen.synthperson.__main__ import main as cli_main
from reidgen.synthperson.figure import BACKPACK, PRINT, build_figure
from reidgen.synthperson.generate import (
    DatasetDamagedError,
    camera_looks,
    generate,
    plan_dataset,
)
from reidgen.synthperson.identity import sample_identity
from reidgen.synthperson.presets import Preset, get_preset
from reidgen.synthperson.render import Placement, draw_labels, structure_maps
from reidgen.synthperson.scene import render_job
from reidgen.synthperson.style import STREET, domain_style_from_dict

SMALL_TEST_PRESET = Preset("unit", 24, 24, (3, 4), (3, 4), 0.1, 0.05)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_regeneration_is_byte_identical_whatever_the_worker_count(
    tmp_path: Path, tiny_street: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generate_module, "_PARALLEL_MIN_IMAGES", 0)  # force the process pool
    again = ensure_synthperson(tmp_path, "street", "tiny", workers=2)
    assert _digests(again) == _digests(tiny_street)
    assert len(_digests(again)) > 2 * 150  # images, structure maps, manifest, contact sheet


def test_seed_and_domain_change_the_data(
    tmp_path: Path, tiny_street: Path, tiny_studio: Path
) -> None:
    other_seed = ensure_synthperson(tmp_path, "street", "tiny", seed=1, workers=1)
    assert _digests(other_seed) != _digests(tiny_street)
    studio = json.loads((tiny_studio / "manifest.json").read_text())
    street = json.loads((tiny_street / "manifest.json").read_text())
    assert studio["num_cameras"] == BUILTIN_DOMAINS["studio"].num_cameras != street["num_cameras"]
    assert studio["domain"]["name"] == "studio" and street["seed"] == 0


def test_manifest_records_generation(tiny_street: Path) -> None:
    manifest = json.loads((tiny_street / "manifest.json").read_text())
    assert manifest["generator_version"] == generate_module.GENERATOR_VERSION
    assert manifest["preset"]["name"] == "tiny"
    assert manifest["image_size"] == [128, 64]
    assert manifest["domain"] == STREET.to_dict()
    with Image.open(next((tiny_street / "query").glob("*.jpg"))) as image:
        assert image.size == (64, 128)
    assert Image.open(tiny_street / "contact_sheet.png").size[0] > 64 * STREET.num_cameras


def test_image_size_is_configurable(tmp_path: Path) -> None:
    root = ensure_synthperson(tmp_path, "studio", "tiny", size=(256, 128), workers=1)
    sample = index_synthperson(root).train[0]
    assert Image.open(sample.path).size == (128, 256)
    assert load_structure(sample).shape == (8, 256, 128)


def _flat_scene(spec: SynthPersonSpec):
    """Camera looks with a pure magenta scene and no blur or noise, to find the person's pixels."""
    looks = camera_looks(spec)
    flat = np.zeros_like(looks[0].background)
    flat[..., 0] = flat[..., 2] = 255.0
    return [
        dataclasses.replace(
            look,
            background=flat,
            gain=np.ones(3, np.float32),
            contrast=1.0,
            blur_sigma=0.0,
            noise_std=0.0,
        )
        for look in looks
    ]


def test_structure_maps_align_with_the_person_in_the_image() -> None:
    style = dataclasses.replace(STREET, occlusion_prob=0.0, other_person_prob=0.0)
    spec = SynthPersonSpec(style, get_preset("tiny"))
    plan = plan_dataset(spec)
    looks = _flat_scene(spec)
    plain = [
        i
        for i, person in enumerate(plan.identities)
        if person.backpack is None
        and person.bag is None
        and person.hat is None
        and person.lower_type != "skirt"
        and person.hair_style != "long"
    ]
    assert plain
    checked = 0
    for file_plan in plan.files:
        if file_plan.job.identity not in plain:
            continue
        job = dataclasses.replace(file_plan.job, resolution=1.0)
        image, strip = render_job(
            job, spec.rng("check", checked), plan.identities, looks, style, spec.size
        )
        pixels = np.asarray(image).astype(int)
        background = (pixels[..., 1] < 10) & (pixels[..., 0] > 200) & (pixels[..., 2] > 200)
        body = strip[:, : spec.size[1]] > 0
        overlap = (body & ~background).sum()
        assert overlap / body.sum() > 0.9, "structure map lies outside the person"
        assert overlap / (~background).sum() > 0.75, "person pixels not covered by the body map"
        checked += 1
    assert checked >= 10


def test_structure_views_are_the_body_turned_in_place() -> None:
    person = sample_identity(np.random.default_rng(3), STREET, pid=1)
    placement = Placement(32.0, 120.0, 110.0)
    strip = structure_maps(person, 0.3, 1.0, placement, (128, 64))
    for k in range(8):
        turned = structure_maps(person, 0.3 + math.radians(45 * k), 1.0, placement, (128, 64))
        assert np.array_equal(strip[:, k * 64 : (k + 1) * 64], turned[:, :64])
    rows = [np.nonzero(strip[:, k * 64 : (k + 1) * 64].any(axis=1))[0] for k in range(8)]
    assert len({(r[0], r[-1]) for r in rows}) <= 2  # same height in every view: turned in place
    left_arm_front = (strip[:, :64] == 3).sum()
    left_arm_back = (strip[:, 4 * 64 : 5 * 64] == 3).sum()
    assert left_arm_front > 0 and left_arm_back > 0


def test_stored_structure_matches_a_fresh_render(tiny_street: Path) -> None:
    spec = SynthPersonSpec(STREET, get_preset("tiny"))
    plan = plan_dataset(spec)
    by_name = {f.filename: f for f in plan.files}
    sample = index_synthperson(tiny_street).query[0]
    file_plan = by_name[Path(sample.path).name]
    stored = load_structure(sample)
    assert stored.shape == (8, 128, 64)
    assert stored[0].any() and set(np.unique(stored)) <= set(range(11))
    _, strip = render_job(
        file_plan.job,
        spec.rng("image", plan.files.index(file_plan)),
        plan.identities,
        camera_looks(spec),
        STREET,
        spec.size,
    )
    assert np.array_equal(stored.transpose(1, 0, 2).reshape(128, 8 * 64), strip)


def _area(person, yaw: float, material: int) -> int:
    canvas = Image.new("L", (64, 128), 0)
    draw_labels(canvas, build_figure(person, yaw, 0.5), Placement(32, 122, 112), use_parts=False)
    return int(((np.asarray(canvas) & 15) == material).sum())


def test_viewpoint_decides_what_is_visible() -> None:
    person = dataclasses.replace(
        sample_identity(np.random.default_rng(0), STREET, pid=1),
        backpack=(200, 30, 30),
        upper_pattern="print",
    )
    assert _area(person, math.pi, BACKPACK) > 8 * max(_area(person, 0.0, BACKPACK), 1)
    assert _area(person, 0.0, PRINT) > 10 and _area(person, math.pi, PRINT) == 0
    assert 0 < _area(person, math.pi / 2, BACKPACK) < _area(person, math.pi, BACKPACK)


def test_transit_times_follow_walking_distance() -> None:
    spec = SynthPersonSpec(STREET, get_preset("small"))
    plan = plan_dataset(spec)
    people = [f for f in plan.files if f.pid > 0]
    first_seen: dict[tuple[int, int], tuple[float, int]] = {}
    for f in sorted(people, key=lambda f: f.time_s):
        first_seen.setdefault((f.pid, f.camera), (f.time_s, f.camera))
    per_person: dict[int, list[tuple[float, int]]] = {}
    for (pid, _), seen in first_seen.items():
        per_person.setdefault(pid, []).append(seen)
    distances, gaps = [], []
    for pid, visits in per_person.items():
        speed = next(i.walking_speed for i in plan.identities if i.pid == pid)
        visits.sort()
        for (t0, c0), (t1, c1) in zip(visits[:-1], visits[1:], strict=True):
            distances.append(plan.network.distance(c0, c1) / speed)
            gaps.append(t1 - t0)
    assert len(gaps) > 300
    assert np.corrcoef(distances, gaps)[0, 1] > 0.9
    assert min(gaps) > 5.0  # nobody teleports between cameras


def test_near_duplicates_differ_in_one_or_two_attributes() -> None:
    plan = plan_dataset(SynthPersonSpec(STREET, get_preset("small")))
    by_pid = {i.pid: i for i in plan.identities}
    copies = [i for i in plan.identities if i.near_duplicate_of is not None]
    assert len(copies) > 0.2 * len(plan.identities)
    compared = ("upper", "lower", "shoes", "hair", "backpack", "bag", "hat", "upper_pattern")
    for copy in copies:
        source = by_pid[copy.near_duplicate_of]
        changed = [a for a in compared if getattr(copy, a) != getattr(source, a)]
        assert 1 <= len(changed) <= 2, changed
        assert copy.skin == source.skin and copy.hair_style == source.hair_style


def test_every_identity_is_seen_by_several_cameras_over_time(tiny_street: Path) -> None:
    splits = index_synthperson(tiny_street)
    cameras: dict[int, set[int]] = {}
    for s in splits.train:
        cameras.setdefault(s.pid, set()).add(s.camid)
    assert min(len(c) for c in cameras.values()) >= 2


def test_concurrent_requests_generate_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import logging
        logging.basicConfig(level=logging.INFO)
        from reidgen.synthperson import ensure_synthperson
        print(ensure_synthperson({str(tmp_path)!r}, "studio", "tiny", workers=1))
        """
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    assert len({out.strip() for out, _ in outputs}) == 1
    assert sum("generating SynthPerson" in err for _, err in outputs) == 1
    entries = [p.name for p in (tmp_path / "synthperson").iterdir() if not p.name.endswith(".lock")]
    assert entries == ["studio-tiny-128x64-seed0"]


def test_interrupted_generation_is_redone(tmp_path: Path) -> None:
    spec = SynthPersonSpec(STREET, SMALL_TEST_PRESET)
    script = textwrap.dedent(
        f"""
        from reidgen.synthperson.generate import SynthPersonSpec, generate
        from reidgen.synthperson.presets import Preset
        from reidgen.synthperson.style import STREET
        generate(SynthPersonSpec(STREET, Preset{tuple(dataclasses.astuple(SMALL_TEST_PRESET))!r}),
                 {str(tmp_path / "a")!r}, workers=1)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    parent = tmp_path / "a" / "synthperson"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = list(parent.glob(".*.tmp-*/bounding_box_*/*.jpg")) if parent.exists() else []
        if len(partial) >= 20:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (parent / spec.dirname).exists(), "a partial dataset was published"
    assert list(parent.glob(".*.tmp-*")), "expected the leftovers of the killed run"

    redone = generate(spec, tmp_path / "a", workers=1)
    assert not list(parent.glob(".*.tmp-*"))
    assert _digests(redone) == _digests(generate(spec, tmp_path / "b", workers=1))


def test_damaged_or_foreign_folders_are_reported_not_overwritten(
    tmp_path: Path, tiny_street: Path
) -> None:
    copy = tmp_path / "synthperson" / tiny_street.name
    shutil.copytree(tiny_street, copy)
    victim = next((copy / "query").glob("*.jpg"))
    victim.unlink()
    with pytest.raises(DatasetDamagedError, match=r"query: expected \d+ images"):
        ensure_synthperson(tmp_path, "street", "tiny")
    shutil.rmtree(copy)
    copy.mkdir()
    (copy / "mine.txt").write_text("user data")
    with pytest.raises(DatasetDamagedError, match="no manifest.json"):
        ensure_synthperson(tmp_path, "street", "tiny")
    assert (copy / "mine.txt").read_text() == "user data"


def test_custom_domain_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "campus.yaml"
    path.write_text("base: street\nnum_cameras: 3\nbackground_colours: ['#405060', [90, 90, 90]]\n")
    style = load_domain_style(path)
    assert style.name == "campus" and style.num_cameras == 3
    assert style.background_colours == ((64, 80, 96), (90, 90, 90))
    root = ensure_synthperson(tmp_path, style, "tiny", workers=1)
    assert root.name.startswith("campus-") and root.name.endswith("-tiny-128x64-seed0")
    assert {s.camid for s in index_synthperson(root).train} <= {0, 1, 2}
    with pytest.raises(ValueError, match=r"unknown SynthPerson domain key\(s\) \['num_camera'\]"):
        domain_style_from_dict({"base": "street", "num_camera": 3})
    with pytest.raises(ValueError, match="not a built-in domain"):
        load_domain_style("moon")


def test_domains_differ_in_look(tiny_street: Path, tiny_studio: Path) -> None:
    def stats(root: Path) -> tuple[float, float]:
        images = [np.asarray(Image.open(p), dtype=np.float32) for p in sorted(root.glob("*/*.jpg"))]
        saturation = np.mean([(im.max(-1) - im.min(-1)).mean() for im in images])
        return float(saturation), float(np.mean([im.mean() for im in images]))

    studio_saturation, studio_brightness = stats(tiny_studio)
    street_saturation, street_brightness = stats(tiny_street)
    assert studio_saturation > street_saturation * 1.2  # vivid synthetic clothes
    assert studio_brightness > street_brightness + 30  # lit studio versus outdoor cameras


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = tmp_path / "sheet.png"
    cli_main(
        [
            "--domain",
            "studio",
            "--preset",
            "tiny",
            "--data-dir",
            str(tmp_path),
            "--workers",
            "1",
            "--contact-sheet",
            str(sheet),
        ]
    )
    out = capsys.readouterr().out
    assert "SynthPerson studio/tiny" in out and "bounding_box_train" in out
    assert sheet.is_file()
    with pytest.raises(SystemExit):
        cli_main(["--size", "128-64"])
