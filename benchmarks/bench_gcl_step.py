"""Training throughput of GCL's GAN step (images/s) against the BoT baseline's step, measured in the
same run on the same device: the warm-up step (generator and discriminator, encoder frozen), the
joint step (+ the encoder and the memory loss) and GCL+'s (+ D-Mixup).

The models are ``method=gcl``'s config (ResNet-18, the CPU-sized generator) unless ``--paper``
(ResNet-50, the official generator and discriminator sizes); batches of random images and
SynthPerson-like part maps are made in memory, so image decoding is not timed. On a GPU the
steps run in fp32, as the official code (AMP with R1's double backward is untested).

    python benchmarks/bench_gcl_step.py [--size 128x64] [--batch 16] [--steps 6] [--device cpu]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from torch.utils.data import DataLoader, Dataset

from bench_training_step import StepTimer
from reidgen.methods.baseline import Baseline
from reidgen.methods.gcl.method import GCL
from reidgen.models import GlobalAvgPool, ResNetBackbone
from reidgen.run_support import build_method

NUM_IMAGES = 256


class InMemoryBatches(Dataset):
    """Pre-made training batches: images, part maps ``[B, 8, H, W]``, P x K labels, indices."""

    def __init__(self, count: int, batch: int, height: int, width: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.batches = [
            {
                "image": torch.randn(batch, 3, height, width, generator=generator),
                "structure": torch.randint(0, 11, (batch, 8, height, width), dtype=torch.uint8),
                "pid": torch.arange(batch // 4).repeat_interleave(4),
                "index": torch.arange(step * batch, (step + 1) * batch) % NUM_IMAGES,
            }
            for step in range(count)
        ]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batches[index]


def gcl(overrides: list[str]) -> GCL:
    with initialize_config_module("reidgen.conf", version_base="1.3"):
        cfg = compose("config", overrides=["method=gcl", *overrides])
    torch.manual_seed(0)
    method = build_method(cfg.method, 0, num_unlabelled_images=NUM_IMAGES)
    assert isinstance(method, GCL)
    # Clusters of 4 images, so the joint step has positives and negatives.
    method.memory.initialise(torch.randn(NUM_IMAGES, method.memory.features.shape[1]))
    method.memory.set_labels(torch.arange(NUM_IMAGES) // 4)
    method._prototypes = method.memory.prototypes()
    return method


def images_per_second(
    method: pl.LightningModule, data: InMemoryBatches, warmup: int, device: str
) -> float:
    timer = StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator=device,
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[timer],
        default_root_dir=str(Path("outputs") / "bench_gcl_step"),
    )
    trainer.fit(method, train_dataloaders=DataLoader(data, batch_size=None, shuffle=False))
    steps = len(data) - warmup
    return steps * len(data.batches[0]["image"]) / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="128x64")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--paper", action="store_true", help="official sizes, ResNet-50")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    data = InMemoryBatches(args.steps + args.warmup, args.batch, height, width)
    sizes = [
        f"data.train_transform.height={height}",
        f"data.train_transform.width={width}",
        "method.picture_people=0",
    ]
    if args.paper:
        sizes += [
            "method.backbone.depth=50",
            "method.generator.dim=16",
            "method.generator.mlp_dim=512",
            "method.discriminator.dim=32",
        ]
    if min(height, width) // 4 <= 9:  # reflection padding needs a code larger than the dilation
        sizes.append("method.generator.aspp_dilations=[1,2,3]")
    depth = 50 if args.paper else 18
    torch.manual_seed(0)
    reference = Baseline(
        args.batch // 4,
        ResNetBackbone(depth, last_stride=1),
        GlobalAvgPool(),
        optimizer=lambda params: torch.optim.Adam(params, lr=3.5e-4),
    )
    rows = [
        (
            "BoT baseline step (reference)",
            images_per_second(reference, data, args.warmup, args.device),
        )
    ]
    for name, overrides in (
        ("GCL warm-up step (G + D)", ["method.warmup_epochs=1"]),
        ("GCL joint step (G + D + E_id + memory)", ["method.warmup_epochs=0"]),
        ("GCL+ joint step (+ D-Mixup)", ["method.warmup_epochs=0", "method.mixup=true"]),
    ):
        rows.append(
            (name, images_per_second(gcl([*sizes, *overrides]), data, args.warmup, args.device))
        )
    device = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"GCL training throughput, ResNet-{depth}, batch {args.batch}, {height}x{width}, fp32, "
        f"{device}"
    )
    base = rows[0][1]
    for name, value in rows:
        print(f"  {name:<42} {value:8.1f} images/s  ({value / base:5.2f}x the baseline)")


if __name__ == "__main__":
    main()
