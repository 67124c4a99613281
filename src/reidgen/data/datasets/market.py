"""Indexers for Market-1501 (and its 500k distractors) and DukeMTMC-reID: the benchmarks' root
layouts, clocks and published counts on top of
:func:`~reidgen.data.datasets.layout.index_market_layout`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reidgen.data.datasets.layout import (
    DUKE_NAMES,
    MARKET_NAMES,
    SPLIT_FOLDERS,
    find_dataset_root,
    index_market_layout,
    parse_folder,
)
from reidgen.data.sample import Sample, Splits

# QAConv's clocks (docs/methods/qaconv.md §7.1): Market frames run at 25 fps; Duke frames at 59.94
# fps on per-camera clocks shifted by these offsets (camera 1..8) so that the cameras line up.
MARKET_FPS = 25.0
DUKE_FPS = 59.94
DUKE_FRAME_OFFSETS = (5542, 3606, 27243, 31181, 0, 22401, 18967, 46765)

MARKET_VERSION_FOLDER = "Market-1501-v15.09.15"
MARKET_DISTRACTOR_FOLDER = "images"
MARKET_500K_DISTRACTORS = 500_000

# datasets.md §1: image counts are verified in the peer toolboxes' docstrings; the identity
# counts (751 / 750 / 750) are marked unverified [I] there. Gallery identities exclude pid 0.
MARKET_EXPECTED = {
    "train": {"identities": 751, "images": 12_936, "cameras": 6},
    "query": {"identities": 750, "images": 3_368, "cameras": 6},
    "gallery": {"identities": 750, "images": 15_913, "cameras": 6},
}
# datasets.md §1: images and "1404 ids (train+query)" verified; 702 / 1,110 (702 test ids plus
# 408 single-camera distractor ids, ordinary pids in Duke) are marked unverified [I].
DUKE_EXPECTED = {
    "train": {"identities": 702, "images": 16_522, "cameras": 8},
    "query": {"identities": 702, "images": 2_228, "cameras": 8},
    "gallery": {"identities": 1_110, "images": 17_661, "cameras": 8},
}


def index_market1501(
    root: str | Path, name: str = "market1501", distractors_500k: bool = False
) -> Splits:
    """Indexes Market-1501, optionally with the 500k extra gallery distractors.

    Accepted roots (first match wins): the folder holding ``bounding_box_train/``, ``query/``
    and ``bounding_box_test/``; or its parent holding ``Market-1501-v15.09.15/`` or
    ``Market-1501/``. Names: ``0002_c1s1_000451_03.jpg`` (pid, camera 1-6, sequence, frame,
    detection); pid -1 junk is dropped, pid 0 distractors stay in the gallery.

    Timestamps follow QAConv: per camera, the sequences are concatenated over all three splits
    (offset of sequence s = sum of the largest frame seen in each earlier sequence of that
    camera), at 25 fps; e.g. with camera 2's sequence 1 ending at frame 700,
    ``0004_c2s2_000020_01.jpg`` is at (700 + 20) / 25 = 28.8 s.

    ``distractors_500k`` appends every image of ``<market>/images/`` to the gallery as pid 0.
    datasets.md does not document those files' names, so they must follow the Market naming
    (camera 1-6 read from it); whatever pid the name carries, they are distractors. They get no
    timestamp: nothing documents how their sequences relate to the benchmark's clock.

    ``variant``: ``"Market-1501-v15.09.15"`` when found in that folder, else ``"Market-1501"``,
    plus ``" +500k"``; ``expected`` holds datasets.md's counts (gallery + 500,000 with 500k).
    """
    data = find_dataset_root(
        root, name, ("", MARKET_VERSION_FOLDER, "Market-1501"), tuple(SPLIT_FOLDERS.values())
    )
    splits = index_market_layout(data, name, MARKET_NAMES, num_cameras=6, fps=MARKET_FPS)
    variant = MARKET_VERSION_FOLDER if data.name == MARKET_VERSION_FOLDER else "Market-1501"
    expected = {split: dict(counts) for split, counts in MARKET_EXPECTED.items()}
    if not distractors_500k:
        return replace(splits, variant=variant, expected=expected)

    extra_folder = data / MARKET_DISTRACTOR_FOLDER
    if not extra_folder.is_dir():
        raise FileNotFoundError(
            f"dataset {name!r}: distractors_500k needs the 500k distractor images in "
            f"{extra_folder}/ (Market-named, e.g. {MARKET_NAMES.example}); it does not exist"
        )
    extra = [
        Sample(path=r.path, pid=0, camid=r.camera - 1, dataset=name)
        for r in parse_folder(extra_folder, MARKET_NAMES, num_cameras=6)
    ]
    expected["gallery"]["images"] += MARKET_500K_DISTRACTORS
    return Splits(
        name,
        splits.train,
        splits.query,
        splits.gallery + extra,
        splits.dropped,
        variant=f"{variant} +500k",
        expected=expected,
    )


def index_dukemtmc(root: str | Path, name: str = "dukemtmc") -> Splits:
    """Indexes DukeMTMC-reID (withdrawn by its creators: user-supplied only, never downloaded).

    Accepted roots: the folder holding ``bounding_box_train/``, ``query/`` and
    ``bounding_box_test/``, or its parent holding ``DukeMTMC-reID/``. Names:
    ``0005_c2_f0046985.jpg`` (pid, camera 1-8, frame). Duke has no junk; its gallery
    distractor identities are ordinary pids.

    Timestamps follow QAConv: (frame + offset of the camera) / 59.94 fps, offsets
    :data:`DUKE_FRAME_OFFSETS`; e.g. ``0005_c2_f0046985.jpg`` is at (46985 + 3606) / 59.94 s.
    ``variant`` is ``"DukeMTMC-reID"``; ``expected`` holds datasets.md's counts.
    """
    data = find_dataset_root(root, name, ("", "DukeMTMC-reID"), tuple(SPLIT_FOLDERS.values()))
    splits = index_market_layout(
        data,
        name,
        DUKE_NAMES,
        num_cameras=8,
        fps=DUKE_FPS,
        camera_frame_offsets=DUKE_FRAME_OFFSETS,
    )
    expected = {split: dict(counts) for split, counts in DUKE_EXPECTED.items()}
    return replace(splits, variant="DukeMTMC-reID", expected=expected)
