"""ReIDDataModule: training sources merged into one relabelled set; one loader per test target."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Sampler

from reidgen.data.dataset import EvalDataset, TrainDataset, Transform
from reidgen.data.sample import Sample, Splits
from reidgen.data.samplers import EpochTaggedSampler, RandomIdentitySampler, ShardSampler
from reidgen.data.sources import DatasetSource
from reidgen.data.validate import DatasetValidationError, count_mismatches
from reidgen.distributed import world

log = logging.getLogger(__name__)


def relabel(
    train_sets: Sequence[Splits], domains: Sequence[int] | None = None
) -> tuple[list[Sample], list[int], dict[tuple[str, int], int]]:
    """Merges training splits; pids become 0..N-1 over the union, keyed by (dataset, pid).

    The key includes the dataset name, so pid 1 of two sources are two identities. Keys are sorted,
    so the labels are the same on every process. Each sample's ``domain`` is ``domains[i]`` for
    the i-th split (default: its position).
    """
    names = [splits.name for splits in train_sets]
    if len(set(names)) != len(names):
        raise ValueError(f"training sources must have distinct names, got {names}")
    domains = list(range(len(train_sets))) if domains is None else list(domains)
    samples = [
        replace(sample, domain=domain)
        for domain, splits in zip(domains, train_sets, strict=True)
        for sample in splits.train
    ]
    label_of = {key: i for i, key in enumerate(sorted({(s.dataset, s.pid) for s in samples}))}
    return samples, [label_of[(s.dataset, s.pid)] for s in samples], label_of


class ReIDDataModule(pl.LightningDataModule):
    """Training sources and test targets for one run.

    Datasets are named: ``sources``, ``targets`` and ``unlabelled`` hold names looked up in
    ``catalogue`` (the ``catalogue`` config group defines every dataset reidgen knows), or source
    objects directly. So ``data.sources=[randperson,msmt17] data.targets=[market1501]`` composes a
    multi-source run on the command line.

    :param sources: datasets whose ``train`` splits are merged for training.
    :param targets: datasets whose ``query`` + ``gallery`` are evaluated, each separately.
    :param unlabelled: sources whose identities are not used as labels (for unsupervised and
        domain-adaptive methods): their images go to :attr:`unlabelled_set`, not the P x K batches.
    :param batch_size: the global P x K batch over all processes.
    :param num_instances: K, images per identity in a batch.
    :param domain_balanced: each batch takes as many identities from every labelled source.
    :param sampler: the training sampler, a Hydra ``_partial_`` called as ``sampler(labels,
        batch_size=, num_instances=, seed=, num_replicas=, rank=)``, e.g. the GS
        :class:`~reidgen.data.samplers.graph.GraphSampler`; None = the P x K
        :class:`~reidgen.data.samplers.RandomIdentitySampler`. It must yield whole per-process
        batches with ``per_rank_batch_size``, ``epoch``, ``rank``, ``set_epoch`` and
        ``state_dict`` as the shared samplers do. Once built it is handed to the method's
        ``configure_train_sampler(sampler, datamodule)``, if the method has one.
    :param validation: ``"strict"`` refuses datasets whose counts differ from the published ones,
        ``"warn"`` logs the differences and goes on, ``"off"`` skips the comparison.
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
        self.train_set: TrainDataset | None = None
        self.unlabelled_set: TrainDataset | None = None
        self.eval_sets: dict[str, EvalDataset] = {}
        self.label_of: dict[tuple[str, int], int] = {}
        self._sampler: Any = None
        self._pending_sampler_state: dict[str, Any] | None = None

    def _resolve(self, item: str | DatasetSource) -> DatasetSource:
        if not isinstance(item, str):
            return item
        if item not in self.catalogue:
            raise ValueError(
                f"unknown dataset {item!r}; the catalogue has: {', '.join(sorted(self.catalogue))}"
            )
        return self.catalogue[item]

    def all_sources(self) -> list[DatasetSource]:
        """Sources, then targets (a dataset used as both appears twice)."""
        return [*self.sources, *self.targets]

    @property
    def target_names(self) -> list[str]:
        return [target.name for target in self.targets]

    @property
    def num_classes(self) -> int:
        if self.train_set is None:
            raise RuntimeError("num_classes is known after setup('fit')")
        return len(self.label_of)

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
        if stage in (None, "fit") and self.train_set is None:
            labelled = [s for s in self.sources if s.name not in self.unlabelled]
            if not labelled:
                raise ValueError("no labelled training source: name one in data.sources")
            loaded = {source.name: self._load(source) for source in self.sources}
            domains = {source.name: i for i, source in enumerate(self.sources)}
            samples, labels, self.label_of = relabel(
                [loaded[s.name] for s in labelled], [domains[s.name] for s in labelled]
            )
            self.train_set = TrainDataset(samples, labels, self.train_transform, self.seed)
            log.info("training on %d images of %d identities", len(samples), len(self.label_of))
            if self.unlabelled:
                unlabelled = [
                    replace(sample, domain=domains[name])
                    for name in self.unlabelled
                    for sample in loaded[name].train
                ]
                self.unlabelled_set = TrainDataset(
                    unlabelled, [-1] * len(unlabelled), self.train_transform, self.seed
                )
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
                )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup('fit') first"
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
                self.train_set.labels,
                domains=[s.domain for s in self.train_set.samples],
                domain_balanced=self.domain_balanced,
                **common,
            )
        else:
            self._sampler = self.sampler_factory(self.train_set.labels, **common)
        method = self.trainer.lightning_module if self.trainer is not None else None
        if hasattr(method, "configure_train_sampler"):
            method.configure_train_sampler(self._sampler, self)
        if self._pending_sampler_state is not None:
            self._sampler.load_state_dict(self._pending_sampler_state)
            self._pending_sampler_state = None
        return DataLoader(
            self.train_set,
            batch_size=self._sampler.per_rank_batch_size,
            sampler=EpochTaggedSampler(self._sampler),
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def train_images(self, indices: Sequence[int]) -> DataLoader:
        """Training images ``indices`` with the *test* transform, in that order, for methods
        that look at the training set with the current model (e.g. the GS class graph).
        Batches are dicts as for evaluation; ``index`` is the position in ``indices``."""
        assert self.train_set is not None, "call setup('fit') first"
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
        """The sampler's epoch and position, so a resumed run draws the same batches.

        The position counts batches *trained*, not indices handed to the loader: workers and
        Lightning prefetch, so the sampler itself runs ahead of training.
        """
        if self._sampler is None:
            pending = self._pending_sampler_state
            return {"sampler": pending} if pending is not None else {}
        state = self._sampler.state_dict()
        if self.trainer is not None:
            trained = self.trainer.fit_loop.epoch_loop.batch_progress.current.completed
            state["position"] = min(trained * self._sampler.per_rank_batch_size, len(self._sampler))
        return {"sampler": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending_sampler_state = state.get("sampler")
