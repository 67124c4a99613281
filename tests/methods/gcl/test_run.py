"""GCL+ and GCL end to end on the tiny SynthPerson preset (32x16 images: seconds per epoch): the
stage-1 encoder from a baseline run, the warm-up with the encoder frozen, joint epochs on the
memory's clusters, exact resume across each stage boundary, the pictures, plain GCL and the
originals-only ablation."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from reidgen.run_support import load_method
from reidgen.viz.gcl_views import CAPTION_HEIGHT, GAP, pictures_from_config
from tests.conf.test_config import composed
from tests.methods.gcl.test_method import built
from tests.test_run import metrics_of, only_run, run_module

SMALL = [
    "hardware=cpu",
    "trainer.precision=32-true",
    "data.train_transform.height=32",
    "data.train_transform.width=16",
]
STAGE1 = ["method=baseline", "experiment=quick", "trainer.max_epochs=1", *SMALL]
TINY_STREET = "[synth_street_tiny]"


def gcl_args(encoder: Path, epochs: int, *extra: str, method: str = "gcl_plus") -> list[str]:
    return [
        f"method={method}",
        "data=synth_unsupervised",
        f"data.sources={TINY_STREET}",
        f"data.unlabelled={TINY_STREET}",
        f"data.targets={TINY_STREET}",
        "data.batch_size=8",
        "data.num_workers=0",
        *SMALL,
        f"trainer.max_epochs={epochs}",
        "+trainer.limit_train_batches=2",
        "trainer.log_every_n_steps=1",
        f"method.encoder_checkpoint={encoder}",
        "method.warmup_epochs=1",
        # 32x16 images: a structure code of 8x4, a discriminator of two scales.
        "method.generator.dim=4",
        "method.generator.mlp_dim=32",
        "method.generator.aspp_dilations=[1,1,1]",
        "method.discriminator.dim=4",
        "method.discriminator.num_scales=2",
        "method.discriminator.num_res=1",
        # 75 images: a fixed eps, small neighbourhoods.
        "method.labeller.rho=null",
        "method.labeller.eps=0.5",
        "method.labeller.min_samples=2",
        "method.labeller.k1=10",
        "method.labeller.k2=3",
        *extra,
    ]


def logged_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def epoch_rows(run_dir: Path) -> list[dict[str, str]]:
    return [row for row in logged_rows(run_dir) if row.get("train/g_loss_epoch")]


def state_of(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory, synth_data_dir: Path) -> Path:
    log_dir = tmp_path_factory.mktemp("gcl-stage1")
    run_module("reidgen.run", STAGE1, synth_data_dir, log_dir)
    return only_run(log_dir) / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_a_bot_checkpoint_gives_the_encoder(encoder: Path, tmp_path: Path) -> None:
    method = built(tmp_path)
    method.load_encoder(str(encoder))
    bot = load_method(encoder)
    for name, tensor in bot.backbone.state_dict().items():
        assert torch.equal(method.backbone.state_dict()[name], tensor), name
    for name, tensor in bot.head.bn.state_dict().items():
        assert torch.equal(method.neck.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="without JVTC's Linear head"):
        built(tmp_path, "method.embedding_dim=8").load_encoder(str(encoder))


@pytest.fixture(scope="module")
def gcl_run(tmp_path_factory: pytest.TempPathFactory, synth_data_dir: Path, encoder: Path) -> Path:
    log_dir = tmp_path_factory.mktemp("gcl")
    run_module("reidgen.run", gcl_args(encoder, 3), synth_data_dir, log_dir)
    return only_run(log_dir)


@pytest.mark.slow
def test_stages_clusters_and_results(gcl_run: Path) -> None:
    rows = epoch_rows(gcl_run)
    assert len(rows) == 3
    # Warm-up: GAN losses only; joint epochs: the memory loss and GCL+'s prototype loss too.
    assert not rows[0].get("train/memory_loss_epoch")
    assert not rows[0].get("train/prototype_loss_epoch")
    assert all(float(row["train/memory_loss_epoch"]) > 0 for row in rows[1:])
    assert all(float(row["train/prototype_loss_epoch"]) > 0 for row in rows[1:])
    for row in rows:
        assert float(row["train/reconstruction_loss_epoch"]) > 0
        assert math.isfinite(float(row["train/d_loss_epoch"]))
    history = (gcl_run / "pseudo_labels.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]
    view_check = [float(row["views/mAP"]) for row in logged_rows(gcl_run) if row.get("views/mAP")]
    assert len(view_check) == 3 and all(0 < value <= 100 for value in view_check)
    # One picture per epoch: 4 people, each an image + 8 maps over 8 drawings + 2 mixes.
    pictures = sorted(p.name for p in (gcl_run / "views").iterdir())
    assert pictures == ["epoch_000.png", "epoch_001.png", "epoch_002.png"]
    with Image.open(gcl_run / "views" / "epoch_002.png") as picture:
        assert picture.width == GAP + 11 * (4 * 16 + GAP)
        assert picture.height == 4 * 2 * (4 * 32 + CAPTION_HEIGHT + GAP)
    record = metrics_of(gcl_run)
    assert record["method"] == "reidgen.methods.gcl.method.GCL"
    assert record["method_variant"] == "GCL+"
    assert math.isfinite(record["metrics"]["synth_street_tiny"]["mAP"])


@pytest.mark.slow
def test_resume_across_each_stage_is_exact(
    gcl_run: Path, encoder: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    first = tmp_path / "warmup"
    run_module("reidgen.run", gcl_args(encoder, 1), synth_data_dir, first)
    # The warm-up trains the generator only: the encoder is the stage-1 one, BN statistics too.
    stage1 = torch.load(encoder, weights_only=False)["state_dict"]
    warmed = state_of(only_run(first))
    for name, tensor in stage1.items():
        if name.startswith("backbone."):
            assert torch.equal(warmed[name], tensor), name
    assert torch.equal(warmed["neck.running_mean"], stage1["head.bn.running_mean"])
    previous = only_run(first)
    for epochs, folder in ((2, "joint"), (3, "last")):
        checkpoint = previous / "checkpoints" / "last.ckpt"
        args = [*gcl_args(encoder, epochs), f"ckpt_path={checkpoint}"]
        run_module("reidgen.run", args, synth_data_dir, tmp_path / folder)
        previous = only_run(tmp_path / folder)
    uninterrupted, continued = state_of(gcl_run), state_of(previous)
    assert uninterrupted.keys() == continued.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, continued[name]), name
    assert metrics_of(previous)["metrics"] == metrics_of(gcl_run)["metrics"]


@pytest.mark.slow
def test_gcl_and_the_originals_only_ablation(
    encoder: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    # One GCL warm-up serves both GCL and GCL+ (experiments/gcl_synthperson.yaml): the warm-up
    # does not depend on D-Mixup, and each variant's joint epochs continue from its checkpoint.
    warmup = tmp_path / "gcl-warmup"
    run_module("reidgen.run", gcl_args(encoder, 1, method="gcl"), synth_data_dir, warmup)
    checkpoint = only_run(warmup) / "checkpoints" / "last.ckpt"
    for method, variant in (("gcl", "GCL"), ("gcl_plus", "GCL+")):
        joint = tmp_path / method
        args = [*gcl_args(encoder, 2, method=method), f"ckpt_path={checkpoint}"]
        run_module("reidgen.run", args, synth_data_dir, joint)
        (row,) = epoch_rows(only_run(joint))
        assert float(row["train/memory_loss_epoch"]) > 0
        assert bool(row.get("train/prototype_loss_epoch")) == (variant == "GCL+")
        assert metrics_of(only_run(joint))["method_variant"] == variant

    originals = tmp_path / "originals"
    args = gcl_args(encoder, 1, "method.generate=false", "method.warmup_epochs=0", method="gcl")
    run_module("reidgen.run", args, synth_data_dir, originals)
    logged = [r for r in logged_rows(only_run(originals)) if r.get("train/memory_loss_epoch")]
    assert len(logged) == 1 and not logged[0].get("train/g_loss_epoch")
    assert not any(k.startswith("generator.") for k in state_of(only_run(originals)))


@pytest.mark.slow
def test_views_picture_from_a_checkpoint(
    gcl_run: Path, tmp_path: Path, synth_data_dir: Path
) -> None:
    args = [
        f"ckpt={gcl_run / 'checkpoints' / 'last.ckpt'}",
        f"data.sources={TINY_STREET}",
        f"data.targets={TINY_STREET}",
        "images=[0,3]",
        f"out_dir={tmp_path / 'pictures'}",
    ]
    run_module("reidgen.viz.gcl_views", args, synth_data_dir, tmp_path)
    with Image.open(tmp_path / "pictures" / "views.png") as picture:
        assert picture.height == 2 * 2 * (4 * 32 + CAPTION_HEIGHT + GAP)
    # Refusals, in process: an existing picture, an image that is not in the source.
    cfg = composed([*args[:-1], f"out_dir={tmp_path / 'pictures'}"], tmp_path, "viz_gcl_views")
    with pytest.raises(FileExistsError, match="overwrite=true"):
        pictures_from_config(cfg)
    cfg = composed(
        [*args[:-2], "images=[500]", f"out_dir={tmp_path / 'o'}"], tmp_path, "viz_gcl_views"
    )
    cfg.paths.data_dir = str(synth_data_dir)  # the generated tiny preset, not a new one
    with pytest.raises(ValueError, match="not positions in 'synth_street_tiny'"):
        pictures_from_config(cfg)
