"""What a method says about a set of images: named tensors with one row per image.

A method's ``extract`` returns :class:`Features`, and its ``distance`` compares two of them. The
parts are named so that test-time options act only on the part they are defined for: query
expansion and feature averaging need a plain embedding and look for the part named
:data:`EMBEDDING`; a method without one (QAConv's feature maps) gets a clear error instead of an
average of unrelated numbers packed into one vector.

Conventional part names (a method may add its own):

- ``"embedding"`` ``[N, D]``: a vector compared by a distance on whole vectors (BoT, AlignedReID's
  global feature);
- ``"stripes"`` ``[N, h, c]``: AlignedReID's per-stripe local features;
- ``"maps"`` ``[N, D, h, w]``: QAConv's feature maps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

EMBEDDING = "embedding"
"""The part name of a plain embedding ``[N, D]``; see the module docstring."""


@dataclass(frozen=True)
class Features:
    """Named per-image tensors, every one ``[N, ...]`` for the same ``N`` images.

    :param parts: ``name -> Tensor[N, ...]``; at least one part, all with the same first size.
    """

    parts: Mapping[str, Tensor]

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("Features needs at least one named tensor")
        # int(): under tracing (export) a size is a tensor, and tensors compare by identity.
        sizes = {name: int(t.shape[0]) if t.dim() else None for name, t in self.parts.items()}
        if None in sizes.values() or len(set(sizes.values())) != 1:
            raise ValueError(
                f"every feature part needs the same number of rows [N, ...], got {sizes}"
            )
        object.__setattr__(self, "parts", dict(self.parts))

    @classmethod
    def embedding(cls, tensor: Tensor) -> Features:
        """A record holding only a plain embedding ``[N, D]``."""
        return cls({EMBEDDING: tensor})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.parts)

    def __len__(self) -> int:
        return next(iter(self.parts.values())).shape[0]

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self.parts[name]
        except KeyError:
            raise KeyError(
                f"these features have no part {name!r}; they have: {', '.join(self.names)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.parts

    def __iter__(self) -> Iterator[str]:
        return iter(self.parts)

    def rows(self, index: slice | Tensor) -> Features:
        """The rows ``index`` of every part."""
        return Features({name: tensor[index] for name, tensor in self.parts.items()})

    def map(self, function: Callable[[Tensor], Tensor]) -> Features:
        """``function`` applied to every part (e.g. ``lambda t: t.cpu()``)."""
        return Features({name: function(tensor) for name, tensor in self.parts.items()})

    def replace(self, **parts: Tensor) -> Features:
        """A copy with the given parts replaced or added."""
        return Features({**self.parts, **parts})

    def require_embedding(self, purpose: str) -> Tensor:
        """The plain embedding ``[N, D]``, or a ``ValueError`` saying ``purpose`` needs one."""
        tensor = self.parts.get(EMBEDDING)
        if tensor is None or tensor.dim() != 2:
            shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in self.parts.items())
            raise ValueError(
                f"{purpose} needs a plain embedding ('{EMBEDDING}' [N, D]); this method's "
                f"features are: {shapes}"
            )
        return tensor

    @staticmethod
    def cat(records: Sequence[Features]) -> Features:
        """The records' rows one after another; every record must have the same part names."""
        if not records:
            raise ValueError("cannot concatenate an empty list of Features")
        names = records[0].names
        for record in records[1:]:
            if record.names != names:
                raise ValueError(f"feature parts differ: {names} vs {record.names}")
        return Features({name: torch.cat([r.parts[name] for r in records]) for name in names})
