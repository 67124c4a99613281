"""The training pool and the per-epoch training set a method's labels make of it.

The data module keeps every training source in one pool (:class:`TrainingSource`), labelled
sources and ``data.unlabelled`` ones alike, and before every epoch shows it to the method as a
:class:`TrainingSet`; that class's docstring says how the labels a method returns become the
epoch's batch labels (:func:`check_assignment` validates them, :func:`epoch_labels` applies the
rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from reidgen.data.dataset import Transform, read_image
from reidgen.data.sample import Sample

UNUSED = -1


@dataclass(frozen=True, eq=False)
class TrainingSource:
    """One training source of the pool.

    :param name: the source's name (unique among the training sources).
    :param labelled: whether its identities are training labels (not in ``data.unlabelled``).
    :param samples: its training images in sorted order, ``domain`` set to its position.
    :param own_labels: int64 ``[len(samples)]``: relabelled identities, or ``-1`` if unlabelled.
    """

    name: str
    labelled: bool
    samples: tuple[Sample, ...]
    own_labels: np.ndarray


def check_assignment(
    assigned: Mapping[str, Any] | None, sources: Sequence[TrainingSource]
) -> dict[str, np.ndarray]:
    """Validates what ``assign_training_labels`` returned: int64 ``[N_source]`` label arrays by
    source name, in pool order (empty for None).

    :raises TypeError: not a mapping.
    :raises ValueError: a name that is not a training source, a label array that is not 1-D
        integers, of the wrong length, or with labels below ``-1``; the message names the source
        and what was expected.
    """
    if assigned is None:
        return {}
    if not isinstance(assigned, Mapping):
        raise TypeError(
            "assign_training_labels must return {source name: labels} or None, got "
            f"{type(assigned).__name__}"
        )
    names = [source.name for source in sources]
    unknown = sorted(str(name) for name in assigned if name not in names)
    if unknown:
        raise ValueError(
            f"assign_training_labels returned labels for {unknown}, which are not training "
            f"sources; the training sources are {names}"
        )
    checked = {}
    for source in sources:
        if source.name not in assigned:
            continue
        values = assigned[source.name]
        if isinstance(values, Tensor):
            values = values.detach().cpu().numpy()
        labels = np.asarray(values)
        if labels.size == 0:
            labels = labels.astype(np.int64)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels of source {source.name!r} must be a 1-D sequence of integers, got "
                f"shape {labels.shape} of {labels.dtype}"
            )
        if len(labels) != len(source.samples):
            raise ValueError(
                f"assign_training_labels returned {len(labels)} labels for source "
                f"{source.name!r}, expected one per image of that source: {len(source.samples)}"
            )
        if len(labels) and labels.min() < UNUSED:
            raise ValueError(
                f"labels of source {source.name!r} must be >= -1 (-1 = not used this epoch), "
                f"got {labels.min()}"
            )
        checked[source.name] = labels.astype(np.int64)
    return checked


def epoch_labels(
    sources: Sequence[TrainingSource], assigned: Mapping[str, np.ndarray], num_classes: int
) -> list[np.ndarray]:
    """The epoch's batch label of every pool image, int64 ``[N_source]`` per source in pool
    order, ``-1`` = not used: :class:`TrainingSet`'s rule applied to validated labels
    (:func:`check_assignment`)."""
    result = []
    offset = num_classes
    for source in sources:
        labels = assigned.get(source.name)
        if labels is None:
            result.append(source.own_labels.copy())
            continue
        # Pairs (p, l) sorted: positions come in increasing order, labels sorted within each.
        used = labels >= 0
        distinct = np.unique(labels[used])
        mapped = np.full(len(labels), UNUSED, dtype=np.int64)
        mapped[used] = offset + np.searchsorted(distinct, labels[used])
        offset += len(distinct)
        result.append(mapped)
    return result


class SourceImages(Dataset):
    """Chosen images of one source with a deterministic transform.

    Items are ``{"image": float [3, H, W], "index": int}``, ``index`` being the image's position
    within its source.
    """

    def __init__(
        self, samples: Sequence[Sample], indices: Sequence[int], transform: Transform
    ) -> None:
        self.samples = samples
        self.indices = [int(i) for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = self.indices[position]
        return {"image": self.transform(read_image(self.samples[index].path)), "index": index}


class TrainingSet:
    """What ``ReIDMethod.assign_training_labels(epoch, training_set)`` sees before an epoch: a
    read-only view of the training pool, sources named as in ``data.sources``.

    Every image of the pool knows its source (position in ``data.sources``, also its ``domain``)
    and has its *own label*: its relabelled identity ``0..num_classes-1`` (keyed by (dataset,
    pid), the numbering of a run without relabelling) in a labelled source, ``-1`` in an
    unlabelled one. The hook returns ``{source name: labels}`` (one label per image of that
    source, ``-1`` = not used this epoch) or None, and the epoch's batch labels (``pid``) follow:

    * a source not in the mapping keeps its own labels (an unlabelled source stays unused);
    * a source in the mapping (*relabelled*) gets ``num_classes + j`` for label ``l >= 0`` of
      source position ``p``, ``j`` being the index of ``(p, l)`` among the sorted distinct pairs
      of all relabelled sources. Pseudo labels thus never collide with the labelled identities
      ``0..num_classes-1`` nor with another source's, and are dense: a method that labels one
      source with clusters ``0..C-1``, all used, finds cluster ``c`` as ``pid = num_classes + c``;
    * images labelled ``-1`` are left out of the epoch.

    The epoch's training set is the remaining images in pool order (sources in ``data.sources``
    order, each source's images in their sorted order), so without relabelling it is exactly the
    merged labelled set; its sampler and loader are built from these labels. A wrong mapping
    (unknown source, wrong length, labels below ``-1``) raises ``ValueError`` naming the source.

    The hook runs on every process at the same point, so it may use collectives, but only rank
    0's labels are used (broadcast). It is called while training: a method that extracts features
    switches the model to eval mode and restores the previous modes afterwards. The labels are
    kept in checkpoints: a resumed epoch reuses them instead of calling the hook again.

    :param epoch: the epoch about to be trained, 0-based.
    :param num_classes: the labelled identities; pseudo labels start here.
    :param sources: the pool, in ``data.sources`` order.
    :param labels: every source's labels in force now, int64 ``[N_source]`` per source: the batch
        labels of the previous epoch (before any assignment, the sources' own labels).
    :param transform: the test transform, for :meth:`images`.
    :param batch_size: the batch size of :meth:`images`' loaders.
    :param num_workers: their loader workers.
    """

    def __init__(
        self,
        epoch: int,
        num_classes: int,
        sources: Sequence[TrainingSource],
        labels: Sequence[np.ndarray],
        transform: Transform,
        batch_size: int,
        num_workers: int,
    ) -> None:
        if len(labels) != len(sources):
            raise ValueError(f"{len(sources)} sources but {len(labels)} label arrays")
        self.epoch = epoch
        self.num_classes = num_classes
        self._sources = {source.name: source for source in sources}
        self._labels = {source.name: lab for source, lab in zip(sources, labels, strict=True)}
        self._transform = transform
        self._batch_size = batch_size
        self._num_workers = num_workers

    @property
    def names(self) -> tuple[str, ...]:
        """The training sources' names, in ``data.sources`` order."""
        return tuple(self._sources)

    @property
    def labelled(self) -> tuple[str, ...]:
        """The names of the labelled sources (not in ``data.unlabelled``), in order."""
        return tuple(name for name, source in self._sources.items() if source.labelled)

    def _source(self, name: str) -> TrainingSource:
        if name not in self._sources:
            raise ValueError(f"{name!r} is not a training source; they are {list(self._sources)}")
        return self._sources[name]

    def samples(self, name: str) -> tuple[Sample, ...]:
        """The source's images in order (``Sample.index`` = position), ``domain`` set."""
        return self._source(name).samples

    def labels(self, name: str) -> Tensor:
        """The source's labels in force now, int64 ``[N_source]``, ``-1`` = not trained on: the
        ``pid`` its images had in the previous epoch's batches (before any assignment: the
        relabelled identities of a labelled source, all ``-1`` for an unlabelled one)."""
        self._source(name)
        return torch.from_numpy(self._labels[name].copy())

    def images(self, name: str, indices: Sequence[int] | None = None) -> DataLoader:
        """The source's images ``indices`` (default: all, in order) with the test transform.

        Batches are dicts: ``image`` float ``[B, 3, H, W]`` and ``index`` long ``[B]`` (position
        within the source), in the order of ``indices``. The loader runs on this process only: in
        DDP every process loads what it is given, so a method that shares the work passes each
        process its share of ``indices`` and gathers the features itself.
        """
        samples = self._source(name).samples
        indices = range(len(samples)) if indices is None else indices
        outside = [int(i) for i in indices if not 0 <= int(i) < len(samples)]
        if outside:
            raise ValueError(
                f"indices {outside[:5]} outside source {name!r}, which has {len(samples)} images"
            )
        return DataLoader(
            SourceImages(samples, indices, self._transform),
            batch_size=self._batch_size,
            num_workers=self._num_workers,
        )
