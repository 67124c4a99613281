"""User-supplied mesh renders (GCL's structure maps) next to any dataset source.

GCL's official code reads, for every training image, a grey render of the person's 3-D body mesh
in the image's own view and turned about the vertical axis by 45..315 degrees::

    <root>/train/render/<name>
    <root>/train/render_45/<name>
    ...
    <root>/train/render_315/<name>

``<name>`` is the image's file name (Market-1501, DukeMTMC-reID) or, for MSMT17, its identity
folder and file name: the last ``path_parts`` components of the image path. The renders are made
offline (``docs/methods/gcl.md`` says how); a missing one was the official code's most reported
failure, so :class:`MeshRenderedSource` checks every training image's eight renders when the
dataset loads and names the missing files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reidgen.data.dataset import ExtraField, read_image
from reidgen.data.sample import Sample, Splits

RENDER_ANGLES = (45, 90, 135, 180, 225, 270, 315)


def render_paths(root: str | Path, sample: Sample, path_parts: int = 1) -> list[Path]:
    """The eight renders of a training image: its own view, then the seven rotations."""
    name = Path(*Path(sample.path).parts[-path_parts:])
    folders = ["render", *(f"render_{angle}" for angle in RENDER_ANGLES)]
    return [Path(root) / "train" / folder / name for folder in folders]


class MeshRenders:
    """The ``structure`` extra field: a sample's renders, uint8 grey ``[8, H, W]`` resized
    (bicubic, as the official loader) to the training size."""

    def __init__(self, root: str | Path, size: tuple[int, int], path_parts: int = 1) -> None:
        self.root, self.size, self.path_parts = Path(root), size, path_parts

    def __call__(self, sample: Sample) -> torch.Tensor:
        views = []
        for path in render_paths(self.root, sample, self.path_parts):
            image = read_image(str(path)).convert("L")
            if image.size != (self.size[1], self.size[0]):
                image = image.resize((self.size[1], self.size[0]), Image.Resampling.BICUBIC)
            views.append(np.asarray(image))
        return torch.from_numpy(np.stack(views))


class MeshRenderedSource:
    """A dataset source whose training images carry mesh renders (``structure`` field).

    :param source: the dataset source (any catalogue entry); its name, splits and protocol are
        kept.
    :param root: the render folder (``<root>/train/render*/...``).
    :param height, width: the training size the renders are resized to.
    :param path_parts: trailing components of an image path that name its renders (1: the file
        name; 2 for MSMT17's ``<pid>/<file>``).
    """

    def __init__(self, source, root: str, height: int, width: int, path_parts: int = 1) -> None:
        self.source = source
        self.name = source.name
        self.root = Path(root)
        self.renders = MeshRenders(self.root, (height, width), path_parts)
        self.path_parts = path_parts

    @property
    def protocol(self):
        return getattr(self.source, "protocol", None)

    @property
    def extra_fields(self) -> dict[str, ExtraField]:
        return {**getattr(self.source, "extra_fields", {}), "structure": self.renders}

    def load(self) -> Splits:
        splits = self.source.load()
        check_renders(self.root, splits.train, self.path_parts)
        return splits

    def __repr__(self) -> str:
        return f"MeshRenderedSource({self.source!r}, root={str(self.root)!r})"


def check_renders(root: Path, samples: Sequence[Sample], path_parts: int = 1) -> None:
    """Every training image has its eight renders, or FileNotFoundError naming the missing ones
    (the first few and how many)."""
    if not (root / "train").is_dir():
        raise FileNotFoundError(
            f"mesh render folder {root / 'train'} does not exist; expected "
            f"{root}/train/render/<image name> and render_<deg>/ for deg in {RENDER_ANGLES}"
        )
    missing = [
        path
        for sample in samples
        for path in render_paths(root, sample, path_parts)
        if not path.is_file()
    ]
    if missing:
        shown = "\n  ".join(str(path) for path in missing[:5])
        raise FileNotFoundError(
            f"{len(missing)} mesh renders missing under {root} for {len(samples)} training "
            f"images (each needs render/ and render_<deg>/ for deg in {RENDER_ANGLES}), e.g.:\n"
            f"  {shown}"
        )
