"""Drawing pieces the method pictures share: image conversion, panel sizes and a colour ramp."""

from __future__ import annotations

from itertools import pairwise

import torch
from PIL import Image
from torch import Tensor

ImageLike = Image.Image | Tensor
"""A PIL image, or a float tensor ``[3, H, W]`` with values in [0, 1]."""

# Line colour by strength in [0, 1]: blue (weak), yellow, red (strong).
_RAMP = ((0.0, (40, 120, 255)), (0.5, (255, 220, 0)), (1.0, (255, 0, 0)))


def to_pil(image: ImageLike) -> Image.Image:
    """``image`` as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(
            f"expected a float [3, H, W] tensor in [0, 1], got {image.dtype} {tuple(image.shape)}"
        )
    pixels = image.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")


def panel_size(image: ImageLike, height: int = 256) -> tuple[int, int]:
    """``(width, height)`` at which a picture shows ``image`` (and its partner): at least
    ``height`` pixels tall, never shrunk, the aspect ratio kept."""
    width_in, height_in = to_pil(image).size
    out_height = max(height, height_in)
    return max(1, round(out_height * width_in / height_in)), out_height


def colour(strength: float) -> tuple[int, int, int]:
    """RGB of ``strength`` in [0, 1] on the ramp blue (weak), yellow, red (strong)."""
    for (t0, c0), (t1, c1) in pairwise(_RAMP):
        if strength <= t1:
            f = (strength - t0) / (t1 - t0)
            return tuple(round(a + f * (b - a)) for a, b in zip(c0, c1, strict=True))
    return _RAMP[-1][1]


def stack_rows(rows: list[Image.Image], background: tuple[int, int, int]) -> Image.Image:
    """``rows`` stacked top to bottom, left-aligned, in one RGB image as wide as the widest (rows
    differ where queries differ in aspect ratio or in how many results they have)."""
    if not rows:
        raise ValueError("no rows to stack")
    width = max(row.width for row in rows)
    picture = Image.new("RGB", (width, sum(row.height for row in rows)), background)
    top = 0
    for row in rows:
        picture.paste(row, (0, top))
        top += row.height
    return picture
