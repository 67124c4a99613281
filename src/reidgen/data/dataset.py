"""Torch datasets over :class:`~reidgen.data.sample.Sample` lists, yielding batch dicts.

A batch (after collation) is a dict: ``image`` [B, 3, H, W] float, ``pid`` [B] long (the training
label for train sets, the dataset's own pid for test sets), ``camid`` [B], ``domain`` [B],
``index`` [B] (position in the dataset), and for test sets ``is_query`` [B] bool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from reidgen.data.sample import Sample
from reidgen.eval.protocols import MarketProtocol, PooledProtocol, QueryGalleryProtocol

Transform = Callable[[Image.Image], torch.Tensor]


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
    """Training images with relabelled identities.

    Keys come from :class:`EpochTaggedSampler` as ``(epoch, rank, position, index)``: the random
    augmentation of each draw is seeded from ``(seed, epoch, rank, position)``, so it is the same
    whatever the number of loader workers and after a resume, and two draws of one image in an
    epoch (identities with fewer than K images) still get different augmentations.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        labels: Sequence[int],
        transform: Transform,
        seed: int = 0,
    ) -> None:
        if len(samples) != len(labels):
            raise ValueError(f"{len(samples)} samples but {len(labels)} labels")
        self.samples = list(samples)
        self.labels = list(labels)
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
        image = read_image(sample.path)
        # A private RNG state: with num_workers=0 this runs in the training process, whose global
        # RNG must not be reset by data loading.
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            tensor = self.transform(image)
        return {
            "image": tensor,
            "pid": self.labels[index],
            "camid": sample.camid,
            "domain": sample.domain,
            "index": index,
        }


class EvalDataset(Dataset):
    """A test target: queries first, then the gallery; ``index`` is the position in that order."""

    def __init__(
        self,
        query: Sequence[Sample],
        gallery: Sequence[Sample],
        transform: Transform,
        protocol: QueryGalleryProtocol | PooledProtocol | None = None,
    ) -> None:
        self.samples = list(query) + list(gallery)
        self.num_query = len(query)
        self.transform = transform
        self.protocol = protocol or MarketProtocol()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        return {
            "image": self.transform(read_image(sample.path)),
            "pid": sample.pid,
            "camid": sample.camid,
            "domain": sample.domain,
            "index": index,
            "is_query": index < self.num_query,
        }
