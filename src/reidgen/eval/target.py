"""What evaluation needs to know about a test target besides its features: its name, who and where
each image is, when it was taken, how many queries come first, and how it is scored.

The data module builds one :class:`EvalTarget` per test dataset from the dataset's own index
(:attr:`reidgen.data.dataset.EvalDataset.target`), so
evaluation never relies on identities or cameras carried through the model and gathered across
processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from reidgen.eval.protocols import PooledProtocol, QueryGalleryProtocol


@dataclass(frozen=True)
class EvalTarget:
    """One test target, its ``num_query`` queries first, then its gallery.

    :param name: the dataset's name (the key in results and ``metrics.json``).
    :param pids: ``[N]`` int64 identities (0 = distractor).
    :param camids: ``[N]`` int64 cameras.
    :param num_query: ``Q``; a pooled protocol (VehicleID) draws its own queries and ignores it.
    :param protocol: how the target is scored.
    :param timestamps: ``[N]`` float64 seconds, NaN where unknown (only TLift reads them).
    """

    name: str
    pids: Tensor
    camids: Tensor
    num_query: int
    protocol: QueryGalleryProtocol | PooledProtocol
    timestamps: Tensor

    def __len__(self) -> int:
        return len(self.pids)

    @property
    def num_gallery(self) -> int:
        return len(self) - self.num_query
