"""DomainMix (Wang, Liao, Zhao, Kang, Shao; BMVC 2021): one model from labelled synthetic people
and clustered unlabelled real ones, tested on domains it never saw.

Before every epoch the unlabelled source is clustered with the current model
(:class:`~reidgen.clustering.pseudo_labels.PseudoLabeller`: Jaccard distance, DBSCAN, the
reliability criteria and the size filter); its reliable clusters join the labelled identities as
classes ``num_classes + c``, and their classifier rows restart from the clusters' normalised mean
features. Training has two phases (``docs/methods/domainmix.md``, what reidgen implements and
every deviation):

* A, epochs ``< adversarial_from_epoch``: ``id_weight`` x ID loss + soft-margin triplet;
* B, from then on: a domain discriminator steps once every ``discriminator_every`` batches on the
  domain loss; the other batches step the model on ID loss (weight ``adversarial_id_weight``) +
  triplet + the domain balance loss, which pushes the discriminator's prediction to 50/50. Both
  optimizers start afresh every phase-B epoch at ``adversarial_lr``, as the official code does.

ID and domain logits are divided by ``temperature`` (2) before their softmax; the balance loss
uses the plain softmax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from reidgen.clustering.history import EpochLabels
from reidgen.clustering.pseudo_labels import PseudoLabeller, PseudoLabels, true_identity_labels
from reidgen.distributed import world
from reidgen.eval.features import Features
from reidgen.losses import BatchHardTripletLoss, CrossEntropyLabelSmooth, DomainBalanceLoss
from reidgen.methods.base import ReIDMethod
from reidgen.models import BNNeckHead
from reidgen.models.heads import DomainDiscriminator, HeadOutput

if TYPE_CHECKING:
    from reidgen.data.training_set import TrainingSet


STATE_KEY = "domainmix"


class DomainMix(ReIDMethod):
    """DomainMix.

    :param backbone: feature-map network with ``out_channels`` ([B, 3, H, W] -> [B, C, h, w]).
    :param pooling: [B, C, h, w] -> [B, C].
    :param optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``), used for the model and,
        from phase B on, for the discriminator.
    :param scheduler: ``optimizer -> LRScheduler`` of the model's optimizer, stepped after every
        phase-A epoch; None = constant.
    :param labeller: the clustering of the unlabelled source, called before every epoch.
    :param cluster_from_epoch: the first epoch that clusters the unlabelled source; the epochs
        before it train on the labelled sources alone. Official 0 (an ImageNet-initialised model
        groups images from the start); a backbone trained from scratch has nothing to cluster
        with at first (docs/methods/domainmix.md).
    :param adversarial_from_epoch: the first epoch of phase B (official: 30 of 60).
    :param adversarial_lr: the constant learning rate of phase B (official: 3.5e-6, the phase-A
        rate times the warm-up factor 0.01 of the schedulers the official code re-creates).
    :param discriminator_every: phase B steps the discriminator on every n-th batch, the model
        on the others (official 10: D:G = 1:9).
    :param id_weight: the ID loss weight in phase A (official 10).
    :param adversarial_id_weight: the ID loss weight in phase B (official 1).
    :param balance_weight: the domain balance loss weight (official 1).
    :param temperature: ID and domain logits are divided by it (official 2).
    :param label_smoothing: of the ID loss.
    :param triplet_margin: None = soft margin (official), else a hinge margin.
    :param domain_label_ge: the domain label of an image is "real" iff its label ``>=
        num_classes`` (True); the official code's ``>``, which calls the first real cluster
        synthetic, with False.
    :param match_row_norm: scale the re-initialised cluster rows to the mean norm of the
        labelled identities' rows (True), or leave them unit-norm as the official code does
        (False). Unit rows much longer than the learned ones turn every cluster into a strong
        attractor for all images (docs/methods/domainmix.md, "Deviations").
    :param oracle_labels: a diagnostic, not DomainMix: train on the unlabelled source's true
        identities (clusters of at least ``labeller.min_cluster_size`` images) instead of its
        clusters, to measure what the pseudo labels' errors cost. Needs a source with identities.
    :param settings: passed to :class:`~reidgen.methods.base.ReIDMethod`; its
        ``num_unlabelled_images`` sizes the classifier: one row per labelled identity and one
        per possible cluster, ``num_unlabelled_images // labeller.min_cluster_size``.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: nn.Module,
        pooling: nn.Module,
        optimizer: Callable[..., Optimizer],
        labeller: PseudoLabeller,
        scheduler: Callable[[Optimizer], LRScheduler] | None = None,
        cluster_from_epoch: int = 0,
        adversarial_from_epoch: int = 30,
        adversarial_lr: float = 3.5e-6,
        discriminator_every: int = 10,
        id_weight: float = 10.0,
        adversarial_id_weight: float = 1.0,
        balance_weight: float = 1.0,
        temperature: float = 2.0,
        label_smoothing: float = 0.1,
        triplet_margin: float | None = None,
        domain_label_ge: bool = True,
        match_row_norm: bool = True,
        oracle_labels: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__(num_classes, **settings)
        if discriminator_every < 2:
            raise ValueError(
                f"discriminator_every must be >= 2 (one discriminator step per that many "
                f"batches, the model steps on the others), got {discriminator_every}"
            )
        self.automatic_optimization = False
        self.backbone = backbone
        self.pooling = pooling
        self.labeller = labeller
        self.capacity = self.num_unlabelled_images // max(1, labeller.min_cluster_size)
        self.head = BNNeckHead(backbone.out_channels, num_classes + self.capacity)
        self.discriminator = DomainDiscriminator(backbone.out_channels)
        self.id_loss = CrossEntropyLabelSmooth(label_smoothing, temperature=temperature)
        self.triplet_loss = BatchHardTripletLoss(triplet_margin)
        self.balance_loss = DomainBalanceLoss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.cluster_from_epoch = cluster_from_epoch
        self.adversarial_from_epoch = adversarial_from_epoch
        self.adversarial_lr = adversarial_lr
        self.discriminator_every = discriminator_every
        self.id_weight = id_weight
        self.adversarial_id_weight = adversarial_id_weight
        self.balance_weight = balance_weight
        self.temperature = temperature
        self.domain_label_ge = domain_label_ge
        self.match_row_norm = match_row_norm
        self.oracle_labels = oracle_labels
        # Classes of the current epoch: the labelled identities and this epoch's clusters.
        self.active_classes = num_classes
        # The phase-B epoch whose fresh optimizers were made, so a resumed epoch keeps its own.
        self.optimizers_reset_for: int | None = None
        self.history: list[EpochLabels] = []

    # ------------------------------------------------------------------ model
    def forward(self, images: Tensor) -> HeadOutput:
        """[B, 3, H, W] -> features, BN features [B, C] and logits [B, all classifier rows]."""
        return self.head(self.pooling(self.backbone(images)))

    def extract(self, images: Tensor) -> Features:
        """The BN feature ``[B, C]`` (official: its L2-normalised form; cosine ranks alike)."""
        return Features.embedding(self(images).bn_features)

    def in_phase_b(self) -> bool:
        return self.current_epoch >= self.adversarial_from_epoch

    def domain_targets(self, labels: Tensor) -> Tensor:
        """``[B]`` batch labels -> ``[B]`` domain targets: 0 synthetic (labelled), 1 real."""
        real = labels >= self.num_classes if self.domain_label_ge else labels > self.num_classes
        return real.long()

    # ------------------------------------------------------------------ pseudo labels
    def assign_training_labels(
        self, epoch: int, training_set: TrainingSet
    ) -> Mapping[str, Sequence[int]] | None:
        """Clusters the unlabelled source with the current model, re-initialises the clusters'
        classifier rows and returns the reliable clusters as its labels (rank 0's clustering;
        every process gets the same labels and rows). None before ``cluster_from_epoch``."""
        unlabelled = [name for name in training_set.names if name not in training_set.labelled]
        if len(unlabelled) != 1 or not training_set.labelled:
            raise ValueError(
                "DomainMix trains on labelled sources plus exactly one unlabelled source "
                f"(data.unlabelled); got labelled {list(training_set.labelled)} and unlabelled "
                f"{unlabelled}"
            )
        if epoch < self.cluster_from_epoch:
            self.active_classes = training_set.num_classes
            return None
        name = unlabelled[0]
        samples = training_set.samples(name)
        if len(samples) // max(1, self.labeller.min_cluster_size) > self.capacity:
            raise ValueError(
                f"unlabelled source {name!r} has {len(samples)} images but the classifier was "
                f"built for {self.num_unlabelled_images}; build the method with the data it "
                "trains on"
            )
        true_ids = np.array([s.pid for s in samples])
        if self.oracle_labels and (true_ids < 0).any():
            raise ValueError(
                f"method.oracle_labels needs the true identities of {name!r}, which has none"
            )
        features = self.source_embeddings(
            training_set, name, lambda images: self(images).bn_features
        )
        world_count, rank = world()
        shared: list[Any] = [None]
        if rank == 0:
            labels = (
                true_identity_labels(true_ids, self.labeller.min_cluster_size)
                if self.oracle_labels
                else self.labeller(features)
            )
            shared = [(labels, self.labeller.state_dict())]
        if world_count > 1:
            dist.broadcast_object_list(shared, src=0)
        labels, labeller_state = shared[0]
        self.labeller.load_state_dict(labeller_state)
        if labels.num_clusters == 0:
            raise ValueError(
                f"epoch {epoch}: no cluster of unlabelled source {name!r} ({len(samples)} "
                f"images) survived the filters (eps {labels.eps:.3f}, min_samples "
                f"{self.labeller.min_samples}, reliability, clusters of at least "
                f"{self.labeller.min_cluster_size} images): the features do not group its "
                "images yet. Start from a pretrained backbone, or relax method.labeller "
                "(eps, min_cluster_size)"
            )
        self.reset_cluster_rows(features, labels)
        self.active_classes = training_set.num_classes + labels.num_clusters
        record = EpochLabels.of(epoch, labels, true_ids if (true_ids >= 0).all() else None)
        self.history = self.record_pseudo_labels(self.history, record)
        return {name: labels.labels}

    @torch.no_grad()
    def reset_cluster_rows(self, features: Tensor, labels: PseudoLabels) -> None:
        """Classifier rows ``num_classes + c`` := the L2-normalised mean of cluster ``c``'s
        features ``[N, C]`` (scaled to the labelled rows' mean norm with ``match_row_norm``);
        the labelled identities' rows keep what they learned."""
        kept = torch.from_numpy(labels.labels >= 0)
        clusters = torch.from_numpy(labels.labels[kept.numpy()])
        sums = torch.zeros(labels.num_clusters, features.shape[1], dtype=torch.float64)
        sums.index_add_(0, clusters, features[kept].double())
        weight = self.head.classifier.weight
        centres = F.normalize(sums, dim=1).to(weight)
        if self.match_row_norm:
            centres *= weight[: self.num_classes].norm(dim=1).mean()
        start = self.num_classes
        weight[start : start + labels.num_clusters] = centres

    # ------------------------------------------------------------------ training
    def configure_optimizers(self) -> Any:
        model = [p for n, p in self.named_parameters() if not n.startswith("discriminator.")]
        model_optimizer = self.optimizer_factory(model)
        discriminator_optimizer = self.optimizer_factory(self.discriminator.parameters())
        if self.scheduler_factory is None:
            return [model_optimizer, discriminator_optimizer]
        return [model_optimizer, discriminator_optimizer], [self.scheduler_factory(model_optimizer)]

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        if epoch < self.adversarial_from_epoch or self.optimizers_reset_for == epoch:
            return
        # Phase B: both optimizers as if new, at the constant rate (moments and steps cleared).
        for optimizer in self.trainer.optimizers:
            optimizer.state.clear()
            for group in optimizer.param_groups:
                group["lr"] = self.adversarial_lr
        self.optimizers_reset_for = epoch

    def _step(self, optimizer: Any, loss: Tensor) -> None:
        for each in self.optimizers():
            each.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        model_optimizer, discriminator_optimizer = self.optimizers()
        labels = batch["pid"]
        output = self(batch["image"])
        if self.in_phase_b() and batch_idx % self.discriminator_every == 0:
            domain_logits = self.discriminator(output.bn_features)
            targets = self.domain_targets(labels)
            loss = F.cross_entropy(domain_logits.float() / self.temperature, targets)
            self._step(discriminator_optimizer, loss + _untrained(output.logits))
            accuracy = (domain_logits.argmax(1) == targets).float().mean()
            self.log_dict(
                {"train/domain_loss": loss, "train/domain_accuracy": accuracy},
                on_step=True,
                on_epoch=True,
            )
            return loss.detach()
        id_loss = self.id_loss(output.logits[:, : self.active_classes], labels)
        triplet_loss = self.triplet_loss(output.features, labels)
        logged = {"train/id_loss": id_loss, "train/triplet_loss": triplet_loss}
        if self.in_phase_b():
            balance_loss = self.balance_loss(self.discriminator(output.bn_features))
            logged["train/balance_loss"] = balance_loss
            loss = self.adversarial_id_weight * id_loss + self.balance_weight * balance_loss
            extra = torch.zeros((), device=loss.device)
        else:
            loss = self.id_weight * id_loss
            # The official forward runs the discriminator in phase A too (its BN statistics
            # follow the features); it learns nothing from it.
            extra = _untrained(self.discriminator(output.bn_features.detach()))
        loss = loss + triplet_loss
        self._step(model_optimizer, loss + extra)
        self.log_dict({"train/loss": loss, **logged}, on_step=True, on_epoch=True)
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        scheduler = self.lr_schedulers()
        if scheduler is not None and not self.in_phase_b():
            scheduler.step()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[STATE_KEY] = {
            "labeller": self.labeller.state_dict(),
            "active_classes": self.active_classes,
            "optimizers_reset_for": self.optimizers_reset_for,
            "history": [asdict(record) for record in self.history],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(STATE_KEY)
        if state is None:
            return
        self.labeller.load_state_dict(state["labeller"])
        self.active_classes = int(state["active_classes"])
        self.optimizers_reset_for = state["optimizers_reset_for"]
        self.history = [EpochLabels(**record) for record in state["history"]]


def _untrained(output: Tensor) -> Tensor:
    """0 attached to ``output``'s graph: DDP all-reduces every parameter's gradient at each
    backward and, without ``find_unused_parameters``, fails on parameters outside the graph. The
    parts a step does not train (the discriminator in phase A, the classifier in a discriminator
    step) join it with zero gradients; their optimizer does not step."""
    return output.sum() * 0.0
