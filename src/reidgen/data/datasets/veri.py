"""Indexer for VeRi-776, the 776-vehicle, 20-camera re-identification benchmark.

Layout (official release; the name lists are optional here)::

    VeRi/                           (also veri/ or VeRi_with_plate/, or the folder itself)
        image_train/0002_c002_00030600_0.jpg
        image_query/...
        image_test/...              (the gallery)
        name_train.txt  name_query.txt  name_test.txt   (one file name a line)

Names: ``{vid:04d}_c{cam:03d}_{time:08d}_{k}.jpg``, e.g. ``0002_c002_00030600_0.jpg`` =
vehicle 2, camera 2 (0-based camid 1), third field, index. Cameras run 1-20.

No timestamps: datasets.md reads the third field as a frame number in one description and as
a "timestamp" in another, with no frame rate or unit published, so no clock in seconds can be
built from it honestly.

Nothing is dropped at index time: VeRi's junk (``jk_image.txt`` / ``jk_index.txt``: same
vehicle, same camera as the query) is exactly the Market same-pid-same-camera rule, which
:class:`~reidgen.eval.protocols.VeRiProtocol` applies when scoring.

When ``name_<split>.txt`` files are present they are checked against the folders: a listed
file missing on disk is an error naming it (a truncated copy would otherwise score on a
different gallery); images on disk that no list names are indexed and logged.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

from reidgen.data.datasets.layout import (
    NamePattern,
    examples,
    find_dataset_root,
    index_market_layout,
)
from reidgen.data.sample import Sample, Splits

log = logging.getLogger(__name__)

VERI_NAMES = NamePattern(
    "veri",
    re.compile(r"^(?P<pid>\d+)_c(?P<camera>\d{3})_\d+_\d+$"),
    "0002_c002_00030600_0.jpg",
)
SPLIT_FOLDERS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
NAME_LISTS = {"train": "name_train.txt", "query": "name_query.txt", "gallery": "name_test.txt"}

# datasets.md §1: image counts verified [V] (fast-reid and BoT docstrings), 576 train ids [V]
# (third-party README); 19 query cameras from a fast-reid log [Iss fast-reid#541]. The train
# camera count is the dataset's 20; no gallery camera count is published. Note: a Kaggle-derived
# copy has 37,681 train images, which validation will flag.
EXPECTED = {
    "train": {"identities": 576, "images": 37_778, "cameras": 20},
    "query": {"identities": 200, "images": 1_678, "cameras": 19},
    "gallery": {"identities": 200, "images": 11_579},
}


def index_veri776(root: str | Path, name: str = "veri776") -> Splits:
    """Indexes VeRi-776: ``image_train`` / ``image_query`` / ``image_test`` -> train/query/gallery.

    ``variant`` is ``"VeRi-776"``, or e.g. ``"VeRi-776 (name lists checked: train, query,
    gallery)"`` when name lists were found and matched; ``expected`` holds datasets.md's counts.
    """
    data = find_dataset_root(
        root, name, ("", "VeRi", "veri", "VeRi_with_plate"), tuple(SPLIT_FOLDERS.values())
    )
    splits = index_market_layout(
        data, name, VERI_NAMES, num_cameras=20, split_folders=SPLIT_FOLDERS
    )
    checked = [
        split
        for split, samples in (
            ("train", splits.train),
            ("query", splits.query),
            ("gallery", splits.gallery),
        )
        if _check_name_list(data, name, split, samples)
    ]
    variant = "VeRi-776" + (f" (name lists checked: {', '.join(checked)})" if checked else "")
    expected = {split: dict(counts) for split, counts in EXPECTED.items()}
    return replace(splits, variant=variant, expected=expected)


def _check_name_list(data: Path, dataset: str, split: str, samples: list[Sample]) -> bool:
    """Compares ``name_<split>.txt`` with the indexed files; False when there is no list."""
    list_path = data / NAME_LISTS[split]
    if not list_path.is_file():
        return False
    listed = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
    on_disk = {Path(s.path).name for s in samples}
    missing = sorted(set(listed) - on_disk)
    if missing:
        raise FileNotFoundError(
            f"dataset {dataset!r}: {len(missing)} file(s) listed in {list_path} are missing "
            f"from {data / SPLIT_FOLDERS[split]}/: "
            f"{examples(missing)}"
        )
    unlisted = sorted(on_disk - set(listed))
    if unlisted:
        log.warning(
            "%s: %d image(s) in %s/ are not in %s (indexed anyway), e.g. %s",
            dataset,
            len(unlisted),
            data / SPLIT_FOLDERS[split],
            list_path.name,
            ", ".join(unlisted[:5]),
        )
    return True
