"""Indexer for datasets in the Market-1501 layout: Market-1501, DukeMTMC-reID, SynthPerson.

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
from collections.abc import Sequence
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
class _Parsed:
    path: str
    pid: int
    camera: int  # 1-based, as in the name
    sequence: int
    frame: int


def _list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = len(files) - len(images)
    if skipped:
        # Real copies carry e.g. Thumbs.db; they are not data, but say they were seen.
        log.info("%s: skipped %d non-image file(s)", folder, skipped)
    return images


def _parse_folder(folder: Path, names: NamePattern, num_cameras: int | None) -> list[_Parsed]:
    parsed: list[_Parsed] = []
    malformed: list[str] = []
    bad_camera: list[str] = []
    for path in _list_images(folder):
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
            _Parsed(
                path=str(path),
                pid=int(fields["pid"]),
                camera=camera,
                sequence=int(fields.get("sequence") or 1),
                frame=int(fields["frame"]),
            )
        )
    if malformed:
        raise ValueError(
            f"{folder}: {len(malformed)} file name(s) do not match the {names.name} naming "
            f"(expected e.g. {names.example}, pattern {names.regex.pattern}): "
            f"{', '.join(malformed[:5])}{' ...' if len(malformed) > 5 else ''}"
        )
    if bad_camera:
        raise ValueError(
            f"{folder}: {len(bad_camera)} file(s) name a camera outside 1..{num_cameras}: "
            f"{', '.join(bad_camera[:5])}{' ...' if len(bad_camera) > 5 else ''}"
        )
    if not parsed:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return parsed


def _sequence_offsets(
    records: Sequence[_Parsed], sequence_frames: int | None
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
) -> Splits:
    """Indexes the three split folders under ``root`` into sorted :class:`Sample` lists.

    :param root: the folder that holds ``bounding_box_train``, ``query`` and ``bounding_box_test``.
    :param dataset: the name samples carry (keys pid relabelling across sources).
    :param names: the file-name convention (:data:`MARKET_NAMES` or :data:`DUKE_NAMES`).
    :param num_cameras: if given, camera numbers outside 1..num_cameras are an error.
    :param fps: frame rate for timestamps; ``None`` gives samples without timestamps.
    :param sequence_frames: fixed sequence length (Market names); see the module docstring.
    :param camera_frame_offsets: per-camera frame offsets (0-based camera index), Duke names.
    """
    root = Path(root).expanduser()
    expected = ", ".join(f"{f}/" for f in SPLIT_FOLDERS.values())
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset {dataset!r}: folder {root} does not exist; "
            f"expected a folder holding {expected}"
        )
    missing = [f for f in SPLIT_FOLDERS.values() if not (root / f).is_dir()]
    if missing:
        present = sorted(p.name for p in root.iterdir())
        raise FileNotFoundError(
            f"dataset {dataset!r}: {root} lacks {', '.join(f'{m}/' for m in missing)}; expected "
            f"{expected} (found: {', '.join(present[:10]) or 'nothing'})"
        )
    parsed = {
        split: _parse_folder(root / folder, names, num_cameras)
        for split, folder in SPLIT_FOLDERS.items()
    }
    offsets = (
        _sequence_offsets([r for records in parsed.values() for r in records], sequence_frames)
        if fps is not None
        else {}
    )

    def timestamp(record: _Parsed) -> float | None:
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
