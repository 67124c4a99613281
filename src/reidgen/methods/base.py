"""ReIDMethod: the LightningModule every method extends; it owns validation and test.

A method implements ``training_step`` and ``extract(images) -> features``; it may override
``distance`` (e.g. QAConv's matcher) and ``rerank_rows``. Evaluation is the same for all methods:
features of every target's query and gallery are extracted per shard, gathered across processes by
sample index, scored by the :class:`~reidgen.eval.evaluator.Evaluator` (flip, query expansion,
re-ranking, TLift) under the target's protocol, and logged as ``<stage>/<target>/<metric>`` plus
the mean over targets ``<stage>/mean/<metric>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from reidgen.data.sample import Sample
from reidgen.eval import DistanceFn, chunked_distance
from reidgen.eval.evaluator import Evaluator
from reidgen.eval.gather import gather_by_index
from reidgen.eval.rerank import RowsFn

METRIC_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")
CHECKPOINT_KEY = "reidgen"


class ReIDMethod(pl.LightningModule):
    """Base class: shared evaluation, checkpoint metadata.

    :param num_classes: training identities (saved in checkpoints, so loading needs no data).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        # Set by the entry points: the method's config (stored in checkpoints to rebuild it) and
        # the test-time options.
        self.method_config: dict[str, Any] | None = None
        # The test transform the method was trained with (its config), so that evaluating a
        # checkpoint feeds it images prepared the same way (size, normalisation).
        self.test_transform_config: dict[str, Any] | None = None
        self.evaluator = Evaluator()
        self.eval_results: dict[str, dict[str, dict[str, float]]] = {}
        self._eval_outputs: dict[int, list[dict[str, Tensor]]] = {}

    def extract(self, images: Tensor) -> Tensor:
        """Retrieval features of ``images`` [B, 3, H, W]: [B, D] (or [B, ...] with ``distance``)."""
        raise NotImplementedError

    def distance(self, query_features: Tensor, gallery_features: Tensor) -> DistanceFn:
        """Query-gallery distances, computed a chunk of queries at a time (default: cosine)."""
        return chunked_distance(query_features, gallery_features, "cosine")

    def rerank_rows(self, features: Tensor) -> RowsFn:
        """Distances among all N samples as re-ranking expects them (plain, not squared):
        ``rows(start, stop) -> Tensor[stop - start, N]``. Default: the Euclidean distance of
        L2-normalised features, ``sqrt(2 * cosine distance)``, which ranks like :meth:`distance`.
        """
        cosine = self.distance(features, features)
        return lambda start, stop: cosine(start, stop).mul(2).clamp_min(0).sqrt()

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

    # ----------------------------------------------------------------------- evaluation
    def merge_flipped(self, features: Tensor, flipped_features: Tensor) -> Tensor:
        """Flip test: combines the features of images and of their mirror images (average)."""
        return (features + flipped_features) / 2

    def _extract_for_eval(self, images: Tensor) -> Tensor:
        features = self.extract(images)
        if self.evaluator.flip:
            features = self.merge_flipped(features, self.extract(torch.flip(images, dims=[3])))
        return features

    def _eval_step(self, batch: dict[str, Tensor], dataloader_idx: int) -> None:
        self._eval_outputs.setdefault(dataloader_idx, []).append(
            {
                "features": self._extract_for_eval(batch["image"]),
                "pid": batch["pid"],
                "camid": batch["camid"],
                "index": batch["index"],
            }
        )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0):
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0):
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs = {}

    def on_test_epoch_start(self) -> None:
        self._eval_outputs = {}

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    def _finish_eval(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        results: dict[str, dict[str, float]] = {}
        for position, (name, dataset) in enumerate(datamodule.eval_sets.items()):
            outputs = self._eval_outputs.get(position, [])
            total = len(dataset)
            gathered = {
                key: gather_by_index(
                    torch.cat([o[key] for o in outputs]) if outputs else self._empty(key),
                    torch.cat([o["index"] for o in outputs]) if outputs else self._empty("index"),
                    total,
                )
                for key in ("features", "pid", "camid")
            }
            split = dataset.num_query
            metrics = self.evaluator.evaluate(
                self,
                gathered["features"],
                gathered["pid"],
                gathered["camid"],
                split,
                dataset.protocol,
                timestamps=_timestamps(dataset.samples),
                target=name,
            )
            results[name] = {**metrics, "num_query": split, "num_gallery": total - split}
        results["mean"] = {
            key: sum(r[key] for r in results.values()) / len(results) for key in METRIC_KEYS
        }
        for target, metrics in results.items():
            for key in METRIC_KEYS:
                self.log(f"{stage}/{target}/{key}", metrics[key], add_dataloader_idx=False)
        self.eval_results[stage] = results
        self._eval_outputs = {}

    def _empty(self, key: str) -> Tensor:
        # A rank whose shard of a tiny target is empty still joins the gather.
        if key == "features":
            raise RuntimeError("a process got no evaluation samples; use fewer processes")
        return torch.zeros(0, dtype=torch.long, device=self.device)

    # ----------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "method_config": self.method_config,
            "num_classes": self.num_classes,
            "test_transform": self.test_transform_config,
        }


def _timestamps(samples: Sequence[Sample]) -> Tensor:
    """``[N]`` float64 seconds of ``samples``, NaN where unknown.

    An :class:`~reidgen.data.dataset.EvalDataset` lists queries then gallery, and ``index`` is the
    position in that list, so this is the order of the gathered features.
    """
    times = [math.nan if s.timestamp is None else s.timestamp for s in samples]
    return torch.tensor(times, dtype=torch.float64)


def load_method(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> ReIDMethod:
    """Rebuilds a method from a reidgen checkpoint alone: its config and weights, no data.

    :param overrides: test-time changes to the stored method config, e.g.
        ``{"test_distance": "global_local"}``; only keys the config already has (typos fail).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    meta = checkpoint.get(CHECKPOINT_KEY)
    if not meta or meta.get("method_config") is None:
        raise ValueError(f"{path} is not a reidgen checkpoint (no '{CHECKPOINT_KEY}' entry)")
    config = meta["method_config"]
    if overrides:
        unknown = sorted(set(overrides) - set(config))
        if unknown:
            raise KeyError(
                f"method override(s) {unknown} are not keys of the checkpoint's method config; "
                f"it has: {', '.join(sorted(k for k in config if not k.startswith('_')))}"
            )
        config = {**config, **overrides}
    method = instantiate(config, num_classes=meta["num_classes"])
    method.load_state_dict(checkpoint["state_dict"])
    method.method_config = config
    method.test_transform_config = meta.get("test_transform")
    return method
