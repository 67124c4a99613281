"""Indexer for CUHK03-NP, the new-protocol (767 train / 700 test ids) CUHK03 in Market layout.

Layout (the zhunzhong07/person-re-ranking "Market format" release), one copy per variant::

    cuhk03-np/                      (also spelt cuhk03_np/ or CUHK03-NP/)
        detected/{bounding_box_train,query,bounding_box_test}/0001_c1_1.png
        labeled/{bounding_box_train,query,bounding_box_test}/...

``root`` may be the folder above ``cuhk03-np/``, ``cuhk03-np/`` itself (holding ``detected/``
and ``labeled/``), or one variant's folder holding the three split folders directly.

Names: only the leading pid and the ``_c(\\d)`` camera (1 or 2) are read, as QAConv and the
peer toolboxes do (``([-\\d]+)_c(\\d)``); whatever follows is not interpreted. CUHK03 has no
junk, no distractors and no time information, so samples carry no timestamp.

Scored with :class:`~reidgen.eval.protocols.MarketProtocol` (same pid and camera removed per
query). The classic 1,367/100 split with its 20 partitions is a different benchmark
(:class:`~reidgen.eval.protocols.CUHK03ClassicProtocol`) and is not read here.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from reidgen.data.datasets.layout import (
    SPLIT_FOLDERS,
    NamePattern,
    find_dataset_root,
    index_market_layout,
)
from reidgen.data.sample import Splits

CUHK03_NP_NAMES = NamePattern(
    "cuhk03-np",
    re.compile(r"^(?P<pid>\d+)_c(?P<camera>\d)(?:_.*)?$"),
    "0001_c1_1.png",
)

VARIANTS = ("detected", "labeled")
RELEASE_FOLDERS = ("cuhk03-np", "cuhk03_np", "CUHK03-NP")

# datasets.md §1, verified [V] against the release's README.
EXPECTED = {
    "detected": {
        "train": {"identities": 767, "images": 7_365, "cameras": 2},
        "query": {"identities": 700, "images": 1_400, "cameras": 2},
        "gallery": {"identities": 700, "images": 5_332, "cameras": 2},
    },
    "labeled": {
        "train": {"identities": 767, "images": 7_368, "cameras": 2},
        "query": {"identities": 700, "images": 1_400, "cameras": 2},
        "gallery": {"identities": 700, "images": 5_328, "cameras": 2},
    },
}


def index_cuhk03_np(root: str | Path, name: str = "cuhk03_np", variant: str = "detected") -> Splits:
    """Indexes one CUHK03-NP variant: ``"detected"`` (the DG tables' default) or ``"labeled"``.

    ``variant`` of the result is e.g. ``"CUHK03-NP detected"``; ``expected`` holds that
    variant's published counts. A root that is itself the other variant's folder (e.g.
    ``.../labeled`` with ``variant="detected"``) is an error rather than a silent mix-up.
    """
    if variant not in VARIANTS:
        raise ValueError(f"CUHK03-NP variant must be one of {VARIANTS}, got {variant!r}")
    candidates = [f"{release}/{variant}" for release in RELEASE_FOLDERS] + [variant, ""]
    data = find_dataset_root(root, name, candidates, tuple(SPLIT_FOLDERS.values()))
    other = next(v for v in VARIANTS if v != variant)
    if data.name == other:
        raise ValueError(
            f"dataset {name!r}: {data} is the {other!r} copy of CUHK03-NP but variant={variant!r} "
            f"was asked for; point root at its parent or set variant={other!r}"
        )
    splits = index_market_layout(data, name, CUHK03_NP_NAMES, num_cameras=2)
    expected = {split: dict(counts) for split, counts in EXPECTED[variant].items()}
    return replace(splits, variant=f"CUHK03-NP {variant}", expected=expected)
