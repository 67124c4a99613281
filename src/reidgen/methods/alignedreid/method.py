"""AlignedReID (Zhang et al. 2017) with mutual learning, as one LightningModule.

Each model (``docs/methods/alignedreid.md`` §1-2) is a backbone with two branches on its feature
map ``[B, C, h, w]``: the *global* feature (average over the map, ``[B, C]``) and the *local*
features, one per row (stripe) of the map: the row pooled over its width, reduced to ``c``
channels by a 1x1 conv + BN + ReLU, ``[B, h, c]``, so the number of stripes follows the map height.

Losses per model: batch-hard triplet on the global Euclidean distance; the *same* hard pairs
(mined on the global distance) scored with the local shortest-path distance in a second triplet;
cross-entropy on a classifier of the global feature. With ``num_models >= 2`` (mutual learning)
the models see the same batch and each adds a KL term towards every peer's class probabilities and
an MSE between its global distance matrix and the peer's; peers' outputs are detached, so no
gradient reaches a peer. One optimizer holds all models: since every loss term of model ``i``
depends only on model ``i``'s weights (the peers' tensors are constants), one step on the sum of
the models' losses updates each model exactly as its own optimizer step on its own loss would
(Adam and SGD keep per-parameter state).

Test time uses model 0: the global Euclidean distance (the paper keeps only the global feature),
or global + local (``test_distance="global_local"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics.classification import MulticlassAccuracy

from reidgen.eval import DistanceFn
from reidgen.eval.features import EMBEDDING, Features
from reidgen.eval.rerank import FeatureRows, RowsFn
from reidgen.losses import (
    CrossEntropyLabelSmooth,
    hard_example_mining,
    pairwise_euclidean,
    triplet_ranking_loss,
)
from reidgen.methods.alignedreid.local_distance import local_distance_fn, paired_local_distance
from reidgen.methods.base import ReIDMethod

TEST_DISTANCES = ("global", "global_local")
LOCAL_POOLS = ("mean", "max")


@dataclass
class AlignedOutput:
    """``global_features [B, C]``, ``local_features [B, h, c]``, ``logits [B, num_classes]``."""

    global_features: Tensor
    local_features: Tensor
    logits: Tensor


class AlignedReIDNet(nn.Module):
    """One AlignedReID model: backbone, global and local branches, identity classifier.

    :param backbone: ``[B, 3, H, W] -> [B, C, h, w]`` with ``out_channels``.
    :param local_channels: ``c`` of each stripe feature (128 in both official codebases).
    :param local_pool: how a row is pooled over its width: ``"mean"`` (the reproduction) or
        ``"max"`` (the co-author: "local feature: max").
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        local_channels: int = 128,
        local_pool: str = "mean",
    ) -> None:
        super().__init__()
        if local_pool not in LOCAL_POOLS:
            raise ValueError(f"local_pool must be one of {LOCAL_POOLS}, got {local_pool!r}")
        self.backbone = backbone
        self.local_pool = local_pool
        channels = backbone.out_channels
        self.local_reduction = nn.Sequential(
            nn.Conv2d(channels, local_channels, kernel_size=1),
            nn.BatchNorm2d(local_channels),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(channels, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, images: Tensor) -> AlignedOutput:
        maps = self.backbone(images)  # [B, C, h, w]
        global_features = maps.mean(dim=(2, 3))
        rows = maps.mean(dim=3, keepdim=True) if self.local_pool == "mean" else maps.amax(3, True)
        local_features = self.local_reduction(rows).squeeze(3).transpose(1, 2)  # [B, h, c]
        return AlignedOutput(global_features, local_features, self.classifier(global_features))


class AlignedReID(ReIDMethod):
    """AlignedReID, optionally with mutual learning between ``num_models`` models.

    :param backbone: a backbone config; every model gets its own copy (``_partial_`` factory).
    :param optimizer: ``params -> Optimizer`` (Hydra ``_partial_``).
    :param scheduler: ``optimizer -> LRScheduler`` stepped per epoch, or None.
    :param num_models: 1 (plain AlignedReID) or >= 2 (mutual learning).
    :param triplet_margin: margin of both triplet losses (0.3).
    :param global_weight, local_weight, id_weight: weights of the global triplet, local triplet
        and identity losses.
    :param probability_mutual_weight, distance_mutual_weight: weights of the KL and the
        global-distance MSE mutual losses (used when ``num_models >= 2``).
    :param normalize_features: L2-normalise global and stripe features before distances.
    :param test_distance: ``"global"`` or ``"global_local"`` (global + local distance).
    :param settings: passed to :class:`~reidgen.methods.base.ReIDMethod`.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: Callable[[], nn.Module],
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[[Optimizer], LRScheduler] | None = None,
        num_models: int = 1,
        local_channels: int = 128,
        local_pool: str = "mean",
        triplet_margin: float = 0.3,
        global_weight: float = 1.0,
        local_weight: float = 1.0,
        id_weight: float = 1.0,
        label_smoothing: float = 0.0,
        probability_mutual_weight: float = 1.0,
        distance_mutual_weight: float = 1.0,
        normalize_features: bool = False,
        test_distance: str = "global",
        **settings: Any,
    ) -> None:
        super().__init__(num_classes, **settings)
        if num_models < 1:
            raise ValueError(f"num_models must be >= 1, got {num_models}")
        if test_distance not in TEST_DISTANCES:
            raise ValueError(
                f"test_distance must be one of {TEST_DISTANCES}, got {test_distance!r}"
            )
        self.models = nn.ModuleList(
            AlignedReIDNet(backbone(), num_classes, local_channels, local_pool)
            for _ in range(num_models)
        )
        self.id_loss = CrossEntropyLabelSmooth(label_smoothing)
        self.triplet_margin = triplet_margin
        self.global_weight = global_weight
        self.local_weight = local_weight
        self.id_weight = id_weight
        self.probability_mutual_weight = probability_mutual_weight
        self.distance_mutual_weight = distance_mutual_weight
        self.normalize_features = normalize_features
        self.test_distance = test_distance
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.train_accuracy = nn.ModuleList(
            MulticlassAccuracy(num_classes, average="micro") for _ in range(num_models)
        )

    # ------------------------------------------------------------------ features
    def _normalized(self, output: AlignedOutput) -> tuple[Tensor, Tensor]:
        if not self.normalize_features:
            return output.global_features, output.local_features
        return F.normalize(output.global_features, dim=1), F.normalize(output.local_features, dim=2)

    def extract(self, images: Tensor) -> Features:
        """Model 0's features: the global ``embedding`` ``[B, C]``, plus the ``stripes``
        ``[B, h, c]`` for ``test_distance="global_local"``."""
        global_features, local_features = self._normalized(self.models[0](images))
        if self.test_distance == "global":
            return Features.embedding(global_features.float())
        return Features({EMBEDDING: global_features.float(), "stripes": local_features.float()})

    def stripe_features(self, images: Tensor) -> Tensor:
        """Model 0's stripe features ``[B, h, c]``, normalised as its local distance sees them,
        whatever the test distance (the alignment pictures need them under ``"global"`` too)."""
        return self._normalized(self.models[0](images))[1]

    def distance(self, query_features: Features, gallery_features: Features) -> DistanceFn:
        """Plain Euclidean distance of the global features (+ the local shortest-path distance)."""
        query_global, gallery_global = query_features[EMBEDDING], gallery_features[EMBEDDING]
        if self.test_distance == "global":
            return lambda start, stop: pairwise_euclidean(query_global[start:stop], gallery_global)
        local = local_distance_fn(query_features["stripes"], gallery_features["stripes"])
        return lambda start, stop: (
            pairwise_euclidean(query_global[start:stop], gallery_global) + local(start, stop)
        )

    def rerank_rows(self, features: Features, num_query: int) -> RowsFn:
        # The distance is already plain (not squared), as re-ranking expects; the global one alone
        # is read from the features in symmetric blocks.
        if self.test_distance == "global":
            return FeatureRows(features[EMBEDDING])
        return self.distance(features, features)

    # ------------------------------------------------------------------ training
    def _model_losses(
        self, output: AlignedOutput, labels: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Single-model losses and its global distance matrix ``[B, B]``."""
        global_features, local_features = self._normalized(output)
        global_distance = pairwise_euclidean(global_features, global_features)
        dist_ap, dist_an, pos_index, neg_index = hard_example_mining(global_distance, labels)
        losses = {
            "global_triplet": triplet_ranking_loss(dist_ap, dist_an, self.triplet_margin),
            "id": self.id_loss(output.logits, labels),
        }
        if self.local_weight > 0:
            # The hard pairs of the global distance, scored with the local distance; anchors
            # without a positive or a negative keep the -inf / +inf marks and are left out.
            local_ap = paired_local_distance(local_features, local_features[pos_index])
            local_an = paired_local_distance(local_features, local_features[neg_index])
            local_ap = torch.where(torch.isfinite(dist_ap), local_ap, dist_ap)
            local_an = torch.where(torch.isfinite(dist_an), local_an, dist_an)
            losses["local_triplet"] = triplet_ranking_loss(local_ap, local_an, self.triplet_margin)
        return losses, global_distance

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        labels = batch["pid"]
        outputs = [model(batch["image"]) for model in self.models]
        per_model = [self._model_losses(output, labels) for output in outputs]
        total = torch.zeros((), device=labels.device)
        logs: dict[str, Tensor] = {}
        peers = len(self.models) - 1
        for i, (output, (losses, distance)) in enumerate(zip(outputs, per_model, strict=True)):
            loss = (
                self.global_weight * losses["global_triplet"]
                + self.id_weight * losses["id"]
                + self.local_weight * losses.get("local_triplet", torch.zeros_like(total))
            )
            if peers:
                log_probs = F.log_softmax(output.logits.float(), dim=1)
                kl = (
                    sum(
                        F.kl_div(
                            log_probs,
                            F.softmax(other.logits.float(), dim=1).detach(),
                            reduction="batchmean",
                        )
                        for j, other in enumerate(outputs)
                        if j != i
                    )
                    / peers
                )
                metric = (
                    sum(
                        F.mse_loss(distance, other_distance.detach())
                        for j, (_, other_distance) in enumerate(per_model)
                        if j != i
                    )
                    / peers
                )
                losses = {**losses, "probability_mutual": kl, "distance_mutual": metric}
                loss = (
                    loss
                    + self.probability_mutual_weight * kl
                    + self.distance_mutual_weight * metric
                )
            total = total + loss
            prefix = "train/" if i == 0 else f"train/model{i}/"
            logs.update({f"{prefix}{name}": value for name, value in losses.items()})
            logs[f"{prefix}loss"] = loss
            self.log_training_metric(
                f"{prefix}accuracy", self.train_accuracy[i], output.logits.detach(), labels
            )
        self.log_dict(logs, on_step=True, on_epoch=True)
        return total

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        return self.with_epoch_scheduler(optimizer, self.scheduler_factory)
