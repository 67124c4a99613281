"""Structure providers: the identity-neutral maps GCL's structure encoder reads, for each training
image its own view and a new one (``docs/methods/gcl.md``, "Structure").

A provider turns a training batch into ``(original, view)``, one-channel maps ``[B, 1, H, W]`` in
[-1, 1] aligned with the batch images (no augmentation moves the images: GCL trains without any),
and names the variant it makes:

* :class:`SynthPersonStructure` (default): SynthPerson's body-part maps (the ``structure`` extra
  field, the image's own view then the body turned in place by 45..315 degrees), painted as a grey
  body on white, what GCL's mesh renders are: whole body, identity-neutral, a true yaw rotation.
* :class:`MeshStructure`: user-supplied grey renders in the official layout
  (:class:`~reidgen.data.mesh_renders.MeshRenderedSource` reads and checks them).
* :class:`GrayscaleStructure`: the 2-D fallback for real data without renders, DG-Net's input:
  the image's own grey version, and another batch image's as the new view. It is not GCL's
  augmentation (someone else's pose, and grey keeps clothing texture), so runs using it are named
  "GCL (2-D structure fallback)".

The new view is drawn uniformly from the seven rotations; ``legacy_rotation_draw`` reproduces the
released code's off-by-one draw, which never picks 315 degrees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from reidgen.data.transforms import IMAGENET_MEAN, IMAGENET_STD

NUM_VIEWS = 8  # the image's own view and 7 rotations, 45 degrees apart

# Grey level per body part of SynthPerson's maps (index = part id, figure.PART_NAMES' order): white
# background, a light body with the limbs a little darker than head and torso and the person's
# right side a shade darker than the left, as a shaded render separates them.
PART_GREY = (255, 205, 185, 165, 150, 140, 125, 170, 155, 135, 120)


def draw_views(
    batch_size: int, legacy_rotation_draw: bool, generator: torch.Generator | None, device=None
) -> Tensor:
    """Which rotation each sample is re-drawn in: indices ``[B]`` into the 8 views, uniform over
    ``1..7`` (45..315 degrees), or ``1..6`` with the official off-by-one."""
    high = NUM_VIEWS - 1 if legacy_rotation_draw else NUM_VIEWS
    return torch.randint(1, high, (batch_size,), generator=generator).to(device)


def _grey_to_unit(grey: Tensor) -> Tensor:
    """uint8-valued grey ``[B, H, W]`` -> ``[B, 1, H, W]`` in [-1, 1] (normalise 0.5, 0.5)."""
    return (grey.float() / 255.0 * 2.0 - 1.0).unsqueeze(1)


def _pick(structure: Tensor, views: Tensor) -> Tensor:
    return structure[torch.arange(len(views), device=structure.device), views]


def _views_field(batch: Mapping[str, Tensor], field: str) -> Tensor:
    if field not in batch:
        raise KeyError(
            f"the structure provider needs the batch field {field!r}: add it to "
            f"data.extra_fields (the training sources must offer it)"
        )
    structure = batch[field]
    if structure.ndim != 4 or structure.shape[1] != NUM_VIEWS:
        raise ValueError(
            f"batch field {field!r} must be [B, {NUM_VIEWS}, H, W] (own view + 7 rotations), "
            f"got {tuple(structure.shape)}"
        )
    images = batch["image"]
    if structure.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"structure maps are {tuple(structure.shape[-2:])} but the images "
            f"{tuple(images.shape[-2:])}: generate or render them at the training size"
        )
    return structure


class _RotatedViews:
    """The providers of real rotated views: the ``structure`` field's eight maps as grey levels
    (:meth:`grey`), the own view and one rotation drawn per image."""

    variant = "GCL"
    field = "structure"

    def __init__(self, legacy_rotation_draw: bool = False) -> None:
        self.legacy_rotation_draw = legacy_rotation_draw

    def grey(self, structure: Tensor) -> Tensor:
        """The field's ``[B, 8, H, W]`` maps as grey levels 0..255, same shape."""
        raise NotImplementedError

    def __call__(
        self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        grey = self.grey(_views_field(batch, self.field))
        views = draw_views(len(grey), self.legacy_rotation_draw, generator, grey.device)
        return _grey_to_unit(grey[:, 0]), _grey_to_unit(_pick(grey, views))

    def views(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Every view's map ``[B, 8, 1, H, W]``: the own view, then 45..315 degrees."""
        grey = self.grey(_views_field(batch, self.field))
        return _grey_to_unit(grey.flatten(0, 1)).unflatten(0, grey.shape[:2])


class SynthPersonStructure(_RotatedViews):
    """SynthPerson's body-part maps painted grey (:data:`PART_GREY`)."""

    def grey(self, structure: Tensor) -> Tensor:
        parts = structure.long()
        if int(parts.max()) >= len(PART_GREY):
            raise ValueError(
                f"structure maps hold part {int(parts.max())}; SynthPerson's have 0.."
                f"{len(PART_GREY) - 1}: is this a mesh render? use structure=mesh"
            )
        return torch.tensor(PART_GREY, device=parts.device)[parts]


class MeshStructure(_RotatedViews):
    """Grey mesh renders as read (``structure`` field, 0..255 grey, own view + 7 rotations)."""

    def grey(self, structure: Tensor) -> Tensor:
        return structure


class GrayscaleStructure:
    """The 2-D fallback: grey versions of the (normalised) batch images; the new view is another
    batch image's (a random derangement), optionally mirrored.

    :param flip: mirror the other image's map as well.
    :param mean, std: the images' normalisation, undone before taking luminance.
    """

    variant = "GCL (2-D structure fallback)"
    field = None

    def __init__(
        self,
        flip: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.flip = flip
        self.mean, self.std = tuple(mean), tuple(std)

    def grey(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` normalised images -> ``[B, 1, H, W]`` luminance in [-1, 1]."""
        mean = images.new_tensor(self.mean).view(1, 3, 1, 1)
        std = images.new_tensor(self.std).view(1, 3, 1, 1)
        rgb = (images * std + mean).clamp(0, 1)
        weights = images.new_tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1)
        return (rgb * weights).sum(1, keepdim=True) * 2.0 - 1.0

    def __call__(
        self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        grey = self.grey(batch["image"])
        count = len(grey)
        # A uniform shift 1..B-1 of a random order: nobody gets their own map.
        order = torch.randperm(count, generator=generator).to(grey.device)
        shift = int(torch.randint(1, max(count, 2), (1,), generator=generator))
        other = torch.empty_like(order)
        other[order] = order.roll(-shift)
        view = grey[other]
        if self.flip:
            view = torch.flip(view, dims=[3])
        return grey, view

    def views(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[B, 2, 1, H, W]``: the image's own grey map, then the next batch image's."""
        grey = self.grey(batch["image"])
        return torch.stack([grey, grey.roll(-1, dims=0)], dim=1)
