"""The BoT baseline ("Bag of Tricks", Luo et al. 2019): the reference every method is compared with.

ResNet with last stride 1, pooling, BNNeck; cross-entropy with label smoothing on the BNNeck
output's logits, batch-hard triplet on the pre-BN feature; Adam with warm-up and step decay.
Retrieval uses the post-BN feature with cosine distance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics.classification import MulticlassAccuracy

from reidgen.eval.features import Features
from reidgen.losses import BatchHardTripletLoss, CrossEntropyLabelSmooth
from reidgen.methods.base import ReIDMethod
from reidgen.models import BNNeckHead
from reidgen.models.heads import HeadOutput


class Baseline(ReIDMethod):
    """BoT baseline.

    :param backbone: feature-map network with ``out_channels`` ([B, 3, H, W] -> [B, C, h, w]).
    :param pooling: [B, C, h, w] -> [B, C].
    :param optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``).
    :param scheduler: ``optimizer -> LRScheduler`` stepped per epoch, or None.
    :param neck_feat: retrieval feature: ``"after"`` the BNNeck (BoT) or ``"before"``.
    :param settings: passed to :class:`~reidgen.methods.base.ReIDMethod`.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: nn.Module,
        pooling: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[[Optimizer], LRScheduler] | None = None,
        label_smoothing: float = 0.1,
        triplet_margin: float | None = 0.3,
        id_weight: float = 1.0,
        triplet_weight: float = 1.0,
        neck_feat: str = "after",
        **settings: Any,
    ) -> None:
        super().__init__(num_classes, **settings)
        if neck_feat not in ("after", "before"):
            raise ValueError(f"neck_feat must be 'after' or 'before', got {neck_feat!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.head = BNNeckHead(backbone.out_channels, num_classes)
        self.id_loss = CrossEntropyLabelSmooth(label_smoothing)
        self.triplet_loss = BatchHardTripletLoss(triplet_margin)
        self.id_weight = id_weight
        self.triplet_weight = triplet_weight
        self.neck_feat = neck_feat
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, images: Tensor) -> HeadOutput:
        """[B, 3, H, W] -> features, BN features [B, C] and logits [B, num_classes]."""
        return self.head(self.pooling(self.backbone(images)))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        output = self(batch["image"])
        id_loss = self.id_loss(output.logits, batch["pid"])
        triplet_loss = self.triplet_loss(output.features, batch["pid"])
        loss = self.id_weight * id_loss + self.triplet_weight * triplet_loss
        self.log_training_metric(
            "train/accuracy", self.train_accuracy, output.logits.detach(), batch["pid"]
        )
        self.log_dict(
            {
                "train/loss": loss,
                "train/id_loss": id_loss,
                "train/triplet_loss": triplet_loss,
            },
            on_step=True,
            on_epoch=True,
            prog_bar=False,
        )
        return loss

    def extract(self, images: Tensor) -> Features:
        """The embedding ``[B, C]`` after (or before) the BNNeck."""
        output = self(images)
        return Features.embedding(
            output.bn_features if self.neck_feat == "after" else output.features
        )

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        return self.with_epoch_scheduler(optimizer, self.scheduler_factory)
