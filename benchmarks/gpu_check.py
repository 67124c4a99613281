"""The GPU check (``make gpu-check``): every method's GPU paths in one run of a few minutes.

Prints, and writes to ``--out`` after every row, a Markdown report: the card's name, the torch,
CUDA and Lightning versions, and a table check | method | precision | result | detail.

* ``train``: a one-epoch Lightning fit of each method, built as ``reidgen.run`` builds it (Hydra
  compose of ``reidgen.conf``, the data module, ``build_method``, ``conf/trainer`` with
  ``hardware=gpu``), in fp16 and in bf16 mixed precision, on the same batch every step: the
  method's loss finite and going down (mean of the last quarter of the steps below the mean of the
  first), every other logged loss finite. Where ``conf/trainer``'s ``deterministic: true`` stops
  a fit at an op without a deterministic CUDA kernel, the row fails, naming the op, and says how
  the same fit goes with ``deterministic=warn``.
* ``eval``: each target's features, distances and metrics on the device (extracted under the
  precision's autocast, as ``trainer.test`` does) against the same weights in fp32 on the CPU,
  through the project's evaluator (``RetrievalEvaluation``), QAConv's fp16 maps and matcher
  included. Tolerances: :data:`MIN_COSINE`, :data:`MAX_DISTANCE_ERROR`, :data:`MAX_METRIC_ERROR`.
* ``ddp``: ``python -m reidgen.run experiment=quick hardware=ddp trainer.devices=1``, two
  training steps and the test: one process, NCCL, finite metrics.
* ``throughput``: training images/s of each method at 256x128 with its paper's network (random
  init: pretrained weights are not available offline) and batch size, after warm-up steps,
  CUDA-synchronised.

``--device cpu`` runs the same code on the CPU at tiny sizes: bf16 only (the fp16 rows say
"skipped: no CUDA"), DDP over gloo, ResNet-18 throughput. The exit status is 1 when any check
fails or does not run within ``--budget`` seconds. Nothing is downloaded: the data is SynthPerson's
tiny preset, generated under ``--work-dir``.

    python benchmarks/gpu_check.py --out gpu_check.md
    python benchmarks/gpu_check.py --device cpu --methods baseline,qaconv --steps 3
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import itertools
import json
import logging
import math
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor, nn

from reidgen import console, resolvers
from reidgen.data.datamodule import ReIDDataModule
from reidgen.eval.features import Features
from reidgen.eval.metric import RetrievalEvaluation
from reidgen.eval.target import EvalTarget
from reidgen.methods.base import ReIDMethod
from reidgen.run_support import build_method

METHODS = (
    "baseline",
    "alignedreid",
    "alignedreid_mutual",
    "domainmix",
    "esnet",
    "gcl",
    "gcl_plus",
    "qaconv",
    "qaconv_gs",
)
CHECKS = ("train", "eval", "ddp", "throughput")
PRECISIONS = ("16-mixed", "bf16-mixed")
AUTOCAST_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
PASS, FAIL, SKIPPED = "pass", "FAIL", "skipped"
# torch's words for an op without a deterministic kernel (an error under deterministic=true).
NONDETERMINISTIC = "does not have a deterministic implementation"

# The data each method trains on (its tests' tiny presets): labelled studio for the supervised
# methods, studio + unlabelled street tested on mall for DomainMix, unlabelled street for GCL.
_STUDIO = ["data=synth_tiny"]
_DOMAINMIX_DATA = [
    "data=synth_labelled_unlabelled",
    "data.sources=[synth_studio_tiny,synth_street_tiny]",
    "data.unlabelled=[synth_street_tiny]",
    "data.targets=[synth_mall_tiny]",
]
_GCL_DATA = [
    "data=synth_unsupervised",
    "data.sources=[synth_street_tiny]",
    "data.unlabelled=[synth_street_tiny]",
    "data.targets=[synth_street_tiny]",
]
# What makes one short epoch reach every training path. DomainMix: phase B from the first epoch
# (discriminator, balance loss, both optimizers) at phase A's rate, so that a few steps show
# learning, on street's true identities (the clustering runs on the CPU whatever the device, and
# a random model's clusters may not survive its filters). GCL: joint training from the first
# epoch (memory, prototype and GAN losses) with a fixed DBSCAN eps that clusters a random encoder.
_DOMAINMIX_PATHS = [
    "method.cluster_from_epoch=0",
    "method.adversarial_from_epoch=0",
    "method.adversarial_lr=3.5e-4",
    "method.discriminator_every=4",
    "method.oracle_labels=true",
]
_GCL_PATHS = [
    "method.warmup_epochs=0",
    "method.labeller.rho=null",
    "method.labeller.eps=0.7",
    "method.labeller.min_samples=2",
    "method.labeller.k1=10",
    "method.labeller.k2=3",
]
METHOD_OVERRIDES: dict[str, list[str]] = {
    "baseline": _STUDIO,
    "alignedreid": _STUDIO,
    "alignedreid_mutual": _STUDIO,
    "domainmix": [*_DOMAINMIX_DATA, *_DOMAINMIX_PATHS],
    "esnet": _STUDIO,
    "gcl": [*_GCL_DATA, *_GCL_PATHS],
    "gcl_plus": [*_GCL_DATA, *_GCL_PATHS],
    "qaconv": _STUDIO,
    "qaconv_gs": _STUDIO,
}
# GCL's generator and discriminator for 32x16 images (its tests' sizes).
_GCL_AT_32X16 = [
    "method.generator.dim=4",
    "method.generator.mlp_dim=32",
    "method.generator.aspp_dilations=[1,1,1]",
    "method.discriminator.dim=4",
    "method.discriminator.num_scales=2",
    "method.discriminator.num_res=1",
]
# The logged losses whose sum must go down. GCL: its generator's image and code losses; its GAN
# and memory terms contend by design (a discriminator that learns, a memory that moves) and rise
# and fall over a few steps.
_GCL_LOSSES = ("train/reconstruction_loss", "train/cycle_loss", "train/code_loss")
TRACKED_LOSSES: dict[str, tuple[str, ...]] = {"gcl": _GCL_LOSSES, "gcl_plus": _GCL_LOSSES}
# The papers' networks (conf/experiment/*/paper*.yaml) without their ImageNet weights, and their
# batch sizes, for the throughput rows.
_GCL_PAPER = [
    "method.backbone.depth=50",
    "method.generator.dim=16",
    "method.generator.mlp_dim=512",
    "method.discriminator.dim=32",
]
PAPER_NETWORKS: dict[str, list[str]] = {
    "baseline": ["method.backbone.depth=50"],
    "alignedreid": ["method.backbone.depth=50", "method.backbone.last_stride=2"],
    "alignedreid_mutual": ["method.backbone.depth=50", "method.backbone.last_stride=2"],
    "domainmix": ["method.backbone.depth=50"],
    "esnet": ["method.backbone.depth=50"],
    "gcl": _GCL_PAPER,
    "gcl_plus": _GCL_PAPER,
    "qaconv": ["method.backbone.depth=50"],
    "qaconv_gs": [
        "method.backbone.depth=50",
        "method.backbone.ibn=b",
        "method.freeze_backbone_bn=true",
    ],
}
PAPER_BATCH = {
    "baseline": 64,
    "alignedreid": 128,
    "alignedreid_mutual": 128,
    "domainmix": 64,
    "esnet": 64,
    "gcl": 16,
    "gcl_plus": 16,
    "qaconv": 32,
    "qaconv_gs": 64,
}
# Every training batch: P x K = 4 x 4 (GS: 8 classes x 2), what the tiny presets' 12 identities
# allow; a throughput batch is several of them side by side.
TINY_BATCH = 16
# The DDP run's precision: hardware=ddp's own on CUDA; fp32 on the CPU (gloo).
DDP_PRECISION = {"cuda": "16-mixed", "cpu": "32-true"}

# Eval tolerances by autocast dtype, about 5x the largest error of every method at 32x16 and
# 128x64 under CPU autocast (fp16: cosine 0.99995, distances 2.2e-3; bf16: 0.9965, 1.4e-2).
# Metrics of the fp32 reference features computed on the device must be the CPU's to float32
# noise: the same numbers in, the same ranking out.
MIN_COSINE = {torch.float16: 0.999, torch.bfloat16: 0.99}
MAX_DISTANCE_ERROR = {torch.float16: 0.01, torch.bfloat16: 0.05}
MAX_METRIC_ERROR = 0.01  # points of mAP, rank-1 and mINP


@dataclass(frozen=True)
class Sizes:
    """How big every part is on one kind of device."""

    height: int
    width: int
    steps: int
    throughput_height: int
    throughput_width: int
    throughput_warmup: int
    throughput_steps: int
    paper: bool  # throughput with the papers' networks and batch sizes


# CUDA: the SynthPerson size the method configs are sized for, and 256x128 for throughput. CPU:
# the tests' 32x16, with the configs' ResNet-18 and one timed step for throughput (a smoke run).
CUDA_SIZES = Sizes(128, 64, 24, 256, 128, 5, 10, paper=True)
CPU_SIZES = Sizes(32, 16, 6, 32, 16, 0, 1, paper=False)


@dataclass(frozen=True)
class Row:
    check: str
    method: str
    precision: str
    result: str
    detail: str


@dataclass
class Run:
    """One run of the check: where it works, what it runs, and the rows so far."""

    device: torch.device
    methods: Sequence[str]
    checks: Sequence[str]
    sizes: Sizes
    work_dir: Path
    budget_s: float
    out: Path | None
    started: float = field(default_factory=time.perf_counter)
    rows: list[Row] = field(default_factory=list)
    part_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def add(self, row: Row) -> None:
        """Keeps ``row``, prints it and rewrites ``--out``, so that a run cut short reports."""
        self.rows.append(row)
        print(f"  {row.method:<18} {row.precision:<10} {row.result:<7} {row.detail}", flush=True)
        if self.out is not None:
            self.out.write_text(report(self))


# ----------------------------------------------------------------------------- configs


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """``conf/config.yaml`` with ``overrides``, as ``python -m reidgen.run`` composes it."""
    GlobalHydra.instance().clear()
    with initialize_config_module("reidgen.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def method_config(run: Run, method: str, precision: str, throughput: bool) -> DictConfig:
    """One method's fit: its data, the device's image size and batch, and, for throughput with
    ``paper`` sizes, its paper's network; deterministic algorithms as ``conf/trainer`` says."""
    sizes = run.sizes
    height, width = (
        (sizes.throughput_height, sizes.throughput_width)
        if throughput
        else (sizes.height, sizes.width)
    )
    overrides = [
        f"method={method}",
        *METHOD_OVERRIDES[method],
        f"hardware={'gpu' if run.cuda else 'cpu'}",
        f"trainer.precision={precision}",
        "trainer.max_epochs=1",
        "logger=none",
        f"paths.data_dir={run.work_dir / 'data'}",
        f"paths.output_dir={run.work_dir / 'runs' / method}",
        f"data.batch_size={TINY_BATCH}",
        "data.num_workers=0",
        f"data.train_transform.height={height}",
        f"data.train_transform.width={width}",
    ]
    if method in ("gcl", "gcl_plus") and (height, width) == (32, 16):
        overrides += _GCL_AT_32X16
    if throughput and sizes.paper:
        overrides += PAPER_NETWORKS[method]
    return compose_config(overrides)


