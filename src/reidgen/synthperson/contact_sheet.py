"""A contact sheet of a generated dataset: identities down, cameras across."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from reidgen.data.datasets.layout import index_market_layout
from reidgen.procedural import paste_cell

_MARGIN = 4
_HEADER = 14


def contact_sheet(root: str | Path, rows: int = 10) -> Image.Image:
    """One training image per (identity, camera) for the ``rows`` identities seen by most cameras.

    Empty cells (an identity that never passed that camera) stay dark grey.
    """
    splits = index_market_layout(root, "synthperson")
    by_identity: dict[int, dict[int, str]] = defaultdict(dict)
    cameras: set[int] = set()
    for sample in splits.train:
        by_identity[sample.pid].setdefault(sample.camid, sample.path)
        cameras.add(sample.camid)
    chosen = sorted(by_identity, key=lambda pid: (-len(by_identity[pid]), pid))[:rows]
    first = Image.open(next(iter(by_identity[chosen[0]].values())))
    width, height = first.size
    columns = max(cameras) + 1
    sheet = Image.new(
        "RGB",
        (_HEADER * 3 + columns * (width + _MARGIN), _HEADER + len(chosen) * (height + _MARGIN)),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(sheet)
    for column in range(columns):
        draw.text(
            (_HEADER * 3 + column * (width + _MARGIN) + 2, 1), f"c{column + 1}", fill=(0, 0, 0)
        )
    for row, pid in enumerate(chosen):
        top = _HEADER + row * (height + _MARGIN)
        draw.text((2, top + height // 2 - 5), f"{pid:04d}", fill=(0, 0, 0))
        for column in range(columns):
            left = _HEADER * 3 + column * (width + _MARGIN)
            paste_cell(sheet, draw, by_identity[pid].get(column), (left, top), (width, height))
    return sheet
