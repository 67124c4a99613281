"""GCL (Chen et al., CVPR 2021) and GCL+ (TPAMI 2022): unsupervised re-ID that learns invariance
to views a generator draws (``docs/methods/gcl.md``: what reidgen implements and every
deviation).

The re-ID model is the identity encoder E_id: its 4-stripe code drives the generator's AdaIN
layers and its BN embedding is the retrieval feature. The generator re-draws each training image
from its own structure map (reconstruction) and from the same body turned to a new view; the
generated view is encoded again and drawn back in the original view (cycle). One run goes
through the official stages by epoch:

* epochs ``< warmup_epochs`` (stage 2): E_id frozen (eval mode, never stepped; gradients flow
  through it to the generator), the generator and the discriminator learn on every training image;
* later epochs (stage 3, joint): before each, the instance memory (initialised at the first joint
  epoch from E_id's embeddings) is clustered (Jaccard distance + DBSCAN) and outliers leave the
  epoch; E_id learns from the memory's InfoNCE loss on the generated views *and* from the GAN
  losses, and the memory takes the original images' features.

Stage 1, the initial encoder, is another run: ``encoder_checkpoint`` names its checkpoint (any
reidgen method with a ``backbone`` and a BN-neck ``head``, e.g. the baseline trained on studio).
With ``generate=False`` the method is the "memory loss on original images only" ablation: no
generator, only the original-cluster term. GCL+ (``mixup=True``) adds D-Mixup: two people's
identity codes mixed (``lambda ~ Beta(alpha, alpha)``, ``lambda >= 0.5``), decoded with the
anchor's structure, and trained with a prototype classifier on soft labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from reidgen.clustering.history import EpochLabels
from reidgen.clustering.pseudo_labels import PseudoLabeller
from reidgen.distributed import world
from reidgen.eval.features import Features
from reidgen.eval.ranking import evaluate_ranking
from reidgen.methods.base import ReIDMethod
from reidgen.methods.gcl.discriminator import (
    MultiScaleDiscriminator,
    discriminator_loss,
    generator_adversarial_loss,
)
from reidgen.methods.gcl.generator import NUM_PARTS, Generator, part_code
from reidgen.methods.gcl.memory import InstanceMemory
from reidgen.methods.gcl.structure import GrayscaleStructure, MeshStructure, SynthPersonStructure
from reidgen.models.backbones import unwrap_state_dict

if TYPE_CHECKING:
    from reidgen.data.training_set import TrainingSet

log = logging.getLogger(__name__)

STATE_KEY = "gcl"
# The torchvision ResNet trunk's top-level modules, as in reidgen's backbone and JVTC's ResNet.
_TRUNK = frozenset({"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"})
StructureProvider = SynthPersonStructure | MeshStructure | GrayscaleStructure


class GCL(ReIDMethod):
    """GCL / GCL+ on one unlabelled training source.

    :param backbone: E_id's feature-map network (``[B, 3, H, W] -> [B, C, h, w]``).
    :param structure: the structure provider (``structure`` config group).
    :param generator: ``code_dim -> Generator`` (a Hydra ``_partial_``).
    :param discriminator: the multi-scale discriminator.
    :param memory: ``(num_samples, num_features) -> InstanceMemory`` (a ``_partial_``).
    :param labeller: clusters the memory before every joint epoch (GCL: adaptive eps from rho;
        GCL+: eps 0.55).
    :param generator_optimizer, discriminator_optimizer, encoder_optimizer: ``params ->
        Optimizer`` (``_partial_``); official Adam 1e-4 (betas 0, 0.999), Adam 1e-4, SGD 3.5e-4.
    :param encoder_lr_steps: joint epochs after which E_id's learning rate is multiplied by
        ``encoder_lr_gamma`` (official: after 10); G and D keep theirs (the official schedulers
        never reach their milestone).
    :param warmup_epochs: stage-2 epochs (E_id frozen).
    :param encoder_checkpoint: the stage-1 encoder (a reidgen BoT checkpoint, or a raw state dict
        of JVTC's or MLC's ResNet-50 as the official code loads), or None to start from the
        backbone's own initialisation.
    :param embedding_dim: JVTC's head, a Linear ``C -> embedding_dim`` before the BN neck (512 for
        the official JVTC weights); None: the BN neck on the ``C`` pooled channels (BoT's, MLC's).
    :param generate: False = the memory loss on original images only (no generator).
    :param mixup: GCL+'s D-Mixup and prototype loss.
    :param mixup_alpha: Beta(alpha, alpha) of the mixing weight (official 0.6).
    :param reconstruction_weight, cycle_weight, code_weight, gan_weight, memory_weight,
        prototype_weight: loss weights (official 5, 5, 5, 1, 1; GCL+'s prototype weight is not in
        the release, 1 here).
    :param r1_weight: R1 penalty on real images (official 0.01).
    :param generation_trains_encoder: whether the generation losses (reconstruction, cycle, code,
        GAN) train E_id in joint epochs, as officially; False (an ablation): E_id learns from the
        memory (and prototype) losses only, the generator from every loss as before.
    :param picture_people: people of each epoch's first batch drawn in ``views/epoch_<N>.png``
        (:mod:`reidgen.viz.gcl_views`); 0 draws none.
    :param seed: seeds every random draw of a step (views, memory samples, mixing) together with
        the step number, so a resumed run draws what the uninterrupted one would.
    """

    # Its epoch state is not in the checkpoint: the stage's frozen parameters (set in
    # on_train_epoch_start), the true identities (set with the epoch's labels) and the views
    # gathered for the epoch's identity check and picture.
    resumes_mid_epoch = False

    def __init__(
        self,
        backbone: nn.Module,
        structure: StructureProvider,
        generator: Callable[..., Generator],
        discriminator: MultiScaleDiscriminator,
        memory: Callable[..., InstanceMemory],
        labeller: PseudoLabeller,
        generator_optimizer: Callable[..., Optimizer],
        discriminator_optimizer: Callable[..., Optimizer],
        encoder_optimizer: Callable[..., Optimizer],
        encoder_lr_steps: Sequence[int] = (10,),
        encoder_lr_gamma: float = 0.1,
        warmup_epochs: int = 1,
        encoder_checkpoint: str | None = None,
        embedding_dim: int | None = None,
        generate: bool = True,
        mixup: bool = False,
        mixup_alpha: float = 0.6,
        reconstruction_weight: float = 5.0,
        cycle_weight: float = 5.0,
        code_weight: float = 5.0,
        gan_weight: float = 1.0,
        memory_weight: float = 1.0,
        prototype_weight: float = 1.0,
        r1_weight: float = 0.01,
        generation_trains_encoder: bool = True,
        picture_people: int = 4,
        seed: int = 0,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        if not generate and (mixup or warmup_epochs):
            raise ValueError(
                "generate=false (memory loss on originals only) has no generator: it needs "
                f"mixup=false and warmup_epochs=0, got mixup={mixup}, "
                f"warmup_epochs={warmup_epochs}"
            )
        if self.num_unlabelled_images <= 0:
            raise ValueError(
                "GCL learns from one unlabelled training source (data.unlabelled), and the "
                "method was built without unlabelled images"
            )
        self.automatic_optimization = False
        self.backbone = backbone
        channels = backbone.out_channels
        # E_id's embedding: the BN neck of the initial encoder (BoT's, bias fixed at 0), after
        # JVTC's Linear C -> embedding_dim when the encoder starts from JVTC's weights.
        self.embedding = nn.Linear(channels, embedding_dim) if embedding_dim else None
        self.neck = nn.BatchNorm1d(embedding_dim or channels)
        self.neck.bias.requires_grad_(False)
        self.structure = structure
        self.generate = generate
        self.generator = generator(code_dim=channels * NUM_PARTS) if generate else None
        self.discriminator = discriminator if generate else None
        self.memory = memory(
            num_samples=self.num_unlabelled_images, num_features=embedding_dim or channels
        )
        self.register_buffer("memory_ready", torch.zeros((), dtype=torch.bool))
        self.labeller = labeller
        self.generator_optimizer_factory = generator_optimizer
        self.discriminator_optimizer_factory = discriminator_optimizer
        self.encoder_optimizer_factory = encoder_optimizer
        self.encoder_lr_steps = tuple(int(step) for step in encoder_lr_steps)
        self.encoder_lr_gamma = encoder_lr_gamma
        self.warmup_epochs = warmup_epochs
        self.mixup, self.mixup_alpha = mixup, mixup_alpha
        self.weights = {
            "reconstruction": reconstruction_weight,
            "cycle": cycle_weight,
            "code": code_weight,
            "gan": gan_weight,
            "memory": memory_weight,
            "prototype": prototype_weight,
        }
        self.r1_weight = r1_weight
        self.generation_trains_encoder = generation_trains_encoder
        self.picture_people = picture_people
        self.seed = seed
        # This epoch's first images (for the picture) and every step's features (for the check
        # that generated views keep identity); the true identities of the source, when known.
        self._picture_batch: dict[str, Tensor] | None = None
        self._view_check: list[tuple[Tensor, Tensor, Tensor]] = []
        self._true_ids: np.ndarray | None = None
        self.history: list[EpochLabels] = []
        self._prototypes: Tensor | None = None
        self.encoder_checkpoint = encoder_checkpoint

    def on_fit_start(self) -> None:
        # Here, not in __init__: rebuilding a trained GCL from its own checkpoint (evaluation)
        # must not need the stage-1 file. A resumed run has its weights restored already.
        if self.encoder_checkpoint is not None and self.trainer.ckpt_path is None:
            self.load_encoder(self.encoder_checkpoint)

    @property
    def variant(self) -> str:
        """GCL, GCL+, the originals-only ablation, or the 2-D structure fallback's name."""
        if not self.generate:
            return "GCL memory loss on originals only"
        name = self.structure.variant
        return name.replace("GCL", "GCL+", 1) if self.mixup else name

    # ------------------------------------------------------------------ the identity encoder
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """E_id: ``[B, 3, H, W]`` -> (identity code ``[B, C * 4]``, BN embedding ``[B, D]``; ``D``
        is ``embedding_dim``, or ``C`` without JVTC's Linear head)."""
        feature_map = self.backbone(images)
        pooled = feature_map.mean(dim=(2, 3))
        if self.embedding is not None:
            pooled = self.embedding(pooled)
        return part_code(feature_map), self.neck(pooled)

    def extract(self, images: Tensor) -> Features:
        """The BN embedding ``[B, D]`` (the official test feature, L2-normalised by the
        evaluator's cosine distance)."""
        return Features.embedding(self.encode(images)[1])

    def head_parameters(self) -> list[nn.Parameter]:
        """JVTC's Linear head (empty without ``embedding_dim``)."""
        return [] if self.embedding is None else list(self.embedding.parameters())

    def load_encoder(self, path: str) -> None:
        """E_id from a reidgen checkpoint (a BoT model: its backbone and BN neck) or from a raw
        state dict of the official stage-1 models (JVTC's ResNet: torchvision trunk keys,
        ``feat.*`` Linear, ``feat_bn.*`` BN; MLC's ``bn.*`` BN on the pooled channels)."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"encoder checkpoint {path} does not exist")
        try:
            checkpoint = torch.load(file, map_location="cpu", weights_only=False)
        except Exception as error:
            raise ValueError(
                f"encoder checkpoint {path}: torch.load cannot read it "
                f"({type(error).__name__}: {error})"
            ) from error
        if isinstance(checkpoint, Mapping) and "hyper_parameters" in checkpoint:
            self._load_reidgen_encoder(path)
        elif isinstance(checkpoint, Mapping):
            self._load_raw_encoder(path, unwrap_state_dict(checkpoint))
        else:
            raise ValueError(
                f"encoder checkpoint {path} holds a {type(checkpoint).__name__}, neither a "
                "reidgen checkpoint nor a state dict"
            )
        log.info("GCL encoder initialised from %s", path)

    def _load_reidgen_encoder(self, path: str) -> None:
        from reidgen.run_support import load_method  # run_support builds methods: no cycle

        source = load_method(path)
        neck = getattr(getattr(source, "head", None), "bn", None)
        if not hasattr(source, "backbone") or not isinstance(neck, nn.BatchNorm1d):
            raise ValueError(
                f"encoder checkpoint {path} holds a {type(source).__name__}, which has no "
                "backbone and BN-neck head (head.bn) to start GCL's encoder from; use a "
                "baseline (BoT) checkpoint"
            )
        if self.embedding is not None:
            raise ValueError(
                f"encoder checkpoint {path} is a reidgen model without JVTC's Linear head: "
                "set method.embedding_dim=null"
            )
        self._load_parts(path, source.backbone.state_dict(), None, neck.state_dict())

    def _load_raw_encoder(self, path: str, state: Mapping[str, Tensor]) -> None:
        trunk = {key: value for key, value in state.items() if key.split(".")[0] in _TRUNK}
        linear = _prefixed(state, "feat.")
        neck_prefix = "feat_bn." if _prefixed(state, "feat_bn.") else "bn."
        neck = _prefixed(state, neck_prefix)
        if not trunk or not neck:
            raise ValueError(
                f"encoder checkpoint {path} is not a stage-1 ResNet state dict: expected the "
                "torchvision trunk (conv1.*, bn1.*, layer1-4.*) and a BN neck (feat_bn.* or "
                f"bn.*); its first keys are {sorted(state)[:8]}"
            )
        if bool(linear) != (self.embedding is not None):
            raise ValueError(
                f"encoder checkpoint {path} "
                + (
                    f"has JVTC's Linear head feat.* ({tuple(linear['weight'].shape)}): set "
                    f"method.embedding_dim={linear['weight'].shape[0]}"
                    if linear
                    else "has no Linear head (feat.*): set method.embedding_dim=null"
                )
            )
        self._load_parts(path, trunk, linear or None, neck)

    def _load_parts(
        self,
        path: str,
        trunk: Mapping[str, Tensor],
        linear: Mapping[str, Tensor] | None,
        neck: Mapping[str, Tensor],
    ) -> None:
        try:
            self.backbone.load_state_dict(trunk)
            if linear is not None:
                self.embedding.load_state_dict(linear)
            self.neck.load_state_dict(neck)
        except RuntimeError as error:
            raise ValueError(
                f"encoder checkpoint {path} does not fit GCL's encoder (method.backbone depth "
                f"and IBN, method.embedding_dim must match): {error}"
            ) from error

    # ------------------------------------------------------------------ stages and labels
    def joint(self, epoch: int | None = None) -> bool:
        """Whether ``epoch`` (default: the current one) is a joint-training (stage 3) epoch."""
        return (self.current_epoch if epoch is None else epoch) >= self.warmup_epochs

    def assign_training_labels(
        self, epoch: int, training_set: TrainingSet
    ) -> Mapping[str, Sequence[int]] | None:
        """Warm-up: every image (one label; the loader shuffles). Joint epochs: the memory's
        clusters (rank 0's, broadcast), outliers left out; the memory is first filled with E_id's
        embeddings of every image at the first joint epoch."""
        names = list(training_set.names)
        if len(names) != 1 or training_set.labelled:
            raise ValueError(
                "GCL trains on exactly one unlabelled training source (data.sources = "
                f"data.unlabelled = [name]); got sources {names}, labelled "
                f"{list(training_set.labelled)}"
            )
        name = names[0]
        samples = training_set.samples(name)
        if len(samples) != len(self.memory.labels):
            raise ValueError(
                f"source {name!r} has {len(samples)} images but the memory was built for "
                f"{len(self.memory.labels)}; build the method with the data it trains on"
            )
        true_ids = np.array([s.pid for s in samples])
        self._true_ids = true_ids if (true_ids >= 0).all() else None
        if not self.joint(epoch):
            return {name: np.zeros(len(samples), dtype=np.int64)}
        if not bool(self.memory_ready):
            features = self.source_embeddings(
                training_set, name, lambda images: self.encode(images)[1]
            )
            self.memory.initialise(features.to(self.memory.features.device))
            self.memory_ready.fill_(True)
        world_count, rank = world()
        shared: list[Any] = [None]
        if rank == 0:
            shared = [self.labeller(self.memory.features.float().cpu())]
        if world_count > 1:
            dist.broadcast_object_list(shared, src=0)
        labels = shared[0]
        if labels.num_clusters == 0:
            raise ValueError(
                f"epoch {epoch}: DBSCAN found no cluster among the {len(samples)} images of "
                f"{name!r} (eps {labels.eps:.3f}); start from a trained encoder "
                "(method.encoder_checkpoint) or raise method.labeller.rho / eps"
            )
        self.memory.set_labels(torch.from_numpy(labels.labels))
        if self.mixup:
            # Fixed for the epoch (official): computed once, right after clustering.
            self._prototypes = self.memory.prototypes()
        record = EpochLabels.of(epoch, labels, self._true_ids)
        self.history = self.record_pseudo_labels(self.history, record)
        return {name: labels.labels}

    def memory_rows(self, positions: Tensor) -> Tensor:
        """Memory rows of batch images, from their positions in the epoch's training set (the
        source's images in order, outliers left out in joint epochs)."""
        if not self.joint():
            return positions
        kept = torch.nonzero(self.memory.labels >= 0).squeeze(1)
        return kept[positions.to(kept.device)]

    # ------------------------------------------------------------------ training
    def encoder_parameters(self) -> list[nn.Parameter]:
        """E_id's parameters: the backbone, JVTC's head if any, the BN neck."""
        return [*self.backbone.parameters(), *self.head_parameters(), *self.neck.parameters()]

    def configure_optimizers(self) -> Any:
        encoder = self.encoder_parameters()
        optimizers = [self.encoder_optimizer_factory([p for p in encoder if p.requires_grad])]
        if self.generate:
            optimizers.append(self.generator_optimizer_factory(self.generator.parameters()))
            optimizers.append(self.discriminator_optimizer_factory(self.discriminator.parameters()))
        return optimizers

    def on_train_epoch_start(self) -> None:
        frozen = not self.joint()
        for parameter in (*self.backbone.parameters(), *self.head_parameters(), self.neck.weight):
            parameter.requires_grad_(not frozen)
        if self.joint():
            joint_epoch = self.current_epoch - self.warmup_epochs
            steps = sum(joint_epoch >= step for step in self.encoder_lr_steps)
            optimizer = self.optimizers()[0] if self.generate else self.optimizers()
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * (
                    self.encoder_lr_gamma**steps
                )

    def _random(self) -> torch.Generator:
        """This step's generator: a function of (seed, global step, rank) only."""
        _, rank = world()
        entropy = [self.seed & (2**63 - 1), self.global_step, rank]
        return torch.Generator().manual_seed(
            int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        random = self._random()
        rows = self.memory_rows(batch["index"])
        if not self.generate:
            return self._originals_only_step(batch["image"], rows, random)
        encoder_optimizer, generator_optimizer, discriminator_optimizer = self.optimizers()
        joint = self.joint()
        images = batch["image"]
        # Stage 2: E_id is frozen in eval mode (BN statistics included), as the official code.
        self.backbone.train(joint)
        self.neck.train(joint)
        original_map, view_map = self.structure(batch, random)
        code, embedding = self.encode(images)
        structure = self.generator.encode(original_map.to(images))
        structure_view = self.generator.encode(view_map.to(images))
        reconstruction = self.generator.decode(structure, code)
        view = self.generator.decode(structure_view, code)
        code_reconstruction, _ = self.encode(reconstruction)
        code_view, embedding_view = self.encode(view)
        cycle = self.generator.decode(structure, code_view)
        code_cycle, _ = self.encode(cycle)
        fakes = [reconstruction, view, cycle]
        if self.mixup and joint:
            mixed, mixed_targets = self._mix(code, structure, batch["pid"], random)
            fakes.append(mixed)

        # D step, on the detached fakes.
        d_loss = sum(
            (
                discriminator_loss(self.discriminator, fake, images, self.r1_weight)
                for fake in fakes
            ),
            start=images.new_zeros(()),
        )
        discriminator_optimizer.zero_grad()
        self.manual_backward(self.weights["gan"] * d_loss)
        discriminator_optimizer.step()

        # G (+ E_id) step, with D frozen.
        self.discriminator.requires_grad_(False)
        target_code = code.detach()
        losses = {
            "reconstruction": (reconstruction - images).abs().mean(),
            "cycle": (cycle - images).abs().mean(),
            "code": (code_reconstruction - target_code).abs().mean()
            + (code_cycle - target_code).abs().mean(),
            "gan": sum(
                (generator_adversarial_loss(self.discriminator, fake) for fake in fakes),
                start=images.new_zeros(()),
            ),
        }
        if joint:
            losses["memory"] = self.memory.loss(embedding, embedding_view, rows, random)
            if self.mixup:
                prototypes = self._prototypes.to(embedding)
                _, embedding_mixed = self.encode(mixed)
                losses["prototype"] = F.cross_entropy(
                    embedding @ prototypes.T, batch["pid"] - self.num_classes
                ) + _soft_cross_entropy(embedding_mixed @ prototypes.T, mixed_targets)
        weighted = {name: self.weights[name] * value for name, value in losses.items()}
        g_loss = sum(weighted.values())
        generator_optimizer.zero_grad()
        encoder_optimizer.zero_grad()
        self._generator_step_backward(weighted, joint)
        generator_optimizer.step()
        if joint:
            encoder_optimizer.step()
            self._update_memory(embedding, rows)
        self.discriminator.requires_grad_(True)
        self._view_check.append((embedding.detach(), embedding_view.detach(), rows))
        if batch_idx == 0 and self.picture_people > 0:
            people = min(self.picture_people, len(images))
            self._picture_batch = {k: v[:people].detach() for k, v in batch.items()}
        self.log_dict(
            {"train/d_loss": d_loss.detach(), "train/g_loss": g_loss.detach()}
            | {f"train/{name}_loss": value.detach() for name, value in losses.items()},
            on_step=True,
            on_epoch=True,
        )

    def _generator_step_backward(self, weighted: dict[str, Tensor], joint: bool) -> None:
        """Gradients of the G (+ E_id) step's weighted losses: the generator gets every loss's;
        E_id every loss's too (official), or with ``generation_trains_encoder=False`` in joint
        epochs only the memory and prototype losses'."""
        if not joint or self.generation_trains_encoder:
            self.manual_backward(sum(weighted.values()))
            return
        contrastive = {"memory", "prototype"}
        generation = sum(value for name, value in weighted.items() if name not in contrastive)
        self.manual_backward(generation, retain_graph=True)
        for parameter in self.encoder_parameters():
            parameter.grad = None
        self.manual_backward(sum(value for name, value in weighted.items() if name in contrastive))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        checked, self._view_check = self._view_check, []
        if checked and self._true_ids is not None:
            self._log_view_identity(checked)
        batch, self._picture_batch = self._picture_batch, None
        if batch is not None and self.generate and self.trainer.is_global_zero:
            from reidgen.viz.gcl_views import write_views_picture  # viz imports methods

            folder = Path(self.trainer.default_root_dir) / "views"
            with self.inference():
                write_views_picture(
                    self,
                    batch["image"],
                    self.structure.views(batch),
                    folder / f"epoch_{self.current_epoch:03d}.png",
                    overwrite=True,  # a resumed epoch draws its picture again
                )

    def _log_view_identity(self, checked: list[tuple[Tensor, Tensor, Tensor]]) -> None:
        """Do the generated views keep identity? Each view (its E_id embedding, train mode, as
        trained) ranks the epoch's original images of every identity, its own image left out;
        rank-1 and mAP by the source's true identities, as ``views/rank1``, ``views/mAP``."""
        originals = F.normalize(torch.cat([c[0] for c in checked]).float(), dim=1)
        views = F.normalize(torch.cat([c[1] for c in checked]).float(), dim=1)
        rows = torch.cat([c[2] for c in checked]).cpu().numpy()
        identities = self._true_ids[rows] + 1  # pid 0 would read as a distractor
        if len(np.unique(identities)) == len(identities):
            return  # nobody seen twice this epoch: no view has a true match to find
        # The own image shares the view's "camera" (its row), so the protocol leaves it out.
        metrics = evaluate_ranking(
            1 - views @ originals.T, identities, rows, identities, rows, ranks=(1,)
        )
        self.log_dict({"views/rank1": metrics["rank1"], "views/mAP": metrics["mAP"]}, on_epoch=True)

    @torch.no_grad()
    def redraw(self, images: Tensor, maps: Tensor) -> Tensor:
        """The generator's picture of each person from each structure map: ``images`` ``[B, 3,
        H, W]``, ``maps`` ``[B, V, 1, H, W]`` -> ``[B, V, 3, H, W]`` (view 0: the
        reconstruction)."""
        code, _ = self.encode(images)
        count, views = maps.shape[:2]
        structure = self.generator.encode(maps.flatten(0, 1).to(images))
        drawn = self.generator.decode(structure, code.repeat_interleave(views, dim=0))
        return drawn.unflatten(0, (count, views))

    @torch.no_grad()
    def mixed_pictures(self, images: Tensor, maps: Tensor) -> Tensor:
        """GCL+'s mixing shown: each person's code mixed with the next person's at
        ``lambda`` 0.75 and 0.5, drawn with the person's own structure ``maps`` ``[B, 1, H, W]``;
        ``[B, 2, 3, H, W]``."""
        from reidgen.viz.gcl_views import MIX_WEIGHTS

        code, _ = self.encode(images)
        structure = self.generator.encode(maps.to(images))
        partner = code.roll(-1, dims=0)
        return torch.stack(
            [self.generator.decode(structure, w * code + (1 - w) * partner) for w in MIX_WEIGHTS],
            dim=1,
        )

    def _mix(
        self, code: Tensor, structure: Tensor, labels: Tensor, random: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """D-Mixup: identity codes mixed with a permuted batch (one lambda >= 0.5 per batch),
        decoded with the anchor's structure; returns the images and their soft cluster labels
        ``[B, C]``."""
        weight = _beta(self.mixup_alpha, random)
        weight = max(weight, 1.0 - weight)
        order = torch.randperm(len(code), generator=random).to(code.device)
        mixed = self.generator.decode(structure, weight * code + (1 - weight) * code[order])
        clusters = labels - self.num_classes
        num_clusters = len(self._prototypes)
        targets = (
            weight * F.one_hot(clusters, num_clusters).float()
            + (1 - weight) * F.one_hot(clusters[order], num_clusters).float()
        )
        return mixed, targets

    def _originals_only_step(self, images: Tensor, rows: Tensor, random: torch.Generator) -> None:
        optimizer = self.optimizers()
        _, embedding = self.encode(images)
        loss = self.weights["memory"] * self.memory.loss(embedding, None, rows, random)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self._update_memory(embedding, rows)
        self.log("train/memory_loss", loss.detach(), on_step=True, on_epoch=True)

    def _update_memory(self, embedding: Tensor, rows: Tensor) -> None:
        """Every process writes every process's batch, so the memories stay equal."""
        features, indices = embedding.detach(), rows
        if world()[0] > 1:
            features = self.all_gather(features).flatten(0, 1)
            indices = self.all_gather(indices).flatten(0, 1)
        self.memory.update(features, indices)

    # ------------------------------------------------------------------ state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STATE_KEY] = {
            "history": [asdict(r) for r in self.history],
            "prototypes": self._prototypes,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(STATE_KEY, {})
        self.history = [EpochLabels(**r) for r in state.get("history", [])]
        self._prototypes = state.get("prototypes")


def _beta(alpha: float, random: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw seeded from ``random`` (torch's Beta sampler takes no
    generator)."""
    seed = int(torch.randint(2**62, (1,), generator=random))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """``-sum(targets * log_softmax(logits))`` averaged over the batch."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _prefixed(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``state`` under ``prefix``, with it removed."""
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