# ----------------------------------------------------------------------------- fits


class ServedBatches:
    """``batch``, ``steps`` times; not a list, which Lightning would read as several loaders."""

    def __init__(self, batch: dict[str, Tensor], steps: int) -> None:
        self.batch = batch
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return itertools.repeat(self.batch, self.steps)


class FixedBatch(ReIDDataModule):
    """The data module as configured, except that an epoch's training loader serves one batch
    ``steps`` times: the real loader's first batch (a loss that must go down on it), or its first
    ``merge`` batches side by side (a larger batch than the tiny presets' identities allow)."""

    def __init__(self, steps: int, merge: int, **data: Any) -> None:
        super().__init__(**data)
        self.steps = steps
        self.merge = merge

    def train_dataloader(self) -> ServedBatches:
        # The real loader first: building it runs the method's per-epoch hooks (labels, GS graph).
        first = list(itertools.islice(super().train_dataloader(), self.merge))
        if not first:
            raise RuntimeError("the first epoch's training loader is empty")
        batches = [first[i % len(first)] for i in range(self.merge)]
        merged = {key: torch.cat([batch[key] for batch in batches]) for key in first[0]}
        return ServedBatches(merged, self.steps)


class LossRecorder(Logger):
    """Every value the method logs, in order (each step's, with ``log_every_n_steps=1``)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, list[float]] = defaultdict(list)

    @property
    def name(self) -> str:
        return "gpu_check"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.values[key].append(float(value))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Not kept: the check reads the losses only."""

    def series(self, key: str) -> list[float]:
        """``key``'s per-step values (``<key>_step`` when the method also logs it per epoch)."""
        return self.values.get(f"{key}_step") or self.values.get(key) or []


