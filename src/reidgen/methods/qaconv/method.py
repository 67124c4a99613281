"""QAConv LightningModules: QAConv 1.0 (class memory) and QAConv-GS (in-batch matching losses).

Both share :class:`QAConvMethod`: the feature-map network (backbone to layer3, neck, per-location
L2 normalisation), the :class:`~.matcher.QAConvMatcher`, the official recipe's training details
(``docs/methods/qaconv.md`` §6, §12) and the test-time distance. They differ in the loss:

* :class:`QAConv` (ECCV 2020): :class:`~.losses.ClassMemoryLoss`.
* :class:`QAConvGS` (CVPR 2022): a loss on the ``[B, B]`` scores of the batch against itself,
  :class:`~.losses.ScoreTripletLoss` (2.1) or :class:`~.losses.PairwiseMatchingLoss` (2.0), with
  batches from the GS graph sampler (``data.sampler``: :class:`reidgen.data.samplers.graph.
  GraphSampler`). The method builds the sampler's class graph at the start of every epoch
  (:meth:`QAConvMethod.class_graph`); with the P x K sampler instead it is the paper's
  "competitive baseline".

Recipe switches, each faithful to one version by default in the method configs:
``freeze_backbone_bn`` (2.1: the feature network's BN layers keep their running statistics,
re-applied before every batch because Lightning puts modules back in training mode each epoch,
while the matcher's BNs train), ``clip_grad_norm`` (2.1: norm 8, clipped separately for the
feature network and for the matcher), ``backbone_lr_scale`` (0.1 x the learning rate for the
backbone), ``adaptive_schedule`` (2.1's loss-driven learning-rate drop and stopping rule).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric

from reidgen.data.samplers.graph import GraphSampler, nearest_classes
from reidgen.distributed import world_size
from reidgen.eval import DistanceFn
from reidgen.eval.features import Features
from reidgen.eval.rerank import RowsFn
from reidgen.methods.base import ReIDMethod
from reidgen.methods.qaconv.losses import ClassMemoryLoss, LossOutput
from reidgen.methods.qaconv.matcher import QAConvMatcher
from reidgen.methods.qaconv.network import FeatureMapNet
from reidgen.optim import LossAdaptiveSchedule
from reidgen.progress import progress

log = logging.getLogger(__name__)

ADAPTIVE_STATE_KEY = "qaconv_adaptive_schedule"
EPOCH_LOSS_KEY = "qaconv_epoch_loss"
MAPS = "maps"
"""The feature part QAConv describes images with: ``[N, D, h, w]`` maps, unit norm over ``D``."""


class QAConvMethod(ReIDMethod):
    """Shared QAConv model, recipe and evaluation; subclasses define :meth:`compute_loss`.

    :param backbone: ``ResNetBackbone(out_stage=3)`` or any net with ``out_channels`` and
        ``output_size(H, W)``.
    :param optimizer: ``param_groups -> Optimizer`` (Hydra ``_partial_``); its ``lr`` applies to
        the neck and the matcher, ``backbone_lr_scale * lr`` to the backbone.
    :param input_size: ``[H, W]`` of the input images; fixes the matcher's ``N = h * w``.
    :param version: ``"2.1"`` or ``"1.x"``, for both the neck and the matcher head.
    :param neck_channels: ``D`` (128 in 1.0 and 2.1; 0 = no neck).
    :param scheduler: ``optimizer -> LRScheduler`` stepped per epoch (1.0's step decay), or None.
    :param adaptive_schedule: 2.1's loss-driven drop and stop, or None.
    :param eval_chunks: ``(queries, gallery items)`` per block of the evaluation matcher, or
        None for the matcher's defaults.
    :param settings: passed to :class:`~reidgen.methods.base.ReIDMethod`.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: nn.Module,
        optimizer: Callable[..., Optimizer],
        input_size: Sequence[int],
        version: str = "2.1",
        neck_channels: int = 128,
        backbone_lr_scale: float = 0.1,
        freeze_backbone_bn: bool = True,
        clip_grad_norm: float | None = 8.0,
        scheduler: Callable[[Optimizer], LRScheduler] | None = None,
        adaptive_schedule: LossAdaptiveSchedule | None = None,
        eval_chunks: Sequence[int] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(num_classes, **settings)
        if len(input_size) != 2:
            raise ValueError(f"input_size must be [height, width], got {list(input_size)}")
        if clip_grad_norm is not None and clip_grad_norm <= 0:
            # The official code zeroes every gradient with a clip of 0; refuse it instead.
            raise ValueError(f"clip_grad_norm must be positive or None, got {clip_grad_norm}")
        if scheduler is not None and adaptive_schedule is not None:
            raise ValueError("give either scheduler or adaptive_schedule, not both")
        self.network = FeatureMapNet(backbone, neck_channels, neck=version)
        height, width = self.network.output_size(int(input_size[0]), int(input_size[1]))
        self.feature_shape = (self.network.out_channels, height, width)
        self.matcher = QAConvMatcher(height * width, version)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.adaptive_schedule = adaptive_schedule
        self.backbone_lr_scale = backbone_lr_scale
        self.freeze_backbone_bn = freeze_backbone_bn
        self.clip_grad_norm = clip_grad_norm
        self.eval_chunks = tuple(eval_chunks) if eval_chunks else (None, None)
        self._epoch_loss: list[Tensor] = []
        # The losses' own accuracies (of classes or of triplets), averaged over each epoch.
        self.train_accuracy = MeanMetric()

    # ------------------------------------------------------------------ model
    def feature_maps(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W] -> [B, D, h, w]``, unit norm over ``D`` at every location."""
        return self.network(images)

    def extract(self, images: Tensor) -> Features:
        """The feature ``maps`` ``[B, D, h, w]`` (no plain embedding: query expansion and the
        default distance do not apply)."""
        maps = self.feature_maps(images)
        # fp16 on CUDA, as the official evaluation: halves the memory of large galleries.
        return Features({MAPS: maps.half() if maps.is_cuda else maps.float()})

    def merge_flipped(self, features: Features, flipped_features: Features) -> Features:
        # A mirrored image gives a mirrored map: flip it back before averaging locations.
        maps, flipped = features[MAPS], flipped_features[MAPS]
        merged = maps.float() + flipped.flip(dims=[3]).float()
        return Features({MAPS: F.normalize(merged, dim=1).to(maps.dtype)})

    def distance(self, query_features: Features, gallery_features: Features) -> DistanceFn:
        """``1 - sigmoid(score / 10)`` of the eval-mode matcher, in memory-bounded chunks."""
        return self.matcher.distance_fn(
            query_features[MAPS], gallery_features[MAPS], *self.eval_chunks
        )

    def rerank_rows(self, features: Features, num_query: int) -> RowsFn:
        """The official QAConv re-ranking input (docs/methods/qaconv.md §9), as plain rows.

        The official code re-ranks its ``[N, N]`` matrix ``M`` of ``d = 1 - sigmoid(s / 10)``
        (queries, then gallery; both cross blocks from the query-gallery scores, ``M[g, q] =
        d(q, g)``) by dividing it by its column maxima and transposing, and it does not square
        ``d``. Row ``i`` of what it starts from is therefore column ``i`` of ``M``. Re-ranking here
        squares its input and divides rows by their maxima, so the rows given are the square root
        of those columns: the normalised matrix is the official one (a test checks it). For the
        symmetric 2.1 head the columns are the rows; QAConv 1.0's 1.x head is not symmetric.
        """
        maps = features[MAPS]
        num_total = len(maps)

        def rows(start: int, stop: int) -> Tensor:
            # Column i of M: d(x_k, x_i) for every k, except d(q_i, g) for a query's gallery part.
            columns = self.matcher.distance_fn(maps, maps[start:stop], *self.eval_chunks)
            block = columns(0, num_total).T.contiguous()
            queries = min(stop, num_query) - start
            if queries > 0:
                block[:queries, num_query:] = self.matcher.distance_fn(
                    maps[start : start + queries], maps[num_query:], *self.eval_chunks
                )(0, queries)
            return block.float().sqrt()

        return rows

    # ------------------------------------------------------------------ training
    def compute_loss(self, maps: Tensor, labels: Tensor) -> LossOutput:
        """Loss of one batch of feature maps ``[B, D, h, w]`` with training labels ``[B]``."""
        raise NotImplementedError

    def on_train_epoch_start(self) -> None:
        self._epoch_loss = []

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.freeze_backbone_bn:
            # Lightning calls .train() on the whole module at every epoch start; re-freeze.
            self.network.eval()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        maps = self.feature_maps(batch["image"])
        output = self.compute_loss(maps, batch["pid"])
        self._epoch_loss.append(output.loss.detach())
        self.log_training_metric("train/accuracy", self.train_accuracy, output.accuracy)
        self.log("train/loss", output.loss, on_step=True, on_epoch=True)
        self.log("train/lr", self.optimizers().param_groups[-1]["lr"], on_step=True)
        return output.loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.adaptive_schedule is None:
            return
        losses = self._epoch_loss
        totals = torch.stack(
            [
                # Restored losses (mid-epoch resume) are on the CPU.
                torch.stack([loss.to(self.device) for loss in losses]).double().sum()
                if losses
                else self._zero(),
                self._zero() + len(losses),
            ]
        )
        if world_size() > 1:
            dist.all_reduce(totals)  # every rank must take the same decision
        mean_loss = float(totals[0] / totals[1].clamp(min=1))
        drop, stop = self.adaptive_schedule.update(self.current_epoch, mean_loss)
        if drop:
            gamma = self.adaptive_schedule.gamma
            for group in self.optimizers().param_groups:
                group["lr"] *= gamma
            log.info(
                "epoch %d: loss %.4f < %.2f x epoch-%d loss: learning rates x %g, stopping after "
                "epoch %d",
                self.current_epoch + 1,
                mean_loss,
                self.adaptive_schedule.step_factor,
                self.adaptive_schedule.base_epoch + 1,
                gamma,
                self.adaptive_schedule.final_epochs,
            )
        if stop:
            self.trainer.should_stop = True

    def _zero(self) -> Tensor:
        return torch.zeros((), dtype=torch.float64, device=self.device)

    def configure_optimizers(self) -> Any:
        backbone = list(self.network.backbone.parameters())
        backbone_ids = {id(p) for p in backbone}
        rest = [p for p in self.parameters() if id(p) not in backbone_ids]
        optimizer = self.optimizer_factory([{"params": backbone}, {"params": rest}])
        optimizer.param_groups[0]["lr"] *= self.backbone_lr_scale
        return self.with_epoch_scheduler(optimizer, self.scheduler_factory)

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Lightning calls this after unscaling fp16 gradients; two separate norms, as the
        # official trainer clips the feature network and the matcher independently.
        if self.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.network.parameters(), self.clip_grad_norm)
            nn.utils.clip_grad_norm_(self.matcher.parameters(), self.clip_grad_norm)

    # ------------------------------------------------------------------ GS class graph
    def configure_train_sampler(self, sampler: Any, datamodule: Any) -> None:
        """Called by the data module with its training sampler: a GS sampler gets the graph."""
        if isinstance(sampler, GraphSampler):
            sampler.set_graph_fn(
                lambda representatives: self.class_graph(
                    representatives, datamodule, sampler.classes_per_batch - 1
                )
            )

    def class_graph(
        self, representatives: list[int], datamodule: Any, num_neighbours: int
    ) -> Tensor:
        """The GS graph: for one image per class (``representatives``, dataset indices, row
        ``i`` = class ``i``), the ``num_neighbours`` classes with the highest QAConv scores,
        ``[P, num_neighbours]`` int64, from the current model in eval mode on test-transformed
        images (docs/methods/qaconv.md §5.1). Identical on every DDP rank (rank 0's table is
        broadcast).
        """
        batches = progress(
            datamodule.train_images(representatives),
            description="GS graph: features of one image per class",
            unit="batch",
            leave=False,
        )
        with self.inference():
            maps = torch.cat(
                [self.extract(batch["image"].to(self.device))[MAPS] for batch in batches]
            )
            scores = self.matcher.scores_in_chunks(maps, maps, *self.eval_chunks)
        nearest = nearest_classes(-scores.float().cpu(), num_neighbours).to(self.device)
        if world_size() > 1:
            dist.broadcast(nearest, src=0)
        return nearest.cpu()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.adaptive_schedule is not None:
            checkpoint[ADAPTIVE_STATE_KEY] = self.adaptive_schedule.state_dict()
        # The running epoch's losses so far: a run resumed mid-epoch (which skips
        # on_train_epoch_start) averages the whole epoch's for the adaptive schedule.
        checkpoint[EPOCH_LOSS_KEY] = [loss.cpu() for loss in self._epoch_loss]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.adaptive_schedule is not None and ADAPTIVE_STATE_KEY in checkpoint:
            self.adaptive_schedule.load_state_dict(checkpoint[ADAPTIVE_STATE_KEY])
        self._epoch_loss = list(checkpoint.get(EPOCH_LOSS_KEY, []))


class QAConv(QAConvMethod):
    """QAConv 1.0 (ECCV 2020): class-memory loss with focal-weighted BCE over all classes.

    :param gamma: focal exponent of :class:`~.losses.ClassMemoryLoss`.
    :param mask_unseen: ignore classes whose memory was never written (QAConv 1.1+).
    Other parameters: :class:`QAConvMethod`.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: nn.Module,
        optimizer: Callable[..., Optimizer],
        input_size: Sequence[int],
        gamma: float = 2.0,
        mask_unseen: bool = False,
        **recipe: Any,
    ) -> None:
        super().__init__(num_classes, backbone, optimizer, input_size, **recipe)
        self.memory_loss = ClassMemoryLoss(num_classes, self.feature_shape, gamma, mask_unseen)

    def compute_loss(self, maps: Tensor, labels: Tensor) -> LossOutput:
        return self.memory_loss(maps, labels, self.matcher)


