"""Framework overhead of a training step: reidgen's Baseline under Lightning versus a plain PyTorch
loop over the same model, losses, optimizer and batches (in memory, so image decoding is not timed).

Target: the framework costs at most 5% more time per step.

    python benchmarks/bench_training_step.py [--steps 20] [--batch 64]
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from reidgen.methods.baseline import Baseline
from reidgen.models import GlobalAvgPool, ResNetBackbone

NUM_CLASSES = 100


class InMemoryBatches(Dataset):
    """Pre-made batches: [B, 3, H, W] images and P x K labels."""

    def __init__(self, count: int, batch: int, height: int, width: int) -> None:
        generator = torch.Generator().manual_seed(0)
        labels = torch.arange(batch // 4).repeat_interleave(4) % NUM_CLASSES
        self.batches = [
            {"image": torch.randn(batch, 3, height, width, generator=generator), "pid": labels}
            for _ in range(count)
        ]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batches[index]


def build_method() -> Baseline:
    torch.manual_seed(0)
    return Baseline(
        NUM_CLASSES,
        ResNetBackbone(18, last_stride=1),
        GlobalAvgPool(),
        optimizer=lambda params: torch.optim.Adam(params, lr=3.5e-4, weight_decay=5e-4),
    )


def plain_loop(data: InMemoryBatches, warmup: int) -> float:
    """Seconds per step of a hand-written loop."""
    method = build_method()
    optimizer = torch.optim.Adam(method.parameters(), lr=3.5e-4, weight_decay=5e-4)
    method.train()
    start = 0.0
    for step, batch in enumerate(data.batches):
        if step == warmup:
            start = time.perf_counter()
        output = method(batch["image"])
        loss = method.id_loss(output.logits, batch["pid"]) + method.triplet_loss(
            output.features, batch["pid"]
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / (len(data) - warmup)


class StepTimer(pl.Callback):
    """Wall time from the start of batch ``warmup`` to the end of training (CUDA synchronised)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def lightning_loop(data: InMemoryBatches, warmup: int) -> float:
    """Seconds per step of the same work driven by reidgen's method and Lightning's Trainer."""
    timer = StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[timer],
    )
    loader = DataLoader(data, batch_size=None, shuffle=False)
    trainer.fit(build_method(), train_dataloaders=loader)
    return (timer.end - timer.start) / (len(data) - warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", default="128x64")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    data = InMemoryBatches(args.steps + args.warmup, args.batch, height, width)
    # Alternate the two to spread machine noise over both.
    plain = [plain_loop(data, args.warmup)]
    framework = [lightning_loop(data, args.warmup)]
    plain.append(plain_loop(data, args.warmup))
    framework.append(lightning_loop(data, args.warmup))
    plain_time, framework_time = min(plain), min(framework)
    overhead = framework_time / plain_time - 1
    print(f"training step, ResNet-18 BoT baseline, batch {args.batch}, {height}x{width}, fp32, CPU")
    print(f"  plain PyTorch loop:        {plain_time * 1000:8.1f} ms/step")
    print(f"  reidgen under Lightning:   {framework_time * 1000:8.1f} ms/step")
    verdict = "meets" if overhead <= 0.05 else "MISSES"
    print(f"  framework overhead: {overhead * 100:+.1f}% (target at most +5%: {verdict})")


if __name__ == "__main__":
    main()