class StepTimer(pl.Callback):
    """Wall time of the training batches after the first ``warmup`` (CUDA-synchronised)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.end = 0.0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == self.warmup:
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            synchronize(pl_module.device)
            self.end = time.perf_counter()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def built(cfg: DictConfig, datamodule: ReIDDataModule) -> ReIDMethod:
    """The method of ``cfg`` for ``datamodule``'s data, as ``reidgen.run`` builds it."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return build_method(
        cfg.method,
        datamodule.num_classes,
        evaluation=cfg.eval,
        test_transform=cfg.data.test_transform,
        num_unlabelled_images=datamodule.num_unlabelled_images,
    )


def fit(
    cfg: DictConfig, steps: int, merge: int, logger: Logger | bool, callbacks: list[pl.Callback]
) -> None:
    """One epoch of ``steps`` steps on one batch, with ``cfg``'s trainer (no checkpoints)."""
    datamodule = FixedBatch(steps, merge, **instantiate(cfg.data, _partial_=True).keywords)
    datamodule.setup("fit")
    method = built(cfg, datamodule)
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        log_every_n_steps=1,
    )
    trainer.fit(method, datamodule=datamodule)


# ----------------------------------------------------------------------------- train


def decreasing(losses: Sequence[float]) -> tuple[bool, str]:
    """Whether every loss is finite and the mean of the last quarter is below the first's."""
    if len(losses) < 2:
        return False, f"{len(losses)} logged step(s): too few to tell"
    if not all(math.isfinite(value) for value in losses):
        return False, f"non-finite: {[round(value, 4) for value in losses]}"
    k = max(1, len(losses) // 4)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    words = "down" if last < first else "NOT down"
    return last < first, f"{words}: {first:.4f} -> {last:.4f} (means of {k} of {len(losses)} steps)"


def train_row(run: Run, method: str, precision: str) -> Row:
    """The loss of a fit as ``conf/trainer`` configures it; where that stops at an op without a
    deterministic CUDA kernel, a failure, with the fit's result under ``deterministic=warn``
    too, so that one run on a lent GPU also says whether the method trains apart from that."""
    cfg = method_config(run, method, precision, False)
    try:
        ok, detail = trained(cfg, method, run.sizes.steps)
    except RuntimeError as error:
        if NONDETERMINISTIC not in str(error):
            raise
        ok, detail = trained(warn_only(cfg), method, run.sizes.steps)
        detail = f"{tail(str(error), 200)}; with trainer.deterministic=warn: {detail}"
        return Row("train", method, precision, FAIL, detail)
    return Row("train", method, precision, PASS if ok else FAIL, detail)


def trained(cfg: DictConfig, method: str, steps: int) -> tuple[bool, str]:
    """Whether the method's tracked loss goes down over a fit on one batch and every logged loss
    is finite, and the losses in words."""
    recorder = LossRecorder()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f".*{NONDETERMINISTIC}")
        fit(cfg, steps, 1, recorder, [])
    keys = TRACKED_LOSSES.get(method, ("train/loss",))
    ok, detail = decreasing([sum(step) for step in zip(*map(recorder.series, keys), strict=True)])
    broken = sorted(
        name
        for name, values in recorder.values.items()
        if "loss" in name and not all(map(math.isfinite, values))
    )
    if broken:
        ok, detail = False, f"non-finite {', '.join(broken)}; {detail}"
    return ok, f"{' + '.join(keys)} {detail}"


