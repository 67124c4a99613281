"""Indexer for PKU VehicleID, defined by its list files.

Layout (the dataset's README; ``docs/datasets.md`` §7)::

    VehicleID_V1.0/
        image/0001234.jpg ...
        train_test_split/
            train_list.txt                               (13,164 vehicles, 113,346 images)
            test_list_800.txt  test_list_1600.txt  test_list_2400.txt  (small, medium, large)
        attribute/ ...                                   (model and colour; not used)

``root`` may be ``VehicleID_V1.0`` itself, the folder holding it, or fast-reid's
``<root>/vehicleid`` (also with ``VehicleID_V1.0`` inside). A list line is
``<image name without .jpg> <vehicle id>``, e.g. ``0001234 56`` for the image
``image/0001234.jpg``.

Contract of the returned :class:`~reidgen.data.sample.Splits`:

* ``train``: ``train_list.txt``.
* ``gallery``: the whole chosen test list (``test_size`` vehicles); ``query`` is **empty**.
  VehicleID has no fixed query/gallery split: :class:`~reidgen.eval.protocols.VehicleIDProtocol`
  takes this pool and in each of its seeded repeats draws one gallery image per vehicle, every
  other image being a query. Only that protocol applies; the Market protocol would find no
  queries.
* ``Sample.pid`` is the vehicle id as written in the list (train and test vehicles are disjoint,
  which is checked); ``Sample.camid`` is 0 for every image, because VehicleID has no camera labels
  (fast-reid uses the image id instead; the protocol uses no camera information either way).
* No timestamps, nothing dropped.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from reidgen.data.datasets.layout import examples, find_dataset_root
from reidgen.data.sample import Sample, Splits

# Candidate dataset folders relative to ``root``, in the order they are tried.
ROOT_LAYOUTS = ("", "VehicleID_V1.0", "vehicleid", "vehicleid/VehicleID_V1.0")
REQUIRED_FOLDERS = ("image", "train_test_split")
LINE = re.compile(r"^(?P<image>\d+)\s+(?P<vid>\d+)$")
LINE_FORMAT = "'<image name without .jpg> <vehicle id>', e.g. '0001234 56'"

# docs/datasets.md §1 and §7 (fast-reid docstrings). No cameras: VehicleID has no camera labels.
EXPECTED_TRAIN = {"identities": 13164, "images": 113346}
EXPECTED_TEST = {
    800: {"identities": 800, "images": 6493},
    1600: {"identities": 1600, "images": 13377},
    2400: {"identities": 2400, "images": 19777},
}


def index_vehicleid(root: str | Path, name: str = "vehicleid", test_size: int = 800) -> Splits:
    """Indexes VehicleID: train list as ``train``, one test list as ``gallery``, no ``query``.

    :param root: ``VehicleID_V1.0``, a folder holding it, or fast-reid's ``vehicleid`` folder.
    :param name: the name samples carry.
    :param test_size: which test list, ``test_list_<test_size>.txt``: 800 (small), 1600
        (medium) or 2400 (large) are the published ones; others present on disk (e.g. 13164)
        are read too, without expected counts.
    :raises FileNotFoundError: no dataset folder, a missing list file or listed image.
    :raises ValueError: malformed or repeated list lines, a vehicle in both train and test.
    """
    if isinstance(test_size, bool) or not isinstance(test_size, int) or test_size < 1:
        raise ValueError(
            f"test_size must be a positive integer (800, 1600, 2400), got {test_size!r}"
        )
    folder = find_dataset_root(root, name, ROOT_LAYOUTS, REQUIRED_FOLDERS)
    split_dir = folder / "train_test_split"
    train_list = split_dir / "train_list.txt"
    test_list = split_dir / f"test_list_{test_size}.txt"
    for list_file in (train_list, test_list):
        if not list_file.is_file():
            present = sorted(p.name for p in split_dir.glob("*_list*.txt"))
            raise FileNotFoundError(
                f"dataset {name!r}: list file {list_file} not found "
                f"(present in {split_dir}: {', '.join(present) or 'none'})"
            )
    image_dir = folder / "image"
    on_disk = set(os.listdir(image_dir))  # one listing of ~222k names, no Path per file
    train = _read_list(train_list, image_dir, on_disk, name)
    test = _read_list(test_list, image_dir, on_disk, name)
    shared = sorted({s.pid for s in train} & {s.pid for s in test})
    if shared:
        raise ValueError(
            f"{train_list} and {test_list} share {len(shared)} vehicle id(s) (train and test "
            f"vehicles must be disjoint): {examples([str(v) for v in shared])}"
        )
    expected: dict[str, dict[str, int]] = {"train": dict(EXPECTED_TRAIN)}
    if test_size in EXPECTED_TEST:
        expected["gallery"] = dict(EXPECTED_TEST[test_size])
    return Splits(
        name,
        train,
        [],
        test,
        dropped={"train": 0, "query": 0, "gallery": 0},
        variant=f"VehicleID test-{test_size}",
        expected=expected,
    )


def _read_list(list_file: Path, image_dir: Path, on_disk: set[str], name: str) -> list[Sample]:
    """One sample per line of ``list_file``; every listed image must be in ``on_disk``."""
    parsed: list[tuple[str, int]] = []
    malformed: list[str] = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        match = LINE.match(line.strip())
        if match is None:
            malformed.append(f"line {number}: {line.strip()!r}")
            continue
        parsed.append((f"{match['image']}.jpg", int(match["vid"])))
    if malformed:
        raise ValueError(
            f"{list_file}: {len(malformed)} line(s) do not match {LINE_FORMAT}: "
            f"{examples(malformed)}"
        )
    repeated = sorted(f for f, n in Counter(f for f, _ in parsed).items() if n > 1)
    if repeated:
        raise ValueError(
            f"{list_file}: {len(repeated)} image(s) listed more than once: {examples(repeated)}"
        )
    missing = [f for f, _ in parsed if f not in on_disk]
    if missing:
        raise FileNotFoundError(
            f"{list_file}: {len(missing)} listed image(s) not found in {image_dir}/: "
            f"{examples(missing)}"
        )
    return [Sample(path=str(image_dir / f), pid=vid, camid=0, dataset=name) for f, vid in parsed]
