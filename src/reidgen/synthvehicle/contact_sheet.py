"""A contact sheet of a generated dataset: vehicles down, cameras across.

Drawn from the plan rather than from file names, so it works for both layouts (VehicleID's
names carry no camera).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from reidgen.procedural import paste_cell

if TYPE_CHECKING:
    from reidgen.synthvehicle.generate import DatasetPlan

_MARGIN = 4
_HEADER = 14
_LABEL = 58


def _rows(plan: DatasetPlan, cells: dict[int, dict[int, Path]], rows: int) -> list[int]:
    """Training vehicles: a few near-duplicate pairs first (side by side, to show how little
    tells them apart), then those seen by most cameras."""
    train = plan.vehicles[: plan.train_count]
    chosen: list[int] = []
    for vehicle in train:
        original = vehicle.near_duplicate_of
        if original is not None and len(chosen) + 2 <= rows // 2 and original not in chosen:
            chosen += [original, vehicle.vid]
    rest = sorted((v.vid for v in train), key=lambda vid: (-len(cells[vid]), vid))
    chosen += [vid for vid in rest if vid not in chosen]
    return chosen[:rows]


def contact_sheet(root: str | Path, plan: DatasetPlan, rows: int = 10) -> Image.Image:
    """One image per (vehicle, camera) for ``rows`` training vehicles; a near-duplicate's label
    names its original (``~0123``). Empty cells (a camera the vehicle never passed) stay dark."""
    cells: dict[int, dict[int, Path]] = {v.vid: {} for v in plan.vehicles}
    for file in plan.files:
        cells[file.vid].setdefault(file.camera, Path(root) / file.folder / file.filename)
    chosen = _rows(plan, cells, rows)
    height, width = plan.spec.size
    columns = plan.spec.preset.num_cameras
    sheet = Image.new(
        "RGB",
        (_LABEL + columns * (width + _MARGIN), _HEADER + len(chosen) * (height + _MARGIN)),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(sheet)
    for column in range(columns):
        draw.text(
            (_LABEL + column * (width + _MARGIN) + 2, 1), f"c{column + 1:03d}", fill=(0, 0, 0)
        )
    by_vid = {v.vid: v for v in plan.vehicles}
    for row, vid in enumerate(chosen):
        top = _HEADER + row * (height + _MARGIN)
        vehicle = by_vid[vid]
        label = f"{vid:04d}\n{vehicle.type_name}"
        if vehicle.near_duplicate_of is not None:
            label += f"\n~{vehicle.near_duplicate_of:04d}"
        draw.multiline_text((2, top + height // 2 - 16), label, fill=(0, 0, 0))
        for column in range(columns):
            left = _LABEL + column * (width + _MARGIN)
            paste_cell(sheet, draw, cells[vid].get(column), (left, top), (width, height))
    return sheet
