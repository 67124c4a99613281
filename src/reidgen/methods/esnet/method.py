"""ES-Net, the Erasing-Salient Net (Shen et al., IEEE TIP 2021), as BDB with salient erasing.

Only the abstract is public (no code), so the design follows the recommended reading in
``docs/methods/esnet.md``: a shared backbone, a global branch (pooling + head) and an erasing
branch (an extra residual block, the keep-mask, P-pooling + head). In training, the global head
scores every position of the backbone map for each sample's class (detached, same forward pass),
and the most salient block of the erasing branch's map is zeroed, so that branch must learn from
the rest. Each branch has its own ID (label-smoothed CE) and batch-hard triplet loss. At test time
nothing is erased; the retrieval feature is the two branches' features, each L2-normalised,
concatenated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics.classification import MulticlassAccuracy
from torchvision.models.resnet import BasicBlock, Bottleneck

from reidgen.eval.features import Features
from reidgen.losses import BatchHardTripletLoss, CrossEntropyLabelSmooth
from reidgen.methods.base import ReIDMethod
from reidgen.methods.esnet.erasing import FeatureErasing, SaliencyKind, saliency_map
from reidgen.models import BNNeckHead, LinearHead
from reidgen.models.heads import HeadOutput

InferenceFeature = Literal["concat", "global", "erase"]
INFERENCE_FEATURES = ("concat", "global", "erase")


def residual_block(channels: int, bottleneck: bool) -> nn.Module:
    """A fresh residual block keeping ``[B, channels, h, w]``: BDB's extra Bottleneck (ResNet-50,
    ``channels / 4`` wide inside) or a BasicBlock for ResNet-18/34."""
    if bottleneck:
        return Bottleneck(channels, channels // Bottleneck.expansion)
    return BasicBlock(channels, channels)


class ESNet(ReIDMethod):
    """ES-Net: global branch + salient-erasing branch on one backbone.

    :param backbone: feature-map network with ``out_channels`` and ``depth``
        ([B, 3, H, W] -> [B, C, h, w]).
    :param global_pooling: the global branch's pooling, [B, C, h, w] -> [B, C].
    :param erase_pooling: the erasing branch's pooling (P-pooling: ``GeMPool`` with a learnable
        exponent; ``MixedPool``, ``GlobalMaxPool`` or ``GlobalAvgPool`` for the ablations).
    :param erasing: builds the keep-mask from the saliency map (:class:`FeatureErasing`).
    :param optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``); takes parameter groups.
    :param scheduler: ``optimizer -> LRScheduler`` stepped per epoch, or None.
    :param saliency: ``"confidence"`` (softmax probability of the true class, default) or
        ``"cam"`` (class activation map).
    :param erase_branch: False trains the global branch alone (the ablation's baseline).
    :param bnneck: BNNeck heads (classifier on the BN feature, triplet on the pre-BN one); False:
        BDB's heads, one feature for both losses.
    :param neck_feat: with ``bnneck``, the retrieval feature of each branch: ``"after"`` or
        ``"before"`` the BN.
    :param inference_feature: ``"concat"`` (both branches), ``"global"`` or ``"erase"`` alone.
    :param pooling_lr_scale: the learning rate of the pooling parameters (P-pooling's exponent)
        relative to the rest: an exponent near 3 must be able to move by whole units within a
        short schedule, which Adam's per-step size of ``lr`` would not allow.
    :param settings: passed to :class:`~reidgen.methods.base.ReIDMethod`.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: nn.Module,
        global_pooling: nn.Module,
        erase_pooling: nn.Module,
        erasing: FeatureErasing,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[[Optimizer], LRScheduler] | None = None,
        saliency: SaliencyKind = "confidence",
        erase_branch: bool = True,
        bnneck: bool = True,
        neck_feat: str = "after",
        inference_feature: InferenceFeature = "concat",
        label_smoothing: float = 0.1,
        triplet_margin: float | None = 0.3,
        id_weight: float = 1.0,
        triplet_weight: float = 1.0,
        pooling_lr_scale: float = 1.0,
        **settings: Any,
    ) -> None:
        super().__init__(num_classes, **settings)
        if saliency not in ("confidence", "cam"):
            raise ValueError(f"saliency must be 'confidence' or 'cam', got {saliency!r}")
        if neck_feat not in ("after", "before"):
            raise ValueError(f"neck_feat must be 'after' or 'before', got {neck_feat!r}")
        if inference_feature not in INFERENCE_FEATURES:
            raise ValueError(
                f"inference_feature must be one of {INFERENCE_FEATURES}, got {inference_feature!r}"
            )
        if not erase_branch and inference_feature != "global":
            raise ValueError(
                "erase_branch=false trains the global branch alone: set inference_feature=global"
            )
        channels = backbone.out_channels
        self.backbone = backbone
        self.global_pooling = global_pooling
        self.global_head = self._head(channels, num_classes, bnneck)
        self.erase_branch = erase_branch
        if erase_branch:
            self.erase_block = residual_block(channels, getattr(backbone, "depth", 18) >= 50)
            self.erase_pooling = erase_pooling
            self.erase_head = self._head(channels, num_classes, bnneck)
            self.erasing = erasing
        self.saliency = saliency
        self.neck_feat = neck_feat
        self.inference_feature = inference_feature
        self.id_loss = CrossEntropyLabelSmooth(label_smoothing)
        self.triplet_loss = BatchHardTripletLoss(triplet_margin)
        self.id_weight = id_weight
        self.triplet_weight = triplet_weight
        self.pooling_lr_scale = pooling_lr_scale
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.global_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.erase_accuracy = MulticlassAccuracy(num_classes, average="micro")

    @staticmethod
    def _head(channels: int, num_classes: int, bnneck: bool) -> nn.Module:
        return BNNeckHead(channels, num_classes) if bnneck else LinearHead(channels, num_classes)

    # ------------------------------------------------------------------- forward
    def global_branch(self, feature_map: Tensor) -> HeadOutput:
        """``[B, C, h, w]`` backbone map -> the global branch's features and logits."""
        return self.global_head(self.global_pooling(feature_map))

    def erase_branch_map(self, feature_map: Tensor) -> Tensor:
        """``[B, C, h, w]`` backbone map -> the erasing branch's map before the mask."""
        return self.erase_block(feature_map)

    def erase_head_output(self, erase_map: Tensor, keep: Tensor | None = None) -> HeadOutput:
        """The erasing branch's features and logits from its map, masked by ``keep``
        ``[B, 1, h, w]`` when given."""
        if keep is not None:
            erase_map = erase_map * keep.to(erase_map.dtype)
        return self.erase_head(self.erase_pooling(erase_map))

    def saliency_and_mask(
        self, images: Tensor, labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """For pictures: the saliency map ``[B, h, w]`` of ``images`` for ``labels`` (None: each
        image's top class) and the keep-mask ``[B, 1, h, w]`` training would use, whatever mode
        the method is in."""
        with torch.no_grad():
            feature_map = self.backbone(images)
            saliency = saliency_map(feature_map, self.global_head, labels, self.saliency)
            was_training = self.erasing.training
            self.erasing.train()
            try:
                keep = self.erasing(saliency)
            finally:
                self.erasing.train(was_training)
        return saliency, keep

    # ------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        pids = batch["pid"]
        feature_map = self.backbone(batch["image"])
        global_output = self.global_branch(feature_map)
        id_loss = self.id_loss(global_output.logits, pids)
        triplet_loss = self.triplet_loss(global_output.features, pids)
        logs = {"train/global_id_loss": id_loss, "train/global_triplet_loss": triplet_loss}
        self.log_training_metric(
            "train/global_accuracy", self.global_accuracy, global_output.logits.detach(), pids
        )
        if self.erase_branch:
            saliency = saliency_map(feature_map, self.global_head, pids, self.saliency)
            keep = self.erasing(saliency)
            erase_output = self.erase_head_output(self.erase_branch_map(feature_map), keep)
            erase_id_loss = self.id_loss(erase_output.logits, pids)
            erase_triplet_loss = self.triplet_loss(erase_output.features, pids)
            id_loss = id_loss + erase_id_loss
            triplet_loss = triplet_loss + erase_triplet_loss
            logs |= {
                "train/erase_id_loss": erase_id_loss,
                "train/erase_triplet_loss": erase_triplet_loss,
                "train/erased_fraction": 1 - keep.mean(),
                **self._pooling_values(),
            }
            self.log_training_metric(
                "train/erase_accuracy", self.erase_accuracy, erase_output.logits.detach(), pids
            )
        loss = self.id_weight * id_loss + self.triplet_weight * triplet_loss
        logs |= {"train/loss": loss, "train/id_loss": id_loss, "train/triplet_loss": triplet_loss}
        self.log_dict(logs, on_step=True, on_epoch=True, prog_bar=False)
        return loss

    def _pooling_values(self) -> dict[str, Tensor]:
        """What the erasing branch's pooling has learned: GeM's mean exponent, the mix's alpha."""
        pooling = self.erase_pooling
        if hasattr(pooling, "effective_p"):
            return {"train/pooling_p": pooling.effective_p().detach().mean()}
        if hasattr(pooling, "alpha"):
            return {"train/pooling_alpha": pooling.alpha.detach().mean()}
        return {}

    # ------------------------------------------------------------------- inference
    def _retrieval(self, output: HeadOutput) -> Tensor:
        return output.bn_features if self.neck_feat == "after" else output.features

    def extract(self, images: Tensor) -> Features:
        """The inference feature ``[B, D]``: the chosen branches' features (never erased), each
        L2-normalised, concatenated (``D = 2C`` for ``concat``)."""
        feature_map = self.backbone(images)
        parts = []
        if self.inference_feature in ("concat", "global"):
            parts.append(self._retrieval(self.global_branch(feature_map)))
        if self.inference_feature in ("concat", "erase"):
            erase_output = self.erase_head_output(self.erase_branch_map(feature_map))
            parts.append(self._retrieval(erase_output))
        return Features.embedding(torch.cat([F.normalize(p.float(), dim=1) for p in parts], 1))

    def configure_optimizers(self) -> Any:
        pooling = [p for name, p in self.named_parameters() if "pooling." in name]
        pooling_ids = {id(p) for p in pooling}
        optimizer = self.optimizer_factory(
            [p for p in self.parameters() if id(p) not in pooling_ids]
        )
        if pooling:
            lr = optimizer.defaults["lr"] * self.pooling_lr_scale
            optimizer.add_param_group({"params": pooling, "lr": lr})
        return self.with_epoch_scheduler(optimizer, self.scheduler_factory)
