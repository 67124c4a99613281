"""Pieces shared by the method pictures: image conversion, panel sizes, a colour ramp, and picking
one target of a data config."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from PIL import Image
from torch import Tensor

from reidgen.data.datamodule import ReIDDataModule
from reidgen.data.dataset import EvalDataset
from reidgen.data.sample import Sample
from reidgen.eval.ranking import JUNK_PID

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


def target_dataset(datamodule: ReIDDataModule, name: str | None) -> EvalDataset:
    """The test set of target ``name`` of ``datamodule`` (its only target when ``None``); only
    that target is indexed."""
    names = datamodule.target_names
    if name is None:
        if len(names) != 1:
            raise ValueError(
                f"the data config has {len(names)} targets; choose one with target=<name>: "
                f"{', '.join(names)}"
            )
        name = names[0]
    elif name not in names:
        raise ValueError(
            f"unknown target {name!r}; the data config's targets are: {', '.join(names)} "
            "(data.targets=[...] names others)"
        )
    # The other targets may be large, or absent on this machine.
    datamodule.targets = [target for target in datamodule.targets if target.name == name]
    datamodule.setup("test")
    return datamodule.eval_sets[name]


def top_results(
    distance: Tensor,
    query: Sample,
    gallery: Sequence[Sample],
    top: int,
    exclude_same_camera: bool = True,
) -> tuple[Tensor, int]:
    """The gallery positions of ``query``'s ``top`` nearest kept results by ``distance [G]``
    (smaller = closer; ties in gallery order), and how many gallery items were kept. Junk is
    always left out and, as the evaluation protocol does, the query's identity in its camera."""
    pids = torch.tensor([s.pid for s in gallery])
    camids = torch.tensor([s.camid for s in gallery])
    left_out = pids == JUNK_PID
    if exclude_same_camera:
        left_out |= (pids == query.pid) & (camids == query.camid)
    kept = int((~left_out).sum())
    if kept == 0:
        raise ValueError(f"every gallery image is left out for the query {query.path}")
    ranked = torch.sort(distance.masked_fill(left_out, torch.inf), stable=True).indices
    return ranked[: min(top, kept)], kept
