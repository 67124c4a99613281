"""Dataset sources: what a ``data`` config names as a training source or a test target.

A source knows its name and how to produce its :class:`~reidgen.data.sample.Splits`; the data
module does the rest. Configs build sources with ``_target_`` (their YAML mirrors the constructor).
A source may also offer extra per-sample fields for training batches (``extra_fields``), e.g.
SynthPerson's body-part ``structure`` maps.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from reidgen.data.dataset import ExtraField
from reidgen.data.datasets.synthperson import index_synthperson, load_structure
from reidgen.data.datasets.synthvehicle import index_synthvehicle
from reidgen.data.sample import Sample, Splits
from reidgen.eval.protocols import (
    PooledProtocol,
    QueryGalleryProtocol,
    VehicleIDProtocol,
    VeRiProtocol,
)
from reidgen.synthperson import ensure_synthperson
from reidgen.synthvehicle import LAYOUTS, ensure_synthvehicle


class DatasetSource(Protocol):
    """Anything with a ``name`` and a ``load()`` that returns the dataset's splits.

    Two optional attributes (the data module reads them with ``getattr``):

    * ``protocol``: how its test split is scored (default: Market-1501's);
    * ``extra_fields``: the named per-sample fields it offers besides the image, a mapping
      ``name -> field(sample) -> Tensor`` (one shape for all samples of a run). A training batch
      carries the fields that ``data.extra_fields`` asks for, stacked ``[B, ...]``, as read: they
      do not go through the image transform. Default: none.
    """

    name: str

    def load(self) -> Splits: ...


def default_data_dir() -> str:
    """``$REIDGEN_DATA_DIR`` or ``./data``."""
    return os.environ.get("REIDGEN_DATA_DIR", "data")


def synthperson_structure(sample: Sample) -> torch.Tensor:
    """A SynthPerson sample's body-part maps, uint8 ``[8, H, W]`` at the generated image size:
    its own view, then the 7 rotations
    (:func:`~reidgen.data.datasets.synthperson.load_structure`)."""
    return torch.from_numpy(np.ascontiguousarray(load_structure(sample)))


class SynthPersonSource:
    """A SynthPerson domain, generated on first use (once, whatever the number of processes)."""

    def __init__(
        self,
        domain: str = "street",
        preset: str = "small",
        height: int = 128,
        width: int = 64,
        seed: int = 0,
        data_dir: str | None = None,
        name: str | None = None,
        protocol: QueryGalleryProtocol | None = None,
    ) -> None:
        self.domain = domain
        self.protocol = protocol
        self.preset = preset
        self.size = (height, width)
        self.seed = seed
        self.data_dir = data_dir or default_data_dir()
        self.name = name or f"synth_{Path(domain).stem}"

    @property
    def extra_fields(self) -> dict[str, ExtraField]:
        """``structure``: the body-part maps, :func:`synthperson_structure`."""
        return {"structure": synthperson_structure}

    def load(self) -> Splits:
        root = ensure_synthperson(self.data_dir, self.domain, self.preset, self.size, self.seed)
        return index_synthperson(root, self.name)

    def __repr__(self) -> str:
        return f"SynthPersonSource({self.domain!r}, {self.preset!r}, size={self.size})"


class SynthVehicleSource:
    """A SynthVehicle dataset, generated on first use (once, whatever the number of processes).

    :param layout: ``veri`` (VeRi-776's folders and names, scored by :class:`VeRiProtocol`) or
        ``vehicleid`` (VehicleID's lists, front and rear views, scored by
        :class:`VehicleIDProtocol`).
    :param test_size: VehicleID layout only: the test list's vehicle count (default: all test
        vehicles, the largest list).
    :param protocol: how its test split is scored (default: the layout's protocol above).
    """

    def __init__(
        self,
        preset: str = "small",
        layout: str = "veri",
        height: int = 96,
        width: int = 96,
        seed: int = 0,
        test_size: int | None = None,
        data_dir: str | None = None,
        name: str | None = None,
        protocol: QueryGalleryProtocol | PooledProtocol | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(
                f"unknown SynthVehicle layout {layout!r}; expected one of {list(LAYOUTS)}"
            )
        if test_size is not None and layout != "vehicleid":
            raise ValueError("test_size applies to the VehicleID layout only")
        self.preset = preset
        self.layout = layout
        self.size = (height, width)
        self.seed = seed
        self.test_size = test_size
        self.data_dir = data_dir or default_data_dir()
        self.name = name or ("synth_vehicle" if layout == "veri" else "synth_vehicleid")
        self.protocol = protocol or (VeRiProtocol() if layout == "veri" else VehicleIDProtocol())

    def load(self) -> Splits:
        root = ensure_synthvehicle(self.data_dir, self.preset, self.size, self.seed, self.layout)
        return index_synthvehicle(root, self.name, self.test_size)

    def __repr__(self) -> str:
        return (
            f"SynthVehicleSource({self.preset!r}, layout={self.layout!r}, size={self.size}, "
            f"test_size={self.test_size})"
        )


class DatasetFolder:
    """A dataset the user keeps in a folder, read by an indexer from ``reidgen.data.datasets``.

    :param root: the dataset's folder (each indexer accepts the common layouts below it).
    :param name: the dataset's name in results and pid relabelling.
    :param indexer: ``indexer(root, name=name) -> Splits``; in configs a ``_partial_`` of an
        ``index_*`` function with its variant options, e.g. ``index_msmt17`` with ``version``.
    :param protocol: how its test split is scored (default: Market-1501's).
    """

    def __init__(
        self,
        root: str,
        name: str,
        indexer: Callable[..., Splits],
        protocol: QueryGalleryProtocol | PooledProtocol | None = None,
    ) -> None:
        self.root = root
        self.name = name
        self.indexer = indexer
        self.protocol = protocol

    def load(self) -> Splits:
        return self.indexer(self.root, name=self.name)

    def __repr__(self) -> str:
        function = getattr(self.indexer, "func", self.indexer)
        options = getattr(self.indexer, "keywords", {})
        return f"DatasetFolder({self.root!r}, {self.name!r}, {function.__name__}, {options})"
