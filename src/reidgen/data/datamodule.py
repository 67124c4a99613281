"""ReIDDataModule: training sources pooled and labelled per epoch; one loader per test target."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from reidgen.data.dataset import EvalDataset, TrainDataset, Transform
from reidgen.data.sample import Splits
from reidgen.data.samplers import EpochTaggedSampler, RandomIdentitySampler, ShardSampler
from reidgen.data.sources import DatasetSource
from reidgen.data.training_set import (
    UNUSED,
    TrainingSet,
    TrainingSource,
    check_assignment,
    epoch_labels,
)
from reidgen.data.validate import DatasetValidationError, count_mismatches
from reidgen.distributed import world
from reidgen.eval.target import EvalTarget

if TYPE_CHECKING:
    from reidgen.methods.base import ReIDMethod

log = logging.getLogger(__name__)


def relabel(train_sets: Sequence[Splits]) -> dict[tuple[str, int], int]:
    """Training labels of the identities of labelled splits: ``(dataset, pid) -> 0..N-1``.

    The key includes the dataset name, so pid 1 of two sources are two identities. Keys are sorted,
    so the labels are the same on every process and whatever the order of the splits.
    """
    names = [splits.name for splits in train_sets]
    if len(set(names)) != len(names):
        raise ValueError(f"training sources must have distinct names, got {names}")
    keys = sorted({(s.dataset, s.pid) for splits in train_sets for s in splits.train})
    return {key: i for i, key in enumerate(keys)}


class ReIDDataModule(pl.LightningDataModule):
    """Training sources and test targets for one run.

    Datasets are named: ``sources``, ``targets`` and ``unlabelled`` hold names looked up in
    ``catalogue`` (the ``catalogue`` config group defines every dataset reidgen knows), or source
    objects directly. So ``data.sources=[randperson,msmt17] data.targets=[market1501]`` composes a
    multi-source run on the command line.

    Training: every source's ``train`` split goes into one pool, each image with its source's
    position in ``sources`` as ``source`` and ``domain``. Before every epoch the method's
    ``assign_training_labels`` may relabel sources (the rule:
    :class:`~reidgen.data.training_set.TrainingSet`); the epoch's training set, sampler and loader
    are built from the resulting labels, so the trainer must rebuild the training loader every
    epoch (``reload_dataloaders_every_n_epochs=1``, as ``conf/trainer`` sets it). Without
    relabelling every epoch trains on the labelled sources with their own identities.

    :param sources: datasets whose ``train`` splits are trained on.
    :param targets: datasets whose ``query`` + ``gallery`` are evaluated, each separately.
    :param unlabelled: sources whose identities are not used as labels (for unsupervised and
        domain-adaptive methods): their images are left out of the batches unless the method
        labels them in ``assign_training_labels``.
    :param batch_size: the global P x K batch over all processes.
    :param num_instances: K, images per identity in a batch.
    :param domain_balanced: each batch takes as many identities from every source of the epoch's
        training set (labelled sources, and the sources the method labels).
    :param sampler: the training sampler, a Hydra ``_partial_`` called as ``sampler(labels,
        batch_size=, num_instances=, seed=, num_replicas=, rank=)``, e.g. the GS
        :class:`~reidgen.data.samplers.graph.GraphSampler`; None = the P x K
        :class:`~reidgen.data.samplers.RandomIdentitySampler`. It must yield whole per-process
        batches with ``per_rank_batch_size``, ``epoch``, ``rank``, ``set_epoch`` and
        ``state_dict`` as the shared samplers do. Every epoch's sampler is handed to the method's
        ``configure_train_sampler(sampler, datamodule)`` before it is iterated.
    :param validation: ``"strict"`` refuses datasets whose counts differ from the published ones,
        ``"warn"`` logs the differences and goes on, ``"off"`` skips the comparison.
    :param extra_fields: per-sample fields the training batches carry besides the image, e.g.
        ``["structure"]``; every training source must offer each of them (its ``extra_fields``,
        see :class:`~reidgen.data.sources.DatasetSource`). They are not transformed with the image.
    """

    def __init__(
        self,
        sources: Sequence[str | DatasetSource],
        targets: Sequence[str | DatasetSource],
        train_transform: Transform,
        test_transform: Transform,
        catalogue: Mapping[str, DatasetSource] | None = None,
        unlabelled: Sequence[str] = (),
        batch_size: int = 64,
        num_instances: int = 4,
        eval_batch_size: int = 128,
        num_workers: int = 2,
        seed: int = 0,
        domain_balanced: bool = False,
        validation: str = "strict",
        sampler: Callable[..., Sampler] | None = None,
        extra_fields: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if not targets:
            raise ValueError("data.targets is empty: name at least one dataset to evaluate on")
        if sampler is not None and domain_balanced:
            raise ValueError(
                "data.domain_balanced is a mode of the default P x K sampler; it cannot be "
                "combined with data.sampler"
            )
        if validation not in ("strict", "warn", "off"):
            raise ValueError(f"validation must be 'strict', 'warn' or 'off', got {validation!r}")
        self.catalogue = dict(catalogue or {})
        self.sources = [self._resolve(item) for item in sources]
        self.targets = [self._resolve(item) for item in targets]
        source_names = [source.name for source in self.sources]
        unknown = sorted(set(unlabelled) - set(source_names))
        if unknown:
            raise ValueError(f"data.unlabelled names {unknown}, which are not among the sources")
        self.unlabelled = list(unlabelled)
        self.train_transform = train_transform
        self.test_transform = test_transform
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.domain_balanced = domain_balanced
        self.validation = validation
        self.sampler_factory = sampler
        self.extra_fields = list(extra_fields)
        # The training pool (after setup('fit')) and the current epoch's training set.
        self.pool: list[TrainingSource] | None = None
        self.train_set: TrainDataset | None = None
        self.eval_sets: dict[str, EvalDataset] = {}
        self.label_of: dict[tuple[str, int], int] = {}
        self._sampler: Any = None
        self._pending_sampler_state: dict[str, Any] | None = None
        # (epoch, validated labels by source name) of the last epoch built, or restored from a
        # checkpoint: the same epoch built again reuses them.
        self._assignment: tuple[int, dict[str, np.ndarray]] | None = None

    def _resolve(self, item: str | DatasetSource) -> DatasetSource:
        if not isinstance(item, str):
            return item
        if item not in self.catalogue:
            raise ValueError(
                f"unknown dataset {item!r}; the catalogue has: {', '.join(sorted(self.catalogue))}"
            )
        return self.catalogue[item]

    @property
    def eval_targets(self) -> dict[str, EvalTarget]:
        """Every test target's identities, cameras, times, query count and protocol, by name, in
        the order of :attr:`targets` (and of the evaluation loaders). Known after ``setup``."""
        return {name: dataset.target for name, dataset in self.eval_sets.items()}

    def all_sources(self) -> list[DatasetSource]:
        """Sources, then targets (a dataset used as both appears twice)."""
        return [*self.sources, *self.targets]

    @property
    def target_names(self) -> list[str]:
        return [target.name for target in self.targets]

    @property
    def num_classes(self) -> int:
        """Identities of the labelled sources; training labels ``0..num_classes-1`` are theirs."""
        if self.pool is None:
            raise RuntimeError("num_classes is known after setup('fit')")
        return len(self.label_of)

    @property
    def num_unlabelled_images(self) -> int:
        """Training images of the ``unlabelled`` sources (known after ``setup('fit')``)."""
        if self.pool is None:
            raise RuntimeError("num_unlabelled_images is known after setup('fit')")
        return sum(len(source.samples) for source in self.pool if not source.labelled)

    def _load(self, source: DatasetSource) -> Splits:
        splits = source.load()
        if self.validation != "off":
            mismatches = count_mismatches(splits)
            if mismatches:
                message = (
                    f"dataset {source.name!r} ({splits.variant or 'unknown variant'}) differs from "
                    f"its published counts: {'; '.join(mismatches)}. Check the copy with "
                    "`python -m reidgen.data.validate`, or set data.validation=warn to proceed."
                )
                if self.validation == "strict":
                    raise DatasetValidationError(message)
                log.warning(message)
        return splits

    def setup(self, stage: str | None = None) -> None:
        """Indexes the datasets (generating SynthPerson ones on first use); safe to call twice."""
        if stage in (None, "fit") and self.pool is None:
            self._setup_pool()
        if not self.eval_sets:
            names = self.target_names
            if len(set(names)) != len(names):
                raise ValueError(f"test targets must have distinct names, got {names}")
            for target in self.targets:
                splits = self._load(target)
                self.eval_sets[target.name] = EvalDataset(
                    splits.query,
                    splits.gallery,
                    self.test_transform,
                    getattr(target, "protocol", None),
                    name=target.name,
                )
        if self.pool is not None:
            self._check_no_test_image_in_training()

    def _check_no_test_image_in_training(self) -> None:
        """Refuses a training source (labelled or not) that holds a target's query or gallery
        images: pseudo labels or features learned on test images would score the test itself."""
        for source in self.pool or []:
            paths = {str(sample.path) for sample in source.samples}
            for name, dataset in self.eval_sets.items():
                shared = sorted(str(s.path) for s in dataset.samples if str(s.path) in paths)
                if shared:
                    kind = "unlabelled source" if not source.labelled else "training source"
                    raise ValueError(
                        f"{kind} {source.name!r} contains {len(shared)} query/gallery images of "
                        f"test target {name!r} (e.g. {shared[0]}): training images must not be "
                        "test images. Use a dataset's train split as a source and its query and "
                        "gallery as a target, never the same files for both"
                    )

    def _setup_pool(self) -> None:
        names = [source.name for source in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"training sources must have distinct names, got {names}")
        if not self.sources:
            raise ValueError("no training source: name one in data.sources")
        labelled = [s for s in self.sources if s.name not in self.unlabelled]
        if not labelled:
            # Unsupervised training (GCL's setting): every label comes from the method's
            # assign_training_labels; train_dataloader fails clearly if it gives none.
            log.info("no labelled training source: the method's pseudo labels are all there is")
        for source in self.sources:
            offered = getattr(source, "extra_fields", {})
            for field in self.extra_fields:
                if field not in offered:
                    raise ValueError(
                        f"data.extra_fields asks for {field!r}, which training source "
                        f"{source.name!r} does not provide; it offers: "
                        f"{', '.join(sorted(offered)) or 'no extra fields'}"
                    )
        loaded = {source.name: self._load(source) for source in self.sources}
        self.label_of = relabel([loaded[s.name] for s in labelled])
        self.pool = []
        for position, source in enumerate(self.sources):
            samples = tuple(replace(s, domain=position) for s in loaded[source.name].train)
            is_labelled = source.name not in self.unlabelled
            own = [self.label_of[(s.dataset, s.pid)] if is_labelled else UNUSED for s in samples]
            self.pool.append(
                TrainingSource(source.name, is_labelled, samples, np.array(own, dtype=np.int64))
            )
        self.train_set = self._training_dataset(epoch_labels(self.pool, {}, self.num_classes))
        unused = sum(len(s.samples) for s in self.pool if not s.labelled)
        log.info("training on %d images of %d identities", len(self.train_set), len(self.label_of))
        if unused:
            log.info("%d images of unlabelled sources %s", unused, self.unlabelled)

    def _training_dataset(self, labels: Sequence[np.ndarray]) -> TrainDataset:
        """The images of the pool whose label is not -1, in pool order."""
        if self.pool is None:
            raise RuntimeError("call setup('fit') first")
        samples, kept, positions = [], [], []
        for position, (source, source_labels) in enumerate(zip(self.pool, labels, strict=True)):
            for sample, label in zip(source.samples, source_labels.tolist(), strict=True):
                if label != UNUSED:
                    samples.append(sample)
                    kept.append(label)
                    positions.append(position)
        fields = [
            {name: getattr(source, "extra_fields", {})[name] for name in self.extra_fields}
            for source in self.sources
        ]
        return TrainDataset(
            samples,
            kept,
            self.train_transform,
            self.seed,
            sources=positions,
            extra_fields=fields if self.extra_fields else (),
        )

    def _method(self) -> ReIDMethod | None:
        return self.trainer.lightning_module if self.trainer is not None else None

    def _assigned_labels(self, epoch: int) -> dict[str, np.ndarray]:
        """The epoch's validated labels: restored (resume) or from the method's hook, rank 0's."""
        if self.pool is None:
            raise RuntimeError("call setup('fit') first")
        if self._assignment is not None and self._assignment[0] == epoch:
            # Re-checked: a checkpoint of other data must fail here, not train on wrong labels.
            return check_assignment(self._assignment[1], self.pool)
        method = self._method()
        if method is None:
            return {}
        previous = self._assignment[1] if self._assignment is not None else {}
        training_set = TrainingSet(
            epoch,
            self.num_classes,
            self.pool,
            epoch_labels(self.pool, previous, self.num_classes),
            self.test_transform,
            self.eval_batch_size,
            self.num_workers,
        )
        returned = method.assign_training_labels(epoch, training_set)
        world_count, rank = world()
        if world_count > 1:
            # Every process clusters, but only rank 0's labels count: features computed on
            # different devices may differ in ties. CPU copies, so no rank unpickles onto another
            # rank's GPU.
            shared = [_portable(returned) if rank == 0 else None]
            torch.distributed.broadcast_object_list(shared, src=0)
            returned = shared[0]
        assigned = check_assignment(returned, self.pool)
        reload = getattr(self.trainer, "reload_dataloaders_every_n_epochs", 1)
        if assigned and reload != 1:
            raise ValueError(
                f"{type(method).__name__}.assign_training_labels relabels the training set, but "
                f"the trainer rebuilds the training loader every {reload} epochs (0 = never): "
                "set trainer.reload_dataloaders_every_n_epochs=1"
            )
        return assigned

    def train_dataloader(self) -> DataLoader:
        """The training loader of the trainer's current epoch (epoch 0 without a trainer).

        Builds the epoch's training set from the method's labels (:meth:`_assigned_labels`), its
        sampler (handed to the method's ``configure_train_sampler``), and restores a pending
        sampler state when resuming.
        """
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        assigned = self._assigned_labels(epoch)
        labels = epoch_labels(self.pool, assigned, self.num_classes)
        train_set = self._training_dataset(labels)
        if len(train_set) == 0:
            if not any(source.labelled for source in self.pool) and not assigned:
                method = self._method()
                raise ValueError(
                    f"epoch {epoch} has no training image: every training source is in "
                    f"data.unlabelled and {type(method).__name__} assigns no labels "
                    "(assign_training_labels); train with a method that pseudo-labels, or "
                    "label a source"
                )
            raise ValueError(f"epoch {epoch} has no training image: every label is -1")
        self.train_set = train_set
        self._assignment = (epoch, assigned)
        world_count, rank = world()
        common = {
            "batch_size": self.batch_size,
            "num_instances": self.num_instances,
            "seed": self.seed,
            "num_replicas": world_count,
            "rank": rank,
        }
        if self.sampler_factory is None:
            self._sampler = RandomIdentitySampler(
                train_set.labels,
                domains=[s.domain for s in train_set.samples],
                domain_balanced=self.domain_balanced,
                **common,
            )
        else:
            self._sampler = self.sampler_factory(train_set.labels, **common)
        method = self._method()
        if method is not None:
            method.configure_train_sampler(self._sampler, self)
        # The epoch is set here, not only by Lightning: Lightning makes a first iterator of a
        # reloaded loader before it sets the epoch, and that one (its workers prefetch, a GS graph
        # is built) should already be this epoch's.
        self._sampler.set_epoch(epoch)
        pending, self._pending_sampler_state = self._pending_sampler_state, None
        # Only a state of this very epoch says where it goes on: one saved at the end of the
        # previous epoch would set the sampler back to that epoch's end, and a loader with
        # workers fetches from it before Lightning sets the epoch again.
        if pending is not None and int(pending["epoch"]) == epoch:
            self._sampler.load_state_dict(pending)
        return DataLoader(
            train_set,
            batch_size=self._sampler.per_rank_batch_size,
            sampler=EpochTaggedSampler(self._sampler),
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def train_images(self, indices: Sequence[int]) -> DataLoader:
        """Images ``indices`` of the current epoch's training set (the sampler's indices) with
        the *test* transform, in that order, for methods that look at the training set with the
        current model (e.g. the GS class graph). Batches are dicts as for evaluation; ``index``
        is the position in ``indices``."""
        if self.train_set is None:
            raise RuntimeError("call setup('fit') first")
        samples = [self.train_set.samples[i] for i in indices]
        return DataLoader(
            EvalDataset([], samples, self.test_transform),
            batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
        )

    def _eval_loaders(self) -> list[DataLoader]:
        world_count, rank = world()
        return [
            DataLoader(
                dataset,
                batch_size=self.eval_batch_size,
                sampler=ShardSampler(len(dataset), world_count, rank),
                num_workers=self.num_workers,
            )
            for dataset in self.eval_sets.values()
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()

    def state_dict(self) -> dict[str, Any]:
        """The sampler's epoch and position, so a resumed run draws the same batches, and the
        epoch's assigned labels (``{"epoch", "assigned": {source name: int64 Tensor[N]}}``), so a
        resumed epoch trains on the same labels without asking the method again.

        The position counts batches *trained*, not indices handed to the loader: workers and
        Lightning prefetch, so the sampler itself runs ahead of training. Trained = *processed*
        (the training step ran): a checkpoint saved at a batch end (``on_train_batch_end``)
        is taken before Lightning counts that batch completed, and Lightning completes it on
        restore.
        """
        state: dict[str, Any] = {}
        if self._sampler is not None:
            sampler_state = self._sampler.state_dict()
            if self.trainer is not None:
                trained = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
                sampler_state["position"] = min(
                    trained * self._sampler.per_rank_batch_size, len(self._sampler)
                )
            state["sampler"] = sampler_state
        elif self._pending_sampler_state is not None:
            state["sampler"] = self._pending_sampler_state
        if self._assignment is not None:
            epoch, assigned = self._assignment
            state["labels"] = {
                "epoch": epoch,
                "assigned": {name: torch.from_numpy(a.copy()) for name, a in assigned.items()},
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`; applied when the next training loader is built."""
        self._pending_sampler_state = state.get("sampler")
        labels = state.get("labels")
        if labels is not None:
            assigned = {
                name: np.asarray(a, dtype=np.int64) for name, a in labels["assigned"].items()
            }
            self._assignment = (int(labels["epoch"]), assigned)


def _portable(returned: Any) -> Any:
    """``assign_training_labels``' result with tensors moved to the CPU, to broadcast it."""
    if not isinstance(returned, Mapping):
        return returned
    return {
        name: values.detach().cpu() if isinstance(values, torch.Tensor) else values
        for name, values in returned.items()
    }
