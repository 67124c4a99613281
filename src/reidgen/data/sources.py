"""Dataset sources: what a ``data`` config names as a training source or a test target.

A source knows its name and how to produce its :class:`~reidgen.data.sample.Splits`; the data
module does the rest. Configs build sources with ``_target_`` (their YAML mirrors the constructor).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from reidgen.data.datasets.market import DUKE_NAMES, MARKET_NAMES, index_market_layout
from reidgen.data.sample import Splits
from reidgen.data.synthperson import ensure_synthperson, index_synthperson
from reidgen.eval.protocols import QueryGalleryProtocol


class DatasetSource(Protocol):
    """Anything with a ``name`` and a ``load()`` that returns the dataset's splits; an optional
    ``protocol`` attribute says how its test split is scored (default: Market-1501's)."""

    name: str

    def load(self) -> Splits: ...


def default_data_dir() -> str:
    """``$REIDGEN_DATA_DIR`` or ``./data``."""
    return os.environ.get("REIDGEN_DATA_DIR", "data")


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

    def load(self) -> Splits:
        root = ensure_synthperson(self.data_dir, self.domain, self.preset, self.size, self.seed)
        return index_synthperson(root, self.name)

    def __repr__(self) -> str:
        return f"SynthPersonSource({self.domain!r}, {self.preset!r}, size={self.size})"


class MarketLayoutSource:
    """A dataset in the Market-1501 layout that the user points to (Market-1501, DukeMTMC-reID).

    :param naming: ``"market"`` (``0002_c1s1_000451_03.jpg``) or ``"duke"``
        (``0005_c2_f0046985.jpg``).
    """

    def __init__(
        self,
        root: str,
        name: str,
        naming: str = "market",
        num_cameras: int | None = None,
        fps: float | None = None,
        protocol: QueryGalleryProtocol | None = None,
    ) -> None:
        self.protocol = protocol
        if naming not in ("market", "duke"):
            raise ValueError(f"naming must be 'market' or 'duke', got {naming!r}")
        self.root = root
        self.name = name
        self.names = MARKET_NAMES if naming == "market" else DUKE_NAMES
        self.num_cameras = num_cameras
        self.fps = fps

    def load(self) -> Splits:
        return index_market_layout(
            self.root, self.name, self.names, num_cameras=self.num_cameras, fps=self.fps
        )

    def __repr__(self) -> str:
        return f"MarketLayoutSource({self.root!r}, {self.name!r})"
