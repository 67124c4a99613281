"""Indexer for MSMT17 (V1, and V2 with masked faces), defined by its list files.

Layout (``docs/datasets.md`` §4)::

    MSMT17_V1/
        train/0000/0000_000_01_0303morning_0015_0.jpg    (identities 0000-1040)
        test/0000/0000_000_01_0303morning_0036_0.jpg     (identities 0000-3059)
        list_train.txt  list_val.txt                     (paths relative to train/)
        list_query.txt  list_gallery.txt                 (paths relative to test/)
    MSMT17_V2/
        mask_train_v2/...  mask_test_v2/...  + the same four list names

``root`` may be the folder holding ``MSMT17_V1``/``MSMT17_V2`` (fast-reid), ``<root>/msmt17/
MSMT17_Vx`` (torchreid, OpenUnReID, BoT) or the version folder itself. The lists, not the folders,
define the benchmark: a list line is ``0000/0000_000_01_0303morning_0015_0.jpg 0`` (path, label).

File names: ``pid _ image index _ camera (01-15) _ date+time of day _ frame _ index``. The camera
is the third ``_`` field minus 1. The identity comes from the name (checked against the folder),
not from the list label, because the query and gallery lists restart their labels at 0; the labels
are only checked to map one-to-one onto the identities of their list.

Identities: MSMT17 numbers its 1,041 training and 3,060 test identities from 0000 each, and 0000
is a real person (in reidgen pid 0 marks a distractor). ``Sample.pid`` is therefore made globally
unique and positive: a training identity ``p`` becomes ``p + 1`` (1..1041), a test identity
``p + 1042`` (1042..4101), the offset fast-reid also puts on the test pids. Nothing is dropped; no
timestamps (the names carry a frame number but no usable clock).

Training split (``split``): torchreid/fast-reid/BoT train on ``list_train.txt`` only, while the
domain-generalisation papers (QAConv, DomainMix, GCL, CLIP-ReID) train on train + val, 32,621
images of 1,041 identities; reidgen makes it an explicit choice recorded in ``Splits.variant``.
``"all"`` trains on the whole dataset, train + val + query + gallery (4,101 identities, the
"MSMT (all)" rows of QAConv); its query and gallery are then no test set for a model trained on
them.
Evaluate with :class:`~reidgen.eval.protocols.MarketProtocol`.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

from reidgen.data.datasets.layout import NamePattern, examples
from reidgen.data.sample import Sample, Splits

VERSIONS = ("V1", "V2")
# Image folders per version: (training lists, test lists).
IMAGE_FOLDERS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}
TRAIN_LISTS = {
    "trainval": ("list_train.txt", "list_val.txt"),
    "train": ("list_train.txt",),
    "all": ("list_train.txt", "list_val.txt"),  # + query and gallery, see index_msmt17
}
NUM_TRAIN_IDS = 1041  # training identities 0000-1040, the same in V1 and V2
NUM_CAMERAS = 15

MSMT_NAMES = NamePattern(
    "msmt17",
    re.compile(r"^(?P<pid>\d+)_\d+_(?P<camera>\d+)_[^_]+_\d+_\d+$"),
    "0000_000_01_0303morning_0015_0.jpg",
)

_QUERY_GALLERY = {
    "query": {"identities": 3060, "images": 11659, "cameras": NUM_CAMERAS},
    "gallery": {"identities": 3060, "images": 82161, "cameras": NUM_CAMERAS},
}
# datasets.md §1 publishes one row for MSMT17; V2 is V1 with masked faces and the same lists.
# Cameras per split: the torchreid-style statistics log quoted there (CLIP-ReID#40) shows 15 each.
EXPECTED = {
    "trainval": {
        "train": {"identities": 1041, "images": 32621, "cameras": NUM_CAMERAS},
        **_QUERY_GALLERY,
    },
    # list_train.txt alone (30,248 images / 1,041 ids) is marked unverified [I] in datasets.md
    # §1, so its train counts are not recorded.
    "train": dict(_QUERY_GALLERY),
    "all": {
        "train": {"identities": 4101, "images": 32621 + 11659 + 82161, "cameras": NUM_CAMERAS},
        **_QUERY_GALLERY,
    },
}


def index_msmt17(
    root: str | Path,
    name: str = "msmt17",
    version: Literal["auto", "V1", "V2"] = "auto",
    split: Literal["trainval", "train", "all"] = "trainval",
) -> Splits:
    """Indexes MSMT17 from its list files (see the module docstring for layout and ids).

    :param root: a folder holding ``MSMT17_V1``/``MSMT17_V2``, or ``msmt17/MSMT17_Vx`` below it,
        or a version folder itself.
    :param name: the name samples carry.
    :param version: ``"V1"``, ``"V2"`` or ``"auto"`` (the one present; an error if both are).
    :param split: ``"trainval"`` (list_train + list_val), ``"train"`` (list_train only) or
        ``"all"`` (trainval + query + gallery for training).
    :raises FileNotFoundError: no version folder, a missing list file or listed image.
    :raises ValueError: malformed list lines or file names, inconsistent labels, duplicates.
    """
    if version not in ("auto", *VERSIONS):
        raise ValueError(f"version must be 'auto', 'V1' or 'V2', got {version!r}")
    if split not in TRAIN_LISTS:
        raise ValueError(f"split must be 'trainval', 'train' or 'all', got {split!r}")
    version, folder = _find_version(Path(root).expanduser(), name, version)
    train_dir, test_dir = (folder / f for f in IMAGE_FOLDERS[version])
    if not test_dir.is_dir():
        raise FileNotFoundError(
            f"dataset {name!r}: {folder} lacks the test images {test_dir.name}/"
        )
    lists = {
        "train": [folder / f for f in TRAIN_LISTS[split]],
        "query": [folder / "list_query.txt"],
        "gallery": [folder / "list_gallery.txt"],
    }
    missing = [str(p) for files in lists.values() for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"dataset {name!r}: list file(s) not found: {', '.join(missing)}")

    on_disk = {train_dir: _files_under(train_dir), test_dir: _files_under(test_dir)}
    samples: dict[str, list[Sample]] = {}
    for part, files in lists.items():
        image_dir = train_dir if part == "train" else test_dir
        pid_offset = 1 if part == "train" else 1 + NUM_TRAIN_IDS
        entries = [e for f in files for e in _read_list(f, image_dir, on_disk[image_dir])]
        _check_unique(entries, files)
        if part == "train":
            _check_train_ids(entries, files)
        samples[part] = [
            Sample(
                path=str(image_dir / relpath),
                pid=pid + pid_offset,
                camid=camera - 1,
                dataset=name,
            )
            for relpath, pid, camera in entries
        ]
    if split == "all":
        samples["train"] = samples["train"] + samples["query"] + samples["gallery"]
    return Splits(
        name,
        samples["train"],
        samples["query"],
        samples["gallery"],
        dropped={"train": 0, "query": 0, "gallery": 0},
        variant=f"MSMT17_{version} {split}",
        expected={part: dict(counts) for part, counts in EXPECTED[split].items()},
    )


def _find_version(root: Path, name: str, version: str) -> tuple[str, Path]:
    """The version and the folder holding its images and lists, for any of the accepted roots."""
    wanted = VERSIONS if version == "auto" else (version,)
    looked: list[str] = []
    found: dict[str, Path] = {}
    for v in wanted:
        train_folder = IMAGE_FOLDERS[v][0]
        for candidate in (root, root / f"MSMT17_{v}", root / "msmt17" / f"MSMT17_{v}"):
            looked.append(f"{candidate / train_folder}/")
            if (candidate / train_folder).is_dir():
                found[v] = candidate
                break
    if len(found) > 1:
        raise ValueError(
            f"dataset {name!r}: both MSMT17 versions are present ("
            + ", ".join(f"{v} at {p}" for v, p in found.items())
            + "); choose one with version='V1' or version='V2'"
        )
    if not found:
        raise FileNotFoundError(
            f"dataset {name!r}: no MSMT17 {' or '.join(wanted)} found under {root}; looked for "
            f"{', '.join(looked)}; expected an MSMT17_V1 folder with train/, test/ and "
            "list_{train,val,query,gallery}.txt (MSMT17_V2: mask_train_v2/, mask_test_v2/)"
        )
    return next(iter(found.items()))


def _read_list(list_file: Path, image_dir: Path, on_disk: set[str]) -> list[tuple[str, int, int]]:
    """``(relative path, pid, camera)`` per line of ``list_file``, in file order.

    Checks the line format, the file names, folder = name identity, camera range, one label per
    identity (and vice versa) and that every listed image is in ``on_disk`` (the files below
    ``image_dir``).
    """
    entries: list[tuple[str, int, int]] = []
    labels: list[int] = []
    bad_lines: list[str] = []
    malformed: list[str] = []
    wrong_folder: list[str] = []
    bad_camera: list[str] = []
    lines = list_file.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not re.fullmatch(r"-?\d+", fields[1]):
            bad_lines.append(f"line {number}: {line.strip()!r}")
            continue
        relpath = fields[0]
        path = Path(relpath)
        match = MSMT_NAMES.regex.match(path.stem)
        if match is None:
            malformed.append(relpath)
            continue
        pid, camera = int(match["pid"]), int(match["camera"])
        if path.parent != Path(".") and (
            not path.parent.name.isdigit() or int(path.parent.name) != pid
        ):
            wrong_folder.append(relpath)
            continue
        if not 1 <= camera <= NUM_CAMERAS:
            bad_camera.append(relpath)
            continue
        entries.append((relpath, pid, camera))
        labels.append(int(fields[1]))
    if bad_lines:
        raise ValueError(
            f"{list_file}: {len(bad_lines)} line(s) are not '<relative path> <integer label>' "
            f"(e.g. '0000/{MSMT_NAMES.example} 0'): {examples(bad_lines)}"
        )
    if malformed:
        raise ValueError(
            f"{list_file}: {len(malformed)} file name(s) do not match the {MSMT_NAMES.name} "
            f"naming (expected e.g. {MSMT_NAMES.example}, pattern {MSMT_NAMES.regex.pattern}): "
            f"{examples(malformed)}"
        )
    if wrong_folder:
        raise ValueError(
            f"{list_file}: {len(wrong_folder)} file(s) sit in a folder that is not their identity "
            f"(expected e.g. 0000/{MSMT_NAMES.example}): {examples(wrong_folder)}"
        )
    if bad_camera:
        raise ValueError(
            f"{list_file}: {len(bad_camera)} file(s) name a camera outside 1..{NUM_CAMERAS}: "
            f"{examples(bad_camera)}"
        )
    _check_labels(list_file, entries, labels)
    missing = [relpath for relpath, _, _ in entries if Path(relpath).as_posix() not in on_disk]
    if missing:
        raise FileNotFoundError(
            f"{list_file}: {len(missing)} listed image(s) not found under {image_dir}/: "
            f"{examples(missing)}"
        )
    return entries


def _check_labels(list_file: Path, entries: list[tuple[str, int, int]], labels: list[int]) -> None:
    """The list labels must be a renaming of the file-name identities, one-to-one."""
    labels_of: dict[int, set[int]] = defaultdict(set)
    pids_of: dict[int, set[int]] = defaultdict(set)
    for (_, pid, _), label in zip(entries, labels, strict=True):
        labels_of[pid].add(label)
        pids_of[label].add(pid)
    clashes = [
        f"identity {p:04d} has labels {sorted(s)}" for p, s in labels_of.items() if len(s) > 1
    ]
    clashes += [
        f"label {lb} covers identities {sorted(s)}" for lb, s in pids_of.items() if len(s) > 1
    ]
    if clashes:
        raise ValueError(
            f"{list_file}: the labels do not match the identities in the file names one-to-one "
            f"({len(clashes)} clash(es)): {examples(sorted(clashes))}"
        )


def _files_under(image_dir: Path) -> set[str]:
    """Every file below ``image_dir`` as a relative POSIX path.

    One directory walk instead of a stat per listed image (MSMT17 lists about 126k of them).
    """
    return {
        Path(folder, f).relative_to(image_dir).as_posix()
        for folder, _, files in os.walk(image_dir)
        for f in files
    }


def _check_unique(entries: list[tuple[str, int, int]], files: list[Path]) -> None:
    counts = Counter(relpath for relpath, _, _ in entries)
    repeated = sorted(p for p, n in counts.items() if n > 1)
    if repeated:
        raise ValueError(
            f"{', '.join(map(str, files))}: {len(repeated)} image(s) listed more than once: "
            f"{examples(repeated)}"
        )


def _check_train_ids(entries: list[tuple[str, int, int]], files: list[Path]) -> None:
    """Training identities must stay below the offset that keeps test pids apart from them."""
    beyond = sorted({p for p, pid, _ in entries if pid >= NUM_TRAIN_IDS})
    if beyond:
        raise ValueError(
            f"{', '.join(map(str, files))}: {len(beyond)} training image(s) have an identity "
            f"above {NUM_TRAIN_IDS - 1:04d}, the last MSMT17 training identity: {examples(beyond)}"
        )
