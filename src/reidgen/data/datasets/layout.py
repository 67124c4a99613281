"""What the dataset indexers share: the Market-1501 folder layout and its file names, image
listing, error-message examples, and the search for a dataset's root folder.

Layout: ``<root>/bounding_box_train``, ``<root>/query``, ``<root>/bounding_box_test``, one image
per detection, identity and camera in the file name:

- Market-1501 names: ``0002_c1s1_000451_03.jpg`` = pid, camera (1-based), recording sequence,
  frame within the sequence, detection index in the frame. pid ``-1`` is junk, ``0000`` a
  distractor.
- DukeMTMC-reID names: ``0005_c2_f0046985.jpg`` = pid, camera, frame.

Protocol at index time: junk (pid -1) is dropped from every split; distractors (pid 0) stay in the
gallery as negatives and are dropped from train and query, where they mean nothing. Both drops are
counted in :attr:`Splits.dropped`.

Timestamps (seconds, per-camera clock) for temporal methods, when ``fps`` is given:

- Market names: the frame counter restarts with each sequence, so a sequence's offset is either
  ``(s - 1) * sequence_frames`` (SynthPerson, whose sequences have a fixed length) or, when
  ``sequence_frames`` is None, the sum of the largest frame number seen in each earlier sequence
  of that camera over all three splits (what QAConv's TLift does for Market-1501).
- Duke names: frame plus a per-camera offset (``camera_frame_offsets``).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reidgen.data.sample import Sample, Splits

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


@dataclass(frozen=True)
class NamePattern:
    """How identity, camera and time are written in a file name (without its suffix)."""

    name: str
    regex: re.Pattern[str]
    example: str


MARKET_NAMES = NamePattern(
    "market",
    re.compile(r"^(?P<pid>-1|\d+)_c(?P<camera>\d+)s(?P<sequence>\d+)_(?P<frame>\d+)_\d+$"),
    "0002_c1s1_000451_03.jpg",
)
DUKE_NAMES = NamePattern(
    "duke",
    re.compile(r"^(?P<pid>-1|\d+)_c(?P<camera>\d+)_f(?P<frame>\d+)$"),
    "0005_c2_f0046985.jpg",
)


@dataclass(frozen=True)
class ParsedName:
    path: str
    pid: int
    camera: int  # 1-based, as in the name
    sequence: int
    frame: int


def examples(items: Sequence[str]) -> str:
    """The first five items for an error message, with an ellipsis when there are more."""
    return ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")


def list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = len(files) - len(images)
    if skipped:
        # Real copies carry e.g. Thumbs.db; they are not data, but say they were seen.
        log.info("%s: skipped %d non-image file(s)", folder, skipped)
    return images


def parse_folder(folder: Path, names: NamePattern, num_cameras: int | None) -> list[ParsedName]:
    """Every image of ``folder`` parsed with ``names``; raises ``ValueError`` listing the files
    whose names do not match or whose camera exceeds ``num_cameras``."""
    parsed: list[ParsedName] = []
    malformed: list[str] = []
    bad_camera: list[str] = []
    for path in list_images(folder):
        match = names.regex.match(path.stem)
        if match is None:
            malformed.append(path.name)
            continue
        camera = int(match["camera"])
        if camera < 1 or (num_cameras is not None and camera > num_cameras):
            bad_camera.append(path.name)
            continue
        fields = match.groupdict()
        parsed.append(
            ParsedName(
                path=str(path),
                pid=int(fields["pid"]),
                camera=camera,
                # Namings without these fields (e.g. CUHK03-NP) have no clock to build.
                sequence=int(fields.get("sequence") or 1),
                frame=int(fields.get("frame") or 0),
            )
        )
    if malformed:
        raise ValueError(
            f"{folder}: {len(malformed)} file name(s) do not match the {names.name} naming "
            f"(expected e.g. {names.example}, pattern {names.regex.pattern}): "
            f"{examples(malformed)}"
        )
    if bad_camera:
        raise ValueError(
            f"{folder}: {len(bad_camera)} file(s) name a camera outside 1..{num_cameras}: "
            f"{examples(bad_camera)}"
        )
    if not parsed:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return parsed


def _sequence_offsets(
    records: Sequence[ParsedName], sequence_frames: int | None
) -> dict[tuple[int, int], int]:
    """Frame offset of each (camera, sequence), so that offset + frame is a per-camera clock."""
    if sequence_frames is not None:
        return {(r.camera, r.sequence): (r.sequence - 1) * sequence_frames for r in records}
    longest: dict[int, dict[int, int]] = defaultdict(dict)
    for r in records:
        seen = longest[r.camera]
        seen[r.sequence] = max(seen.get(r.sequence, 0), r.frame)
    offsets: dict[tuple[int, int], int] = {}
    for camera, sequences in longest.items():
        total = 0
        for sequence in sorted(sequences):
            offsets[(camera, sequence)] = total
            total += sequences[sequence]
    return offsets


def index_market_layout(
    root: str | Path,
    dataset: str,
    names: NamePattern = MARKET_NAMES,
    num_cameras: int | None = None,
    fps: float | None = None,
    sequence_frames: int | None = None,
    camera_frame_offsets: Sequence[int] | None = None,
    split_folders: Mapping[str, str] = SPLIT_FOLDERS,
) -> Splits:
    """Indexes the three split folders under ``root`` into sorted :class:`Sample` lists.

    :param root: the folder that holds ``bounding_box_train``, ``query`` and ``bounding_box_test``.
    :param dataset: the name samples carry (keys pid relabelling across sources).
    :param names: the file-name convention (:data:`MARKET_NAMES` or :data:`DUKE_NAMES`).
    :param num_cameras: if given, camera numbers outside 1..num_cameras are an error.
    :param fps: frame rate for timestamps; ``None`` gives samples without timestamps.
    :param sequence_frames: fixed sequence length (Market names); see the module docstring.
    :param camera_frame_offsets: per-camera frame offsets (0-based camera index), Duke names.
    :param split_folders: folder of each split (``train``, ``query``, ``gallery``) under ``root``;
        other datasets with one folder per split (e.g. VeRi-776) use their own names.
    """
    root = Path(root).expanduser()
    expected = ", ".join(f"{f}/" for f in split_folders.values())
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset {dataset!r}: folder {root} does not exist; "
            f"expected a folder holding {expected}"
        )
    missing = [f for f in split_folders.values() if not (root / f).is_dir()]
    if missing:
        present = sorted(p.name for p in root.iterdir())
        raise FileNotFoundError(
            f"dataset {dataset!r}: {root} lacks {', '.join(f'{m}/' for m in missing)}; expected "
            f"{expected} (found: {', '.join(present[:10]) or 'nothing'})"
        )
    parsed = {
        split: parse_folder(root / folder, names, num_cameras)
        for split, folder in split_folders.items()
    }
    offsets = (
        _sequence_offsets([r for records in parsed.values() for r in records], sequence_frames)
        if fps is not None
        else {}
    )

    def timestamp(record: ParsedName) -> float | None:
        if fps is None:
            return None
        if camera_frame_offsets is not None:
            return (record.frame + camera_frame_offsets[record.camera - 1]) / fps
        return (offsets[(record.camera, record.sequence)] + record.frame) / fps

    samples: dict[str, list[Sample]] = {}
    dropped: dict[str, int] = {}
    for split, records in parsed.items():
        keep_distractors = split == "gallery"
        kept = [r for r in records if r.pid > 0 or (r.pid == 0 and keep_distractors)]
        dropped[split] = len(records) - len(kept)
        samples[split] = [
            Sample(
                path=r.path,
                pid=r.pid,
                camid=r.camera - 1,
                dataset=dataset,
                timestamp=timestamp(r),
            )
            for r in kept
        ]
    return Splits(dataset, samples["train"], samples["query"], samples["gallery"], dropped)


def find_dataset_root(
    root: str | Path, dataset: str, candidates: Sequence[str], required: Sequence[str]
) -> Path:
    """The first ``root / candidate`` that holds every folder in ``required``.

    ``candidates`` are relative paths tried in order (``""`` is ``root`` itself), so one
    indexer accepts e.g. both ``<root>/bounding_box_train`` and
    ``<root>/Market-1501-v15.09.15/bounding_box_train``. When none fits, the
    :class:`FileNotFoundError` lists every folder looked at and what it lacks, because a wrong
    dataset path is the most common user error.
    """
    root = Path(root).expanduser()
    looked: list[str] = []
    for candidate in candidates:
        folder = root / candidate if candidate else root
        if not folder.is_dir():
            looked.append(f"{folder} (does not exist)")
            continue
        missing = [f"{r}/" for r in required if not (folder / r).is_dir()]
        if not missing:
            return folder
        looked.append(f"{folder} (lacks {', '.join(missing)})")
    raise FileNotFoundError(
        f"dataset {dataset!r}: no folder holds {', '.join(f'{r}/' for r in required)}; "
        "looked in:\n  " + "\n  ".join(looked)
    )
