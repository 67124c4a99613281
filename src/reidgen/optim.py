"""Learning-rate schedules shared by the methods."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupMultiStepLR(LRScheduler):
    """Linear warm-up from ``warmup_factor`` x lr over ``warmup_epochs``, then x ``gamma`` at each
    milestone (BoT's schedule). Stepped once per epoch."""

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Sequence[int] = (40, 70),
        gamma: float = 0.1,
        warmup_epochs: int = 10,
        warmup_factor: float = 0.01,
        last_epoch: int = -1,
    ) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {list(milestones)}")
        self.milestones = list(milestones)
        self.gamma = gamma
        self.warmup_epochs = warmup_epochs
        self.warmup_factor = warmup_factor
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch: int) -> float:
        warmup = 1.0
        if epoch < self.warmup_epochs:
            progress = epoch / self.warmup_epochs
            warmup = self.warmup_factor * (1 - progress) + progress
        return warmup * self.gamma ** bisect_right(self.milestones, epoch)

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
