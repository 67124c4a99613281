"""Indexers for the synthetic person datasets: RandPerson, PersonX, UnrealPerson, ClonedPerson.

Synthetic datasets reuse identity and camera numbers across their scenes, versions and
backgrounds, so every indexer here builds keys that stay unique over the whole dataset (details
in each function's docstring; ``docs/datasets.md`` §8-§11):

==============  ==============================  ===============================  ==============
dataset         ``Sample.pid``                  ``Sample.camid``                 splits
==============  ==============================  ===============================  ==============
RandPerson      file pid + 1                    scene offset + camera (19)       train only
PersonX         file pid                        sorted (subset, camera) pairs    train/query/gal
UnrealPerson    version * 100000 + pid          sorted (environment, camera)     train only
ClonedPerson    file pid (from 700000)          sorted (scene, camera) pairs     train/query/gal
==============  ==============================  ===============================  ==============

A training-only dataset returns empty query and gallery lists. Where cameras are numbered by
sorting keys, the order is over all three splits together, so query and gallery agree.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from reidgen.data.datasets.layout import (
    IMAGE_SUFFIXES,
    SPLIT_FOLDERS,
    NamePattern,
    examples,
    find_dataset_root,
    list_images,
)
from reidgen.data.sample import Sample, Splits

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

SCENE_FPS = 24.0
"""Frame rate of RandPerson and ClonedPerson renderings (QAConv's loaders, docs/methods/qaconv.md
§7.1)."""

# Global camera of scene s = RANDPERSON_CAMERA_OFFSETS[s] + scene-local camera: 19 cameras over
# the 11 scenes (docs/methods/qaconv.md §7.1; the official RandPerson loader uses the same table).
RANDPERSON_CAMERA_OFFSETS = (0, 2, 4, 6, 8, 9, 10, 12, 13, 14, 15)
# Frame offset of each scene, so that time = (offset + frame) / 24 lies on one clock per scene.
# Not in docs/datasets.md: the numbers are those of QAConv's reid/datasets/randperson.py (HEAD).
RANDPERSON_FRAME_OFFSETS = (
    0,
    160000,
    340000,
    490000,
    640000,
    1070000,
    1330000,
    1590000,
    1890000,
    3190000,
    3490000,
)

# RandPerson / ClonedPerson: pid, then scene, camera and frame fields in either order.
SCENE_NAMES = NamePattern(
    "RandPerson",
    re.compile(r"^(?P<pid>-1|\d+)(?P<fields>(?:_[scf]\d+){3})$"),
    "000000_s00_c00_f000228.jpg (or 000000_c00_s00_f000228.jpg)",
)
_SCENE_FIELD = re.compile(r"_([scf])(\d+)")

# PersonX releases only fix the start of the name; whatever follows the camera is not used.
PERSONX_NAMES = NamePattern(
    "PersonX",
    re.compile(r"^(?P<pid>-1|\d+)_c(?P<camera>\d+)(?:\D.*)?$"),
    "0001_c3<anything>.jpg",
)

UNREAL_NAMES = NamePattern(
    "UnrealPerson",
    re.compile(r"^(?P<pid>\d+)_c(?P<camera>\d+)_(?P<frame>\d+)$"),
    "unreal_v3.1/images/333_c001_78.jpg",
)
# The tail of a listed path that names environment X, human-model version Y and the file.
_UNREAL_PATH = re.compile(r"(?:^|/)unreal_v(?P<env>\d+)\.(?P<version>\d+)/images/(?P<file>[^/]+)$")
_UNREAL_FOLDER = re.compile(r"unreal_v(?P<env>\d+)\.(?P<version>\d+)")
UNREAL_VERSION_STRIDE = 100_000
"""UnrealPerson pid = version * stride + file pid, unique over versions and readable."""

PERSONX_SUBSET1 = {
    # docs/datasets.md §1 (OpenUnReID personx.py docstring). The images are verified; the
    # 410 / 856 identity split is marked unverified [I]; the table gives 6 cameras for the
    # dataset, taken here for each split.
    "train": {"identities": 410, "images": 9840, "cameras": 6},
    "query": {"identities": 856, "images": 5136, "cameras": 6},
    "gallery": {"identities": 856, "images": 30816, "cameras": 6},
}
RANDPERSON_SUBSET = {
    # docs/datasets.md §1: ids and images verified (README); 19 cameras unverified [I] (derived
    # from QAConv's camera-offset table).
    "train": {"identities": 8000, "images": 132145, "cameras": 19},
}
UNREAL_TRAIN_LIST = {
    # docs/datasets.md §1: list_unreal_train.txt subset, verified (IDM / tllib docstrings).
    "train": {"identities": 3000, "images": 120000, "cameras": 34},
}
UNREAL_STANDARD_LIST = "list_unreal_train.txt"


@dataclass(frozen=True)
class _SceneName:
    path: str
    pid: int
    scene: int
    camera: int  # scene-local, as in the name
    frame: int
    scene_first: bool  # field order in the name: _s.._c.. (True) or _c.._s.. (False)


def _dense(keys: Iterable[K]) -> dict[K, int]:
    """Numbers distinct keys 0..n-1 in sorted order: deterministic on every machine."""
    return {key: i for i, key in enumerate(sorted(set(keys)))}


def _malformed(where: Path | str, bad: Sequence[str], names: NamePattern) -> ValueError:
    return ValueError(
        f"{where}: {len(bad)} file name(s) do not match the {names.name} naming "
        f"(expected e.g. {names.example}, pattern {names.regex.pattern}): {examples(bad)}"
    )


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir()
    )


def _is_market_folder(folder: Path) -> bool:
    return all((folder / f).is_dir() for f in SPLIT_FOLDERS.values())


def _find(
    dataset: str, candidates: Sequence[Path], accepts: Callable[[Path], bool], expected: str
) -> Path:
    """The first candidate folder that ``accepts``; else an error naming every path tried.

    Like :func:`~reidgen.data.datasets.layout.find_dataset_root`, for layouts that are not a
    fixed set of sub-folders (a flat image folder, ``unreal_v*`` folders).
    """
    for folder in candidates:
        if accepts(folder):
            return folder
    looked = [f"{c} ({'holds none' if c.is_dir() else 'does not exist'})" for c in candidates]
    raise FileNotFoundError(
        f"dataset {dataset!r}: no {expected} found; looked in:\n  " + "\n  ".join(looked)
    )


def _parse_scene_names(folder: Path) -> list[_SceneName]:
    """Parses RandPerson-style names by the prefix letter of each field, not its position."""
    parsed: list[_SceneName] = []
    malformed: list[str] = []
    for path in list_images(folder):
        match = SCENE_NAMES.regex.match(path.stem)
        fields = dict(_SCENE_FIELD.findall(match["fields"])) if match else {}
        if len(fields) != 3:  # no match, or a letter given twice and another one missing
            malformed.append(path.name)
            continue
        parsed.append(
            _SceneName(
                path=str(path),
                pid=int(match["pid"]),
                scene=int(fields["s"]),
                camera=int(fields["c"]),
                frame=int(fields["f"]),
                scene_first=match["fields"].index("_s") < match["fields"].index("_c"),
            )
        )
    if malformed:
        raise _malformed(folder, malformed, SCENE_NAMES)
    if not parsed:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return parsed


def _field_order(records: Sequence[_SceneName]) -> str:
    orders = {r.scene_first for r in records}
    if orders == {True, False}:
        return "_s_c_ and _c_s_ names"
    return "_s_c_ names" if True in orders else "_c_s_ names"


def index_randperson(
    root: str | Path, name: str = "randperson", fps: float | None = SCENE_FPS
) -> Splits:
    """Indexes the released RandPerson training subset (training only; query/gallery are empty).

    Layout: one flat folder of crops, found as ``<root>/``, ``<root>/randperson_subset/`` (QAConv)
    or ``<root>/randperson_subset/randperson_subset/`` (DomainMix). Names:
    ``000000_s00_c00_f000228.jpg`` = pid, scene 00-10, camera within the scene, frame; an older
    release writes ``000000_c00_s00_f000228.jpg``, so fields are read by their prefix letter.

    - ``pid`` = file pid + 1: RandPerson numbers people from 000000, and reidgen reserves pid 0
      for gallery distractors.
    - ``camid`` = ``RANDPERSON_CAMERA_OFFSETS[scene] + camera`` (19 cameras): cameras are
      scene-local in the names, so c00 of scene 00 and c00 of scene 01 are different cameras.
      A camera beyond its scene's share of the table (e.g. c01 in scene 04, which owns one
      camera) would collide with the next scene and is an error.
    - pid -1 (junk; not expected in RandPerson) would be dropped and counted.
    - ``timestamp`` = ``(RANDPERSON_FRAME_OFFSETS[scene] + frame) / fps`` seconds (24 fps), as
      QAConv's TLift reads it; ``fps=None`` leaves it ``None``.

    The variant string also says which field order(s) the names on disk use.
    """
    root = Path(root).expanduser()
    folder = _find(
        name,
        [root, root / "randperson_subset", root / "randperson_subset" / "randperson_subset"],
        _has_images,
        f"folder of RandPerson images named like {SCENE_NAMES.example}",
    )
    records = _parse_scene_names(folder)
    last_scene = len(RANDPERSON_CAMERA_OFFSETS) - 1
    bad = [
        Path(r.path).name
        for r in records
        if r.scene > last_scene
        or (
            r.scene < last_scene
            and r.camera
            >= RANDPERSON_CAMERA_OFFSETS[r.scene + 1] - RANDPERSON_CAMERA_OFFSETS[r.scene]
        )
    ]
    if bad:
        raise ValueError(
            f"{folder}: {len(bad)} file(s) name a scene outside 00-{last_scene:02d} or a camera "
            f"beyond that scene's cameras (scene camera offsets {RANDPERSON_CAMERA_OFFSETS}): "
            f"{examples(bad)}"
        )
    kept = [r for r in records if r.pid != -1]  # RandPerson has no junk; drop it if present
    train = [
        Sample(
            path=r.path,
            pid=r.pid + 1,
            camid=RANDPERSON_CAMERA_OFFSETS[r.scene] + r.camera,
            dataset=name,
            timestamp=(
                None if fps is None else (RANDPERSON_FRAME_OFFSETS[r.scene] + r.frame) / fps
            ),
        )
        for r in kept
    ]
    return Splits(
        name,
        train,
        [],
        [],
        dropped={"train": len(records) - len(kept), "query": 0, "gallery": 0},
        variant=f"RandPerson subset ({_field_order(records)})",
        expected=RANDPERSON_SUBSET,
    )


def index_clonedperson(
    root: str | Path, name: str = "clonedperson", fps: float | None = SCENE_FPS
) -> Splits:
    """Indexes ClonedPerson: ``train/``, ``test/query/``, ``test/gallery/``.

    The root may be the dataset folder itself or a folder holding ``ClonedPerson/`` or
    ``clonedperson/``. Names follow RandPerson: ``700000_s02_c00_f023389.jpg`` = pid (from
    700000), scene, camera within the scene, frame (fields read by prefix letter).

    - ``pid`` = file pid; pid -1 (junk) is dropped from every split and counted.
    - ``camid``: cameras are scene-local, so each distinct (scene, camera) pair over all three
      splits is one camera, numbered in sorted order. QAConv's loader instead overwrites the
      scene with a constant, which merges the cameras of different scenes; reidgen keeps them
      apart (docs/datasets.md expects 24 cameras, unverified).
    - ``timestamp`` = ``frame / fps`` seconds (24 fps) on the clock of the (scene, camera).

    ``expected`` is ``None``: only the totals (5,621 ids, 887,766 images) are published.
    Evaluate with the Market protocol (same pid and camera removed from the gallery).
    """
    root = Path(root).expanduser()
    folders = {"train": Path("train"), "query": Path("test/query"), "gallery": Path("test/gallery")}
    base = find_dataset_root(
        root, name, ["", "ClonedPerson", "clonedperson"], [str(f) for f in folders.values()]
    )
    parsed = {split: _parse_scene_names(base / folder) for split, folder in folders.items()}
    kept = {split: [r for r in records if r.pid != -1] for split, records in parsed.items()}
    # Numbered over what is kept, so that camera ids are dense.
    camera_of = _dense((r.scene, r.camera) for records in kept.values() for r in records)
    samples: dict[str, list[Sample]] = {}
    for split, records in kept.items():
        samples[split] = [
            Sample(
                path=r.path,
                pid=r.pid,
                camid=camera_of[(r.scene, r.camera)],
                dataset=name,
                timestamp=None if fps is None else r.frame / fps,
            )
            for r in records
        ]
    all_records = [r for records in parsed.values() for r in records]
    return Splits(
        name,
        samples["train"],
        samples["query"],
        samples["gallery"],
        dropped={split: len(parsed[split]) - len(kept[split]) for split in parsed},
        variant=f"ClonedPerson ({_field_order(all_records)})",
        expected=None,
    )


def _personx_subsets(root: Path, dataset: str, subsets: Sequence[str] | None) -> list[Path]:
    """The Market-layout folders to read (see :func:`index_personx` for the rules)."""
    if subsets is None and _is_market_folder(root):
        return [root]
    bases = [root, root / "PersonX_v1", root / "personx", root / "PersonX"]
    base = _find(
        dataset,
        bases,
        lambda d: d.is_dir() and any(_is_market_folder(s) for s in d.iterdir() if s.is_dir()),
        "PersonX folder with bounding_box_train/, query/, bounding_box_test/ (the root, or "
        "a subset folder in it)",
    )
    available = sorted(s.name for s in base.iterdir() if s.is_dir() and _is_market_folder(s))
    if subsets is not None:
        missing = [s for s in subsets if s not in available]
        if missing:
            raise FileNotFoundError(
                f"dataset {dataset!r}: {base} lacks the PersonX subset(s) {', '.join(missing)} "
                f"(each needs bounding_box_train/, query/, bounding_box_test/); found: "
                f"{', '.join(available)}"
            )
        chosen = sorted(set(subsets))
    elif "subset1" in available:
        chosen = ["subset1"]
    elif len(available) == 1:
        chosen = available
    elif {"4", "5", "6"} <= set(available):
        chosen = ["4", "5", "6"]
    else:
        raise ValueError(
            f"dataset {dataset!r}: {base} holds several PersonX subsets ({', '.join(available)}) "
            f"and none is the usual choice; pass subsets=[...] to pick"
        )
    return [base / s for s in chosen]


def index_personx(
    root: str | Path, name: str = "personx", subsets: Sequence[str] | None = None
) -> Splits:
    """Indexes PersonX in the Market-like image release.

    Each subset (a background, or a prepared split) is a folder with ``bounding_box_train/``,
    ``query/``, ``bounding_box_test/``. Accepted roots: one such folder itself, or a folder
    holding subset folders, directly or under ``PersonX_v1/``, ``personx/`` or ``PersonX/``:

    - ``personx/subset1/`` (OpenUnReID): the published 410/856-identity split (``expected``);
    - ``PersonX_v1/{4,5,6}/`` (IDM/SpCL): subsets 4, 5 and 6 read together;
    - any other subset(s) via ``subsets=[...]``.

    Without ``subsets``: the root itself if it is a subset folder, else ``subset1`` if present,
    else the only subset, else subsets 4+5+6 if present; otherwise an error asks to choose.

    Names start with ``<pid>_c<camera>`` (e.g. ``0001_c3...jpg``); the rest is not used.

    - ``pid`` = file pid, the same person in every subset. pid -1 (junk) and pid 0 are dropped
      from every split and counted: the PersonX instructions render pid 0 as a copy of pid 1 to
      start the capture, so it is neither a new identity nor a true distractor.
    - ``camid``: each distinct (subset, camera) pair over all splits is one camera, numbered
      in sorted order (subset1's cameras 3, 4, 8, 10, 11, 12 become 0-5, as in OpenUnReID).
      Keying by subset keeps two backgrounds' cameras apart if a release reuses numbers.
    - ``timestamp`` is ``None``: PersonX images are rendered viewpoints, not video frames.

    Evaluate with the Market protocol.

    :raises FileNotFoundError: if no subset folder is found (every path tried is named).
    :raises ValueError: naming the folder, if a chosen subset's split folder holds no image or
        names that do not match; if several subsets exist and none is the usual choice.
    """
    root = Path(root).expanduser()
    folders = _personx_subsets(root, name, subsets)
    parsed: dict[str, list[tuple[str, str, int, int]]] = {split: [] for split in SPLIT_FOLDERS}
    for subset in folders:
        for split, folder_name in SPLIT_FOLDERS.items():
            folder = subset / folder_name
            images = list_images(folder)
            if not images:
                # As every other indexer: an empty split folder is a broken copy, not a subset
                # without that split (a missing query/ would make evaluation silently vacuous).
                raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
            malformed: list[str] = []
            for path in images:
                match = PERSONX_NAMES.regex.match(path.stem)
                if match is None:
                    malformed.append(path.name)
                    continue
                parsed[split].append(
                    (str(path), subset.name, int(match["pid"]), int(match["camera"]))
                )
            if malformed:
                raise _malformed(folder, malformed, PERSONX_NAMES)
    kept = {split: [row for row in rows if row[2] > 0] for split, rows in parsed.items()}
    # Numbered over what is kept, so that camera ids are dense.
    camera_of = _dense((subset, camera) for rows in kept.values() for _, subset, _, camera in rows)
    samples = {
        split: [
            Sample(path=path, pid=pid, camid=camera_of[(subset, camera)], dataset=name)
            for path, subset, pid, camera in rows
        ]
        for split, rows in kept.items()
    }
    if not samples["train"] and not samples["query"] and not samples["gallery"]:
        raise ValueError(f"dataset {name!r}: no PersonX images found in {folders[0]}")
    chosen = "+".join(f.name for f in folders)
    return Splits(
        name,
        samples["train"],
        samples["query"],
        samples["gallery"],
        dropped={split: len(parsed[split]) - len(kept[split]) for split in parsed},
        variant=f"PersonX {chosen}",
        expected=PERSONX_SUBSET1 if chosen == "subset1" else None,
    )


def _read_unreal_list(list_path: Path) -> list[tuple[int, str]]:
    """(line number, listed path) per entry; lines are ``relpath pid camid`` (ids not used)."""
    entries: list[tuple[int, str]] = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        fields = line.split()  # the CBN writer leaves a trailing space: split() absorbs it
        if not fields:
            continue
        if len(fields) not in (2, 3) or not all(re.fullmatch(r"-?\d+", f) for f in fields[1:]):
            raise ValueError(
                f"{list_path}:{number}: expected 'relative/path pid camid', got {line.strip()!r}"
            )
        entries.append((number, fields[0].replace("\\", "/")))
    if not entries:
        raise ValueError(f"{list_path}: the list is empty")
    return entries


def _unreal_files(base: Path, list_path: Path | None) -> list[tuple[Path, int, int]]:
    """(image path, environment, version) for every listed image, or every image on disk."""
    files: list[tuple[Path, int, int]] = []
    if list_path is None:
        for folder in sorted(base.glob("unreal_v*.*/images")):
            match = _UNREAL_FOLDER.fullmatch(folder.parent.name)
            if match is None:  # e.g. unreal_v1.1_backup: not part of the release
                log.info("%s: skipped, not named unreal_v<environment>.<version>", folder.parent)
                continue
            env, version = int(match["env"]), int(match["version"])
            files += [(path, env, version) for path in list_images(folder)]
        return files
    for number, listed in _read_unreal_list(list_path):
        match = _UNREAL_PATH.search(listed)
        if match is None:
            raise ValueError(
                f"{list_path}:{number}: path {listed!r} does not end in "
                f"unreal_v<environment>.<version>/images/<file> (e.g. {UNREAL_NAMES.example})"
            )
        image = base / f"unreal_v{match['env']}.{match['version']}" / "images" / match["file"]
        files.append((image, int(match["env"]), int(match["version"])))
    missing = [str(path) for path, _, _ in files if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{list_path}: {len(missing)} of {len(files)} listed image(s) are missing under "
            f"{base}: {examples(missing)}"
        )
    return files


def index_unrealperson(
    root: str | Path,
    name: str = "unrealperson",
    list_file: str | Path | None = UNREAL_STANDARD_LIST,
) -> Splits:
    """Indexes UnrealPerson (training only; query/gallery are empty).

    Layout: ``<root>/unreal_v{X}.{Y}/images/{P}_c{D}_{F}.jpg`` with X the environment (1-4),
    Y the human-model version (1-3), P the person, D the camera, F the frame, e.g.
    ``unreal_v3.1/images/333_c001_78.jpg``. The ``unreal_v*`` folders may also sit under
    ``<root>/unreal/`` or ``<root>/UnrealPerson/``.

    The benchmark is the list file, not the folders: ``list_file`` (default
    ``list_unreal_train.txt``: 3,000 ids, 120,000 images, 34 cameras) is looked for as given if
    absolute, else in the image folder, in ``<root>`` and in ``list_unreal/`` under either.
    Lines are ``relative/path pid camid``; only the path's ``unreal_vX.Y/images/<file>`` tail is
    used (list writers prefix their own data folder), and the ids are recomputed from it, so
    lists from any generator give the same keys. ``list_file=None`` indexes every image.

    - ``pid`` = ``Y * 100000 + P``: one person is one (version, pid) pair, as P repeats across
      versions (e.g. version 3, person 333 is pid 300333).
    - ``camid``: one camera is one (environment, camera) pair, as D repeats across
      environments; the pairs are numbered in sorted order.
    - ``timestamp`` is ``None``: the frame rate of the renderings is not published.
    """
    root = Path(root).expanduser()
    base = _find(
        name,
        [root, root / "unreal", root / "UnrealPerson"],
        lambda d: d.is_dir() and any(d.glob("unreal_v*.*/images")),
        "UnrealPerson folders unreal_v<environment>.<version>/images/",
    )
    list_path: Path | None = None
    if list_file is not None:
        given = Path(list_file).expanduser()
        candidates = (
            [given]
            if given.is_absolute()
            else [base / given, root / given, base / "list_unreal" / given]
            + [root / "list_unreal" / given]
        )
        list_path = next((c for c in candidates if c.is_file()), None)
        if list_path is None:
            raise FileNotFoundError(
                f"dataset {name!r}: list file {list_file} not found; looked for "
                f"{', '.join(str(c) for c in dict.fromkeys(candidates))} (pass list_file=None "
                f"to index every image instead)"
            )
    files = _unreal_files(base, list_path)
    parsed: list[tuple[str, int, tuple[int, int]]] = []
    malformed: list[str] = []
    for path, env, version in files:
        match = UNREAL_NAMES.regex.match(path.stem)
        if match is None or int(match["pid"]) >= UNREAL_VERSION_STRIDE:
            malformed.append(f"{path.parent.parent.name}/images/{path.name}")
            continue
        person = version * UNREAL_VERSION_STRIDE + int(match["pid"])
        parsed.append((str(path), person, (env, int(match["camera"]))))
    if malformed:
        raise _malformed(list_path or base, malformed, UNREAL_NAMES)
    if not parsed:
        raise ValueError(f"dataset {name!r}: no UnrealPerson images found under {base}")
    camera_of = _dense(camera for _, _, camera in parsed)
    train = [
        Sample(path=path, pid=person, camid=camera_of[camera], dataset=name)
        for path, person, camera in parsed
    ]
    if list_path is None:
        versions = len({Path(p).parent.parent.name for p, _, _ in parsed})
        variant, expected = f"UnrealPerson all images ({versions} folders)", None
    else:
        standard = list_path.name == UNREAL_STANDARD_LIST
        variant = f"UnrealPerson {list_path.name}"
        expected = UNREAL_TRAIN_LIST if standard else None
    return Splits(
        name,
        train,
        [],
        [],
        dropped={"train": 0, "query": 0, "gallery": 0},
        variant=variant,
        expected=expected,
    )
