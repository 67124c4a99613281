"""Torch datasets over :class:`~reidgen.data.sample.Sample` lists, yielding batch dicts.

A training batch (after collation) is a dict: ``image`` [B, 3, H, W] float, ``pid`` [B] long (the
image's label in this epoch's training set, see :mod:`reidgen.data.training_set`), ``camid`` [B],
``source`` [B] (position of the image's source in ``data.sources``), ``domain`` [B] and ``index``
[B] (position in this epoch's training set), plus one entry per extra field asked for in
``data.extra_fields``, e.g. ``structure`` [B, 8, H, W] uint8 for SynthPerson. Extra fields are
read as the source provides them: they do *not* go through the image transform (no flip, crop or
erasing), so a method that needs them aligned with the augmented image handles that itself. An
evaluation batch holds ``image``, ``index`` (position in the target, queries first) and ``target``
(the target's name, a list of B strings); evaluation reads identities, cameras and times from the
target's :class:`~reidgen.eval.target.EvalTarget`, not from batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from reidgen.data.sample import Sample
from reidgen.eval.protocols import MarketProtocol, PooledProtocol, QueryGalleryProtocol
from reidgen.eval.target import EvalTarget

Transform = Callable[[Image.Image], torch.Tensor]
# A per-sample field a dataset source offers besides the image (``DatasetSource.extra_fields``).
ExtraField = Callable[[Sample], torch.Tensor]


class UnreadableImageError(RuntimeError):
    """An image file that PIL cannot decode (truncated, corrupt, not an image)."""


def read_image(path: str) -> Image.Image:
    """Opens and fully decodes an RGB image, naming the file in any error."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise UnreadableImageError(f"cannot read image {path}: {error}") from error


class TrainDataset(Dataset):
    """One epoch's training images with their labels, sources and extra fields.

    Keys come from :class:`EpochTaggedSampler` as ``(epoch, rank, position, index)``: the random
    augmentation of each draw is seeded from ``(seed, epoch, rank, position)``, so it is the same
    whatever the number of loader workers and after a resume, and two draws of one image in an
    epoch (identities with fewer than K images) still get different augmentations. A plain int key
    is an index without seeding.

    :param samples: the images, ``samples[i]`` for index ``i`` (length N); ``domain`` is set.
    :param labels: each image's training label (length N), the batches' ``pid``.
    :param transform: the training transform of the image; extra fields do not go through it.
    :param seed: the base seed of the augmentations.
    :param sources: each image's source, its position in ``data.sources`` (length N); None = all 0.
    :param extra_fields: the extra per-sample fields of every source, by source position:
        ``extra_fields[source][name](sample) -> Tensor``, the same names for every source; each
        item carries them as ``name``. Empty = none.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        labels: Sequence[int],
        transform: Transform,
        seed: int = 0,
        sources: Sequence[int] | None = None,
        extra_fields: Sequence[Mapping[str, ExtraField]] = (),
    ) -> None:
        if len(samples) != len(labels):
            raise ValueError(f"{len(samples)} samples but {len(labels)} labels")
        sources = [0] * len(samples) if sources is None else list(sources)
        if len(sources) != len(samples):
            raise ValueError(f"{len(samples)} samples but {len(sources)} sources")
        names = {tuple(sorted(fields)) for fields in extra_fields}
        if len(names) > 1:
            raise ValueError(f"every source must give the same extra fields, got {sorted(names)}")
        if extra_fields and sources and max(sources) >= len(extra_fields):
            raise ValueError(
                f"extra_fields covers {len(extra_fields)} sources, but a sample is of source "
                f"{max(sources)}"
            )
        self.samples = list(samples)
        self.labels = list(labels)
        self.sources = sources
        self.extra_fields = [dict(fields) for fields in extra_fields]
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int, int, int] | int) -> dict[str, Any]:
        if isinstance(key, tuple):
            epoch, rank, position, index = key
            seed = int(
                np.random.SeedSequence([self.seed, epoch, rank, position]).generate_state(1)[0]
            )
        else:
            index, seed = key, None
        sample = self.samples[index]
        source = self.sources[index]
        image = read_image(sample.path)
        # A private RNG state: with num_workers=0 this runs in the training process, whose global
        # RNG must not be reset by data loading.
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            tensor = self.transform(image)
        item = {
            "image": tensor,
            "pid": self.labels[index],
            "camid": sample.camid,
            "source": source,
            "domain": sample.domain,
            "index": index,
        }
        if self.extra_fields:
            item.update({name: field(sample) for name, field in self.extra_fields[source].items()})
        return item


class EvalDataset(Dataset):
    """A test target: queries first, then the gallery; ``index`` is the position in that order.

    :param name: the target's name; every item carries it as ``target``.
    """

    def __init__(
        self,
        query: Sequence[Sample],
        gallery: Sequence[Sample],
        transform: Transform,
        protocol: QueryGalleryProtocol | PooledProtocol | None = None,
        name: str = "target",
    ) -> None:
        self.samples = list(query) + list(gallery)
        self.num_query = len(query)
        self.transform = transform
        self.protocol = protocol or MarketProtocol()
        self.name = name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        return {
            "image": self.transform(read_image(sample.path)),
            "index": index,
            "target": self.name,
        }

    @property
    def target(self) -> EvalTarget:
        """What evaluation needs besides features: identities, cameras, times (NaN where
        unknown), the query count and the protocol, in the order of the items."""
        times = [math.nan if s.timestamp is None else s.timestamp for s in self.samples]
        return EvalTarget(
            name=self.name,
            pids=torch.tensor([s.pid for s in self.samples], dtype=torch.long),
            camids=torch.tensor([s.camid for s in self.samples], dtype=torch.long),
            num_query=self.num_query,
            protocol=self.protocol,
            timestamps=torch.tensor(times, dtype=torch.float64),
        )