class QAConvGS(QAConvMethod):
    """QAConv-GS (CVPR 2022): a matching loss on the batch's ``[B, B]`` scores.

    :param loss: ``(scores [B, B], labels [B]) -> LossOutput``:
        :class:`~.losses.ScoreTripletLoss` (2.1) or :class:`~.losses.PairwiseMatchingLoss` (2.0).

    Under DDP every process holds a slice of each GS batch (whole classes); the feature maps
    are gathered with gradients so that the loss, the hard-example mining and the matcher's BN
    statistics cover the whole batch, as on one device.
    Other parameters: :class:`QAConvMethod`.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: nn.Module,
        optimizer: Callable[..., Optimizer],
        input_size: Sequence[int],
        loss: nn.Module,
        **recipe: Any,
    ) -> None:
        super().__init__(num_classes, backbone, optimizer, input_size, **recipe)
        self.loss = loss

    def compute_loss(self, maps: Tensor, labels: Tensor) -> LossOutput:
        if world_size() > 1:
            # Differentiable gather: its backward sums every process's gradient of the (equal)
            # losses into the local slice, so DDP's gradient average gives the full gradient.
            maps = torch.cat(dist_nn.all_gather(maps.contiguous()))
            all_labels = [torch.empty_like(labels) for _ in range(world_size())]
            dist.all_gather(all_labels, labels.contiguous())
            labels = torch.cat(all_labels)
        return self.loss(self.matcher(maps, maps), labels)
