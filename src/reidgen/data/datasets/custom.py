"""Indexers for a user's own re-identification data: identity folders, or list files.

Two ways to bring your own images (``expected`` is always ``None``: nothing is published):

1. :func:`index_custom_folder`: one sub-folder per identity in each split::

       my_data/
         train/alice/c1_0001.jpg      identity "alice", camera 1
         train/bob/c2_0007.png
         query/carol/c1_0003.jpg      query and gallery are optional (training-only data)
         gallery/carol/c3_0100.jpg

2. :func:`index_custom_lists`: list files with one image per line, ``relative/path pid [camid]``
   (paths relative to the root, no spaces in them; blank lines and lines starting with ``#``
   are skipped)::

       train/0001.jpg 1 0
       train/0002.jpg 1 3

Cameras. The Market evaluation protocol ignores a gallery image of the query's identity taken by
the query's camera (it would be an easy, same-view match). Cameras given in names or lists are
renumbered 0..C-1 in sorted numeric order over all splits. Data *without* cameras gets camera 0
for every train and query image and camera 1 for every gallery image: giving everything one
camera would make the protocol remove every true match, so instead every gallery image of the
query's identity counts as a match, as if taken by another camera. Keep near-duplicates of a
query (e.g. the same image) out of the gallery in that case, since nothing removes them.

Identities. reidgen reserves pid 0 for gallery distractors and -1 for junk (see
:class:`~reidgen.data.sample.Sample`); folder names therefore become pids 1..N, and list pids
must follow the same rule (details in each function). Timestamps are ``None``.

Evaluate with the Market protocol (:class:`~reidgen.eval.protocols.MarketProtocol`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from reidgen.data.datasets.layout import IMAGE_SUFFIXES, examples, list_images
from reidgen.data.sample import Sample, Splits

DEFAULT_CAMERA_REGEX = r"c(\d+)"
"""Camera number in a file name: the first group of the first match, e.g. ``c3`` in ``c3_01``."""

SPLITS = ("train", "query", "gallery")
# Cameras of data without camera labels: query and gallery differ, so that the same-pid,
# same-camera rule of the Market protocol removes no true match (see the module docstring).
NO_CAMERA = {"train": 0, "query": 0, "gallery": 1}


@dataclass(frozen=True)
class _Entry:
    path: str
    pid: int
    camera: int | None  # as given; renumbered in _splits


def _numeric_first(name: str) -> tuple[int, int | str]:
    # "2" before "10" when both are numbers; numbers before other names.
    return (0, int(name)) if name.isdecimal() else (1, name)


def _splits(
    name: str, entries: dict[str, list[_Entry]], dropped: dict[str, int], variant: str
) -> Splits:
    """Builds the :class:`Splits`, renumbering cameras or assigning the camera-less defaults."""
    # Callers have checked that either every entry has a camera or none has.
    every = [e for split in entries.values() for e in split]
    has_cameras = bool(every) and every[0].camera is not None
    camera_of = {c: i for i, c in enumerate(sorted({e.camera for e in every}))}
    samples = {
        split: [
            Sample(
                path=e.path,
                pid=e.pid,
                camid=camera_of[e.camera] if has_cameras else NO_CAMERA[split],
                dataset=name,
            )
            for e in rows
        ]
        for split, rows in entries.items()
    }
    cameras = "cameras given" if has_cameras else "no cameras: query 0, gallery 1"
    return Splits(
        name,
        samples.get("train", []),
        samples.get("query", []),
        samples.get("gallery", []),
        dropped={split: dropped.get(split, 0) for split in SPLITS},
        variant=f"{variant}: {', '.join(entries)}; {cameras}",
        expected=None,
    )


def _present_splits(root: Path, name: str, present: Iterable[str], what: str) -> list[str]:
    """The given splits in order; query and gallery only as a pair, since evaluation needs both."""
    chosen = [s for s in SPLITS if s in set(present)]
    if ("query" in chosen) != ("gallery" in chosen):
        has, lacks = ("query", "gallery") if "query" in chosen else ("gallery", "query")
        raise FileNotFoundError(
            f"dataset {name!r}: {root} has a {has} {what} but no {lacks} {what}; give both for "
            f"evaluation, or neither for training-only data"
        )
    return chosen


def index_custom_folder(
    root: str | Path, name: str = "custom", camera_regex: str | None = DEFAULT_CAMERA_REGEX
) -> Splits:
    """Indexes ``<root>/{train,query,gallery}/<identity>/<image>`` folders.

    ``train/`` may be the only split (training-only data), or ``query/`` and ``gallery/`` may be
    the only ones (a test-only target); one of query/gallery alone is an error.

    - Identity: the sub-folder's name, any string. The names of all splits together are sorted
      (names made of digits first, in numeric order, then the others as text) and numbered
      1..N, so the same name in query and gallery is the same identity.
    - Camera: ``re.search(camera_regex, file name without suffix)``, first group, e.g. ``c3`` in
      ``c3_0001.jpg``; numbers are renumbered 0..C-1 in sorted order. If no file matches, or
      ``camera_regex`` is ``None``, the data has no cameras: query 0, gallery 1 (module
      docstring). Some files matching and others not is an error.

    Images directly in a split folder (outside an identity folder) are an error.
    """
    root = Path(root).expanduser()
    looked = [root / s for s in SPLITS]
    present = [s for s in SPLITS if (root / s).is_dir()]
    if not present:
        raise FileNotFoundError(
            f"dataset {name!r}: no split folders found; looked for "
            f"{', '.join(str(p) for p in looked)}: expected train/ and/or query/ + gallery/, "
            f"each holding one sub-folder of images per identity"
        )
    splits = _present_splits(root, name, present, "folder")
    pattern = re.compile(camera_regex) if camera_regex is not None else None
    if pattern is not None and pattern.groups < 1:
        raise ValueError(f"camera_regex {camera_regex!r} needs a group capturing the camera")

    found: dict[str, list[tuple[str, Path]]] = {}
    for split in splits:
        folder = root / split
        loose = [p.name for p in list_images(folder)]
        if loose:
            raise ValueError(
                f"{folder}: {len(loose)} image(s) outside identity folders: {examples(loose)}; "
                f"put each identity's images in {folder}/<identity>/"
            )
        found[split] = [
            (person.name, image)
            for person in sorted(p for p in folder.iterdir() if p.is_dir())
            for image in list_images(person)
        ]
        if not found[split]:
            raise ValueError(
                f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in identity sub-folders"
            )

    pid_of = {
        person: i
        for i, person in enumerate(
            sorted({p for rows in found.values() for p, _ in rows}, key=_numeric_first), start=1
        )
    }
    matches = {
        image: pattern.search(image.stem) if pattern else None
        for rows in found.values()
        for _, image in rows
    }
    unmatched = [str(image) for image, match in matches.items() if match is None]
    if pattern is not None and 0 < len(unmatched) < len(matches):
        raise ValueError(
            f"{root}: {len(unmatched)} of {len(matches)} file name(s) carry no camera matching "
            f"{pattern.pattern!r} (e.g. c3_0001.jpg), while the others do: {examples(unmatched)}"
        )
    entries: dict[str, list[_Entry]] = {}
    for split, rows in found.items():
        entries[split] = []
        for person, image in rows:
            match = matches[image]
            camera = match.group(1) if match is not None else None
            if camera is not None and not camera.isdecimal():
                raise ValueError(
                    f"{image}: camera_regex {camera_regex!r} captured {camera!r}, not a number"
                )
            entries[split].append(
                _Entry(str(image), pid_of[person], int(camera) if camera is not None else None)
            )
    return _splits(name, entries, {}, "custom folders")


def _read_list(list_path: Path, root: Path, split: str) -> list[tuple[int, _Entry]]:
    """(line number, entry) per line of ``relative/path pid [camid]``."""
    if not list_path.is_file():
        raise FileNotFoundError(f"{split} list {list_path} does not exist")
    rows: list[tuple[int, _Entry]] = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        ok = len(fields) in (2, 3) and all(re.fullmatch(r"-?\d+", f) for f in fields[1:])
        if not ok:
            raise ValueError(
                f"{list_path}, line {number}: expected 'relative/path pid [camid]' with integer "
                f"ids, got {line.strip()!r}"
            )
        camera = int(fields[2]) if len(fields) == 3 else None
        if camera is not None and camera < 0:
            raise ValueError(f"{list_path}, line {number}: camid {camera} is negative")
        rows.append((number, _Entry(str(root / fields[0]), int(fields[1]), camera)))
    return rows


def index_custom_lists(
    root: str | Path,
    name: str = "custom",
    train_list: str | Path | None = None,
    query_list: str | Path | None = None,
    gallery_list: str | Path | None = None,
) -> Splits:
    """Indexes images named by list files; each line is ``relative/path pid [camid]``.

    Paths in a list are relative to ``root``; a relative list path is also taken relative to
    ``root``. Give ``train_list`` and/or both ``query_list`` and ``gallery_list``.

    - ``pid``: integers as given. -1 is junk and is dropped (counted in ``dropped``); 0 is a
      distractor, allowed in the gallery only (a train or query line with pid 0 is an error:
      number identities from 1).
    - ``camid``: optional, but on every line of every list or on none. Given cameras are
      renumbered 0..C-1 in sorted order; without them query is 0 and gallery 1 (module
      docstring).

    Malformed lines, mixed camera use and listed files that do not exist raise errors naming
    the list file and line.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: root folder {root} does not exist")
    lists = {"train": train_list, "query": query_list, "gallery": gallery_list}
    given = {split: root / Path(path).expanduser() for split, path in lists.items() if path}
    if not given:
        raise ValueError(f"dataset {name!r}: give train_list and/or query_list + gallery_list")
    splits = _present_splits(root, name, given, "list")

    read = {split: _read_list(given[split], root, split) for split in splits}
    first_kind: tuple[Path, int, bool] | None = None
    for split, rows in read.items():
        if not rows:
            raise ValueError(f"{given[split]}: the {split} list has no entries")
        for number, entry in rows:
            has_camera = entry.camera is not None
            if first_kind is None:
                first_kind = (given[split], number, has_camera)
            elif has_camera != first_kind[2]:
                raise ValueError(
                    f"{given[split]}, line {number}: "
                    f"{'has a camid' if has_camera else 'lacks a camid'}, unlike "
                    f"{first_kind[0]}, line {first_kind[1]}; give a camid on every line or none"
                )
            if (entry.pid == 0 and split != "gallery") or entry.pid < -1:
                raise ValueError(
                    f"{given[split]}, line {number}: pid {entry.pid} is not allowed in the "
                    f"{split} list (identities are >= 1; 0 marks a gallery distractor, -1 junk)"
                )
    missing = [
        f"{given[split]}, line {number}: {entry.path}"
        for split, rows in read.items()
        for number, entry in rows
        if not Path(entry.path).is_file()
    ]
    if missing:
        raise FileNotFoundError(f"{len(missing)} listed image(s) do not exist: {examples(missing)}")

    entries = {split: [e for _, e in rows if e.pid != -1] for split, rows in read.items()}
    dropped = {split: len(read[split]) - len(entries[split]) for split in splits}
    return _splits(name, entries, dropped, "custom lists")