def warn_only(cfg: DictConfig) -> DictConfig:
    """``cfg`` with deterministic algorithms where torch has them, and a warning where not."""
    cfg.trainer.deterministic = "warn"
    return cfg


# ----------------------------------------------------------------------------- eval


def calibrated(cfg: DictConfig, datamodule: ReIDDataModule) -> ReIDMethod:
    """The method, random weights, with the BN statistics of its targets' images as a trained
    model has its own: with the initial mean 0 and variance 1 a random network maps every image to
    nearly one direction, and distances that close cannot be compared."""
    method = built(cfg, datamodule)
    norms = [m for m in method.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # the plain average over every batch
    method.train()
    with torch.no_grad():
        for loader in datamodule.test_dataloader():
            for batch in loader:
                method.extract(batch["image"])
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return method.eval()


def evaluated(
    method: ReIDMethod,
    datamodule: ReIDDataModule,
    device: torch.device,
    dtype: torch.dtype | None,
    given: Mapping[str, Features] | None = None,
) -> tuple[dict[str, Features], dict[str, dict[str, float]]]:
    """Features and metrics of every target on ``device``, through ``RetrievalEvaluation`` as
    a test step feeds it: extracted under autocast to ``dtype`` (None: fp32), or ``given``."""
    method.to(device)
    features, metrics = {}, {}
    for loader, (name, target) in zip(
        datamodule.test_dataloader(), datamodule.eval_targets.items(), strict=True
    ):
        evaluation: RetrievalEvaluation | None = None
        parts = []
        for batch in loader:
            if given is None:
                part = extracted(method, batch["image"].to(device), dtype)
            else:
                part = given[name].rows(batch["index"]).map(lambda t: t.to(device))
            if evaluation is None:
                evaluation = RetrievalEvaluation(
                    target, part.names, method.evaluator, method.comparison()
                ).to(device)
            evaluation.update(part, batch["index"].to(device))
            parts.append(part)
        features[name], metrics[name] = Features.cat(parts), evaluation.compute()
    return features, metrics


def extracted(method: ReIDMethod, images: Tensor, dtype: torch.dtype | None) -> Features:
    with torch.inference_mode(), torch.autocast(images.device.type, dtype, enabled=bool(dtype)):
        return method.extract_for_eval(images)


def query_gallery(method: ReIDMethod, features: Features, num_query: int) -> Tensor:
    """The method's ``[Q, G]`` test distance of ``features`` on their device, as fp32 on the CPU."""
    method.to(next(iter(features.parts.values())).device)
    queries, gallery = features.rows(slice(None, num_query)), features.rows(slice(num_query, None))
    with torch.inference_mode():
        return method.distance(queries, gallery)(0, num_query).float().cpu()


def smallest_cosine(features: Features, reference: Features) -> float:
    """The smallest cosine similarity of a record with its reference, over every part."""
    return min(
        float(
            torch.nn.functional.cosine_similarity(
                features[name].float().cpu().flatten(1), reference[name].flatten(1), dim=1
            ).min()
        )
        for name in reference.names
    )


def compared(
    method: ReIDMethod,
    target: EvalTarget,
    mixed: Features,
    reference: Features,
    metric_error: float,
    dtype: torch.dtype,
) -> tuple[list[str], str]:
    """The failures and the summary of one target: records, distances (largest difference,
    relative to the largest reference distance: Euclidean distances of unnormalised features have
    no fixed scale) and the metrics' difference."""
    cosine = smallest_cosine(mixed, reference)
    distances = query_gallery(method, mixed, target.num_query)
    expected = query_gallery(method, reference, target.num_query)
    distance_error = float((distances - expected).abs().max() / expected.abs().max())
    failures = []
    if cosine < MIN_COSINE[dtype]:
        failures.append(f"cosine {cosine:.5f} < {MIN_COSINE[dtype]}")
    if distance_error > MAX_DISTANCE_ERROR[dtype]:
        failures.append(f"distance error {distance_error:.1e} > {MAX_DISTANCE_ERROR[dtype]}")
    if metric_error > MAX_METRIC_ERROR:
        failures.append(f"metrics differ by {metric_error:.3f} > {MAX_METRIC_ERROR} points")
    parts = ", ".join(
        f"{name} {list(mixed[name].shape[1:])} {str(mixed[name].dtype).removeprefix('torch.')}"
        for name in mixed.names
    )
    summary = (
        f"{target.name} ({parts}): min cosine {cosine:.5f} (tol {MIN_COSINE[dtype]}), distance "
        f"error {distance_error:.1e} (tol {MAX_DISTANCE_ERROR[dtype]}), metrics of the fp32 "
        f"features {metric_error:.1e} points from the CPU's (tol {MAX_METRIC_ERROR})"
    )
    return failures, summary


def eval_row(run: Run, method: str, precision: str) -> Row:
    """The device in mixed precision against the CPU in fp32, on every target of the method."""
    dtype = AUTOCAST_DTYPES[precision]
    cfg = method_config(run, method, precision, False)
    datamodule: ReIDDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    on_cpu = calibrated(cfg, datamodule)
    on_device = copy.deepcopy(on_cpu)
    reference, expected = evaluated(on_cpu, datamodule, torch.device("cpu"), None)
    mixed, mixed_metrics = evaluated(on_device, datamodule, run.device, dtype)
    _, same_input = evaluated(on_device, datamodule, run.device, None, reference)
    failures, summaries = [], []
    for name, target in datamodule.eval_targets.items():
        metric_error = max(
            abs(same_input[name][key] - expected[name][key]) for key in ("mAP", "rank1", "mINP")
        )
        failed, summary = compared(
            on_device, target, mixed[name], reference[name], metric_error, dtype
        )
        failures += failed
        summaries.append(
            f"{summary}; mAP {mixed_metrics[name]['mAP']:.2f} ({precision}) vs "
            f"{expected[name]['mAP']:.2f} (fp32 CPU)"
        )
    return Row(
        "eval", method, precision, FAIL if failures else PASS, "; ".join(failures + summaries)
    )


# ----------------------------------------------------------------------------- ddp


def ddp_command(run: Run) -> list[str]:
    """Two steps and the test of a quick run under DDP on one device: NCCL on CUDA, gloo on the
    CPU."""
    return [
        sys.executable,
        "-m",
        "reidgen.run",
        "experiment=quick",
        "hardware=ddp" if run.cuda else "hardware=ddp_cpu",
        "trainer.devices=1",
        f"trainer.precision={DDP_PRECISION[run.device.type]}",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "logger=none",
        "pictures.queries=0",
        f"paths.data_dir={run.work_dir / 'data'}",
        f"paths.log_dir={run.work_dir / 'ddp'}",
        f"data.train_transform.height={run.sizes.height}",
        f"data.train_transform.width={run.sizes.width}",
    ]


def ddp_row(run: Run) -> Row:
    """The run exits 0, names the expected backend and records one process and finite metrics."""
    backend = "nccl" if run.cuda else "gloo"
    precision = DDP_PRECISION[run.device.type]
    timeout = max(30.0, run.budget_s - run.elapsed)
    started = time.perf_counter()
    result = subprocess.run(ddp_command(run), capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    output = result.stdout + result.stderr
    if result.returncode != 0:
        return Row("ddp", "baseline", precision, FAIL, f"exit {result.returncode}: {tail(output)}")
    if f"distributed_backend={backend}" not in output:
        detail = f"no 'distributed_backend={backend}' line in its output: {tail(output)}"
        return Row("ddp", "baseline", precision, FAIL, detail)
    records = sorted((run.work_dir / "ddp" / "runs").glob("*/metrics.json"))
    record = json.loads(records[-1].read_text())
    scores = {name: values["mAP"] for name, values in record["metrics"].items() if name != "mean"}
    ok = record["world_size"] == 1 and all(map(math.isfinite, scores.values()))
    detail = (
        f"{backend}, world size {record['world_size']}, 2 training steps of experiment=quick at "
        f"{run.sizes.height}x{run.sizes.width} and its test in {seconds:.0f} s; test mAP "
        + ", ".join(f"{score:.1f} on {name}" for name, score in scores.items())
    )
    return Row("ddp", "baseline", precision, PASS if ok else FAIL, detail)


# ----------------------------------------------------------------------------- throughput


def throughput_row(run: Run, method: str, precision: str) -> Row:
    """Training images/s at the throughput size, with the paper's network and batch size."""
    sizes = run.sizes
    merge = PAPER_BATCH[method] // TINY_BATCH if sizes.paper else 1
    # Where an op has no deterministic CUDA kernel, conf/trainer's deterministic=true stops the
    # fit (the train rows say so); here it only warns, so that every method is timed.
    cfg = warn_only(method_config(run, method, precision, True))
    timer = StepTimer(sizes.throughput_warmup)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f".*{NONDETERMINISTIC}")
        fit(cfg, sizes.throughput_warmup + sizes.throughput_steps, merge, False, [timer])
    batch = TINY_BATCH * merge
    rate = sizes.throughput_steps * batch / (timer.end - timer.start)
    backbone = cfg.method.backbone
    network = f"ResNet-{backbone.depth}" + (f"-IBN-{backbone.ibn}" if backbone.ibn else "")
    detail = (
        f"{rate:,.1f} images/s: {network} (random init), batch {batch}, "
        f"{sizes.throughput_height}x{sizes.throughput_width}, steps: {sizes.throughput_warmup} "
        f"warm-up, {sizes.throughput_steps} timed; trainer.deterministic=warn"
    )
    if not sizes.paper:
        detail += "; a CPU smoke run, not the paper setting"
    return Row("throughput", method, precision, PASS, detail)


# ----------------------------------------------------------------------------- driver


def tail(text: str, limit: int = 400) -> str:
    """The end of ``text`` on one line, for a table cell."""
    flat = " ".join(text.split()).replace("|", "/")
    return flat if len(flat) <= limit else "..." + flat[-limit:]


def guarded(run: Run, check: str, method: str, precision: str, body: Callable[[], Row]) -> None:
    """Adds ``body``'s row, or a failed row for the error it raises or for a spent budget."""
    if run.elapsed > run.budget_s:
        row = Row(check, method, precision, FAIL, f"not run: the {run.budget_s:.0f} s are spent")
    else:
        try:
            row = body()
        except Exception as error:  # a row, and the other checks still run
            row = Row(check, method, precision, FAIL, tail(f"{type(error).__name__}: {error}"))
        finally:
            gc.collect()
            if run.cuda:
                torch.cuda.empty_cache()
    run.add(row)


def precisions(run: Run, check: str) -> tuple[str, ...]:
    """Throughput in the precision ``hardware=gpu`` trains in (CPU mode: bf16)."""
    if check != "throughput":
        return PRECISIONS
    return ("16-mixed",) if run.cuda else ("bf16-mixed",)


def run_part(run: Run, check: str) -> None:
    print(f"{check}:", flush=True)
    started = time.perf_counter()
    if check == "ddp":
        guarded(run, check, "baseline", DDP_PRECISION[run.device.type], lambda: ddp_row(run))
    else:
        body = {"train": train_row, "eval": eval_row, "throughput": throughput_row}[check]
        for method in run.methods:
            for precision in precisions(run, check):
                if precision == "16-mixed" and not run.cuda:
                    run.add(Row(check, method, precision, SKIPPED, "skipped: no CUDA"))
                else:
                    row = functools.partial(body, run, method, precision)
                    guarded(run, check, method, precision, row)
    run.part_seconds[check] = time.perf_counter() - started
    print(f"{check}: {run.part_seconds[check]:.1f} s", flush=True)


def environment(run: Run) -> list[str]:
    sizes = run.sizes
    if run.cuda:
        device = f"{torch.cuda.get_device_name(run.device)} ({run.device})"
        cuda = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        device = f"no GPU, CPU mode ({platform.machine()}, {torch.get_num_threads()} threads)"
        cuda = f"CUDA {torch.version.cuda or 'none'} (not used)"
    return [
        f"- device: {device}",
        f"- torch {torch.__version__}, {cuda}, pytorch-lightning {pl.__version__}, "
        f"Python {platform.python_version()}",
        f"- checks: {', '.join(run.checks)}; methods: {', '.join(run.methods)}",
        f"- sizes: train and eval {sizes.height}x{sizes.width}, batch {TINY_BATCH}, "
        f"{sizes.steps} steps a fit; throughput {sizes.throughput_height}x{sizes.throughput_width}",
    ]


def report(run: Run) -> str:
    """The Markdown report: environment, the table, and the seconds of every part."""
    lines = ["# reidgen GPU check", "", *environment(run), ""]
    lines += ["| check | method | precision | result | detail |", "|---|---|---|---|---|"]
    lines += [
        f"| {r.check} | {r.method} | {r.precision} | {r.result} | {r.detail} |" for r in run.rows
    ]
    lines += ["", "| part | seconds |", "|---|---|"]
    lines += [f"| {part} | {seconds:.1f} |" for part, seconds in run.part_seconds.items()]
    failed = sum(row.result == FAIL for row in run.rows)
    lines += [
        "",
        f"{len(run.rows)} rows, {failed} failed; {run.elapsed:.0f} s in all "
        f"(budget {run.budget_s:.0f} s)",
    ]
    return "\n".join(lines) + "\n"


def exit_code(rows: Sequence[Row]) -> int:
    return 1 if any(row.result == FAIL for row in rows) else 0


def choices(allowed: Sequence[str], what: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of ``allowed`` names."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(unknown) or repr(text)}; choose from "
                f"{', '.join(allowed)}"
            )
        return items

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--methods", type=choices(METHODS, "method"), default=list(METHODS))
    parser.add_argument("--checks", type=choices(CHECKS, "check"), default=list(CHECKS))
    parser.add_argument(
        "--steps",
        type=int,
        help="training steps of a train row (default: 24 on CUDA, 6 on the CPU)",
    )
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the whole run")
    parser.add_argument("--work-dir", type=Path, help="data and run folders (default: a temp dir)")
    parser.add_argument("--out", type=Path, help="also write the Markdown report there")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    return args


def check_all(args: argparse.Namespace, work_dir: Path) -> Run:
    cuda = args.device == "cuda"
    sizes = CUDA_SIZES if cuda else CPU_SIZES
    run = Run(
        device=torch.device("cuda", 0) if cuda else torch.device("cpu"),
        methods=args.methods,
        checks=args.checks,
        sizes=sizes if args.steps is None else replace(sizes, steps=args.steps),
        work_dir=work_dir,
        budget_s=args.budget,
        out=args.out,
    )
    print("\n".join(environment(run)), flush=True)
    for check in run.checks:
        run_part(run, check)
    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    resolvers.register()
    console.quiet_third_party()
    # Lightning's lines of every Trainer (GPU available, precision, "fit stopped"), dozens of them.
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    if args.work_dir is None:
        with tempfile.TemporaryDirectory(prefix="reidgen-gpu-check-") as folder:
            run = check_all(args, Path(folder))
    else:
        run = check_all(args, args.work_dir)
    text = report(run)
    print("\n" + text, flush=True)
    if run.out is not None:
        run.out.write_text(text)
    return exit_code(run.rows)


if __name__ == "__main__":
    sys.exit(main())
