"""ReIDMethod: the LightningModule every method extends; it owns validation and test.

A method implements ``training_step`` and ``extract(images) -> Features`` and may implement the
hooks declared below (every hook a method can have is declared here, with its default). Evaluation
is the same for all methods: each process extracts the features of its shard of every target, a
:class:`~reidgen.eval.metric.RetrievalEvaluation` per target (a torchmetrics ``Metric``) syncs them
across processes and scores them with the target's own identities, cameras and protocol from the
data module, and the results are logged as ``<stage>/<target>/<metric>`` plus the mean over targets
``<stage>/mean/<metric>``.

A method is built once, with everything it needs (``reidgen.run_support.build_method``): its own
parameters, ``num_classes``, the test-time options (``evaluation``), the test transform it was
trained with and its own config, and the number of unlabelled training images (an upper bound on
the pseudo identities a clustering method can make of them). The last four are stored as
hyper-parameters in every checkpoint, so a checkpoint alone rebuilds the method
(``reidgen.run_support.load_method``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import Sampler
from torchmetrics import Metric

from reidgen.clustering.history import EpochLabels, write_history
from reidgen.distributed import world
from reidgen.eval import DistanceFn, chunked_distance
from reidgen.eval.evaluator import Comparison, Evaluator
from reidgen.eval.features import Features
from reidgen.eval.gather import place_by_index
from reidgen.eval.metric import RetrievalEvaluation
from reidgen.eval.rerank import FeatureRows, RowsFn
from reidgen.progress import progress

if TYPE_CHECKING:
    from reidgen.data.datamodule import ReIDDataModule
    from reidgen.data.training_set import TrainingSet

log = logging.getLogger(__name__)

METRIC_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


class ReIDMethod(pl.LightningModule):
    """Base class of every method: declared hooks, shared evaluation, checkpoint metadata.

    Subclasses take their own parameters plus ``num_classes`` and pass ``**settings`` on to
    this constructor.

    :param num_classes: training identities of the labelled sources.
    :param evaluation: the test-time options: the keyword arguments of
        :class:`~reidgen.eval.evaluator.Evaluator` (the ``eval`` config group, whose
        ``_target_`` is ignored); None = defaults.
    :param test_transform: the config of the test transform the method is trained with, so that
        evaluating a checkpoint prepares images the same way (size, normalisation).
    :param config: the method's own config (with ``_target_``), to rebuild it from a checkpoint.
    :param num_unlabelled_images: images of the ``data.unlabelled`` sources: methods that
        pseudo-label them size per-cluster parameters from it (DomainMix's classifier), and a
        checkpoint rebuilds them with the same shapes.
    """

    def __init__(
        self,
        num_classes: int,
        evaluation: Mapping[str, Any] | None = None,
        test_transform: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        num_unlabelled_images: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_unlabelled_images = num_unlabelled_images
        self.save_hyperparameters(
            {
                "num_classes": num_classes,
                "num_unlabelled_images": num_unlabelled_images,
                "evaluation": dict(evaluation) if evaluation is not None else None,
                "test_transform": dict(test_transform) if test_transform is not None else None,
                "config": dict(config) if config is not None else None,
            }
        )
        # The eval config mirrors Evaluator's signature; its _target_ names that class.
        options = {k: v for k, v in (evaluation or {}).items() if k != "_target_"}
        self.evaluator = Evaluator(**options)
        self.eval_results: dict[str, dict[str, dict[str, float]]] = {}
        # Not registered as submodules: built per evaluation, and never part of a checkpoint.
        self._eval_metrics: dict[str, RetrievalEvaluation] = {}
        # Training metrics by log name (the metrics themselves are the methods' submodules).
        self._training_metrics: dict[str, Metric] = {}

    # ------------------------------------------------------------------- declared hooks
    #: Whether a checkpoint saved mid-epoch resumes this method exactly. Lightning skips
    #: ``on_train_epoch_start`` when it resumes mid-epoch, so a method whose per-epoch state
    #: (set there, or gathered batch by batch) is not in its checkpoint sets False: it then gets
    #: ``last.ckpt`` at epoch ends only (``reidgen.checkpointing.LastCheckpoint``).
    resumes_mid_epoch: bool = True

    @property
    def variant(self) -> str | None:
        """What this run is called where it differs from the method's own name (e.g. "GCL
        (2-D structure fallback)"): written to ``metrics.json`` as ``method_variant`` and shown
        in tables. Default: None."""
        return None

    def extract(self, images: Tensor) -> Features:
        """What the method says about ``images`` ``[B, 3, H, W]``: named parts, ``[B, ...]``
        each (see :mod:`reidgen.eval.features`). Every subclass implements it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement extract()")

    def distance(self, query_features: Features, gallery_features: Features) -> DistanceFn:
        """The test distance of ``Q`` query and ``G`` gallery records, a chunk of queries at a
        time: ``distance(start, stop) -> Tensor[stop - start, G]``, smaller = more similar.
        Default: the cosine distance of the plain embeddings."""
        return chunked_distance(
            query_features.require_embedding("the default cosine distance"),
            gallery_features.require_embedding("the default cosine distance"),
            "cosine",
        )

    def rerank_rows(self, features: Features, num_query: int) -> RowsFn:
        """The re-ranking input: distances among all ``N`` records (the ``num_query`` queries
        first) as k-reciprocal re-ranking takes them, ``rows(start, stop) -> Tensor[stop - start,
        N]``. Re-ranking squares them and divides each row by its maximum (Zhong et al., for
        Euclidean distances), so a method gives *plain* distances, or, to follow an official
        chain that starts elsewhere, whatever makes that normalised matrix its own (QAConv).
        Default: the Euclidean distance of the L2-normalised embeddings,
        ``sqrt(2 * cosine distance)``, which ranks like :meth:`distance`; as
        :class:`~reidgen.eval.rerank.FeatureRows`, so re-ranking computes it in symmetric
        blocks."""
        embedding = features.require_embedding("the default re-ranking input")
        return FeatureRows(F.normalize(embedding.float(), dim=1))

    def merge_flipped(self, features: Features, flipped_features: Features) -> Features:
        """Flip test (``eval.flip``): combines the records of images and of their mirror images.
        Default: the average of every part, right for embeddings and for row-wise parts (a
        mirror image has the same rows); a method whose parts are spatial overrides it."""
        return Features(
            {name: (features[name] + flipped_features[name]) / 2 for name in features.names}
        )

    def configure_train_sampler(self, sampler: Sampler, datamodule: ReIDDataModule) -> None:
        """Called by the data module with every epoch's training sampler, before it is iterated;
        e.g. QAConv-GS gives its graph sampler a way to build the class graph. Default: nothing.
        ``datamodule.train_images(indices)`` loads training images with the test transform."""

    def assign_training_labels(
        self, epoch: int, training_set: TrainingSet
    ) -> Mapping[str, Sequence[int]] | None:
        """The per-epoch training-set hook, called by the data module before every epoch.

        A method that learns from pseudo labels (clustering) extracts features of any training
        source through ``training_set`` and returns new labels for the sources it relabels:
        ``{source name: one label per image of that source}``, ``-1`` = not used this epoch. The
        data module then builds the epoch's training set, sampler and batches from them, the
        same on every process (rank 0's labels are broadcast), and keeps them in checkpoints so
        that a resumed epoch uses the same labels. Sources not in the mapping keep their own
        labels (labelled sources) or stay unused (``data.unlabelled`` sources).

        Default: None, the datasets' own labels every epoch. See
        :class:`~reidgen.data.training_set.TrainingSet` for how the returned labels become batch
        labels.
        """
        return None

    # ------------------------------------------------------------------- helpers
    @contextmanager
    def inference(self) -> Iterator[None]:
        """For looking at training images mid-training (a class graph, clustering features):
        every module in eval mode, no autograd, and the training precision's autocast (bf16 /
        fp16) when a trainer runs this; each module's mode is restored afterwards."""
        modes = {module: module.training for module in self.modules()}
        trainer = self._trainer
        precision = (
            trainer.precision_plugin.forward_context()
            if trainer is not None
            else torch.autocast(self.device.type, enabled=False)
        )
        self.eval()
        try:
            with torch.inference_mode(), precision:
                yield
        finally:
            for module, mode in modes.items():
                module.training = mode

    def source_embeddings(
        self, training_set: TrainingSet, name: str, embed: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """L2-normalised ``embed(images)`` ``[N, D]`` (float32, CPU) of every image of training
        source ``name`` (test transform, :meth:`inference` mode), in the source's order; each
        process extracts its share and every process gets all of them (for clustering)."""
        total = len(training_set.samples(name))
        world_count, rank = world()
        indices = list(range(rank, total, world_count))
        rows, order = [], []
        batches = progress(
            training_set.images(name, indices),
            description=f"features of {name} for clustering",
            unit="batch",
            leave=False,
        )
        with self.inference():
            for batch in batches:
                rows.append(F.normalize(embed(batch["image"].to(self.device)).float()).cpu())
                order.append(batch["index"])
        if not rows:
            raise ValueError(f"training source {name!r} has no image on process {rank}")
        features, index = torch.cat(rows), torch.cat(order)
        if world_count > 1:
            parts: list[Any] = [None] * world_count
            dist.all_gather_object(parts, (features, index))
            features = torch.cat([part[0] for part in parts])
            index = torch.cat([part[1] for part in parts])
        return place_by_index(features, index, total)

    @staticmethod
    def with_epoch_scheduler(
        optimizer: Optimizer, scheduler: Callable[[Optimizer], LRScheduler] | None
    ) -> Any:
        """What ``configure_optimizers`` returns: ``optimizer`` alone, or with
        ``scheduler(optimizer)`` stepped once per epoch."""
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler(optimizer), "interval": "epoch"},
        }

    def record_pseudo_labels(
        self, history: list[EpochLabels], record: EpochLabels
    ) -> list[EpochLabels]:
        """A clustering method's epoch labels: ``history`` with ``record`` replacing any record
        of its epoch or later (a resumed run relabels), logged as ``pseudo/<field>`` and written
        as ``pseudo_labels.csv`` / ``.png`` in the run folder (rank 0)."""
        history = [r for r in history if r.epoch < record.epoch] + [record]
        log.info("pseudo labels: %s", record)
        if self._trainer is None or not self.trainer.is_global_zero:
            return history
        # Straight to the loggers: the data module asks for the labels outside Lightning's
        # hooks, where self.log is not allowed.
        values = {f"pseudo/{k}": float(v) for k, v in asdict(record).items() if v is not None}
        for logger in self.trainer.loggers:
            logger.log_metrics(values, step=self.global_step)
        write_history(history, self.trainer.default_root_dir, "pseudo_labels")
        return history

    def log_training_metric(self, name: str, metric: Metric, *batch: Tensor) -> None:
        """Updates ``metric`` (a torchmetrics ``Metric``, a submodule of the method) with a
        batch's ``*batch`` and logs the batch's value as ``name``; the epoch's value, synced over
        the processes, is logged as ``<name>_epoch`` at the epoch's end.

        Not through ``self.log(name, metric)``: Lightning's progress bar would then compute (and
        sync) the metric on rank 0 alone, a collective the other processes never join.
        """
        self._training_metrics[name] = metric
        self.log(name, metric(*batch), on_step=True, on_epoch=False)

    def on_train_epoch_end(self) -> None:
        # Every process computes every metric here, in the same order: compute() is collective.
        for name, metric in sorted(self._training_metrics.items()):
            self.log(f"{name}_epoch", metric.compute())
            metric.reset()

    def comparison(self) -> Comparison:
        """This method's distance and re-ranking input, for the evaluator."""
        return Comparison(distance=self.distance, rerank_input=self.rerank_rows)

    # ------------------------------------------------------------------- evaluation
    def extract_for_eval(self, images: Tensor) -> Features:
        """:meth:`extract`, merged with the mirror images' records when ``eval.flip`` is set."""
        features = self.extract(images)
        if self.evaluator.flip:
            features = self.merge_flipped(features, self.extract(torch.flip(images, dims=[3])))
        return features

    def _eval_step(self, batch: dict[str, Any]) -> None:
        names = set(batch["target"])
        if len(names) != 1:
            raise RuntimeError(f"an evaluation batch mixes targets {sorted(names)}")
        name = names.pop()
        features = self.extract_for_eval(batch["image"])
        metric = self._eval_metrics.get(name)
        if metric is None:
            target = self.trainer.datamodule.eval_targets[name]
            metric = RetrievalEvaluation(target, features.names, self.evaluator, self.comparison())
            self._eval_metrics[name] = metric.to(self.device)
        metric.update(features, batch["index"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._eval_metrics = {}

    def on_test_epoch_start(self) -> None:
        self._eval_metrics = {}

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._finish_eval("val")
        self._eval_metrics = {}

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")
        self._eval_metrics = {}

    def _finish_eval(self, stage: str) -> None:
        results: dict[str, dict[str, float]] = {}
        # The data module's order, the same on every process: computing syncs across them.
        for name in self.trainer.datamodule.eval_targets:
            metric = self._eval_metrics.get(name)
            if metric is None:
                raise RuntimeError(
                    f"this process got no evaluation samples of {name}; use fewer processes"
                )
            results[name] = metric.compute()
        results["mean"] = {
            key: sum(r[key] for r in results.values()) / len(results) for key in METRIC_KEYS
        }
        for target, metrics in results.items():
            for key in METRIC_KEYS:
                self.log(f"{stage}/{target}/{key}", metrics[key], add_dataloader_idx=False)
        self.eval_results[stage] = results
