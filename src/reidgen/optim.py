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


class LossAdaptiveSchedule:
    """QAConv 2.1's loss-driven learning-rate drop and stopping rule (docs/methods/qaconv.md §6.1).

    After every epoch call :meth:`update` with the epoch's mean training loss. The loss of epoch
    ``base_epoch`` (0-based; 1 = the second epoch) is the reference. The first later epoch whose
    loss falls below ``step_factor`` x the reference multiplies every learning rate by ``gamma``
    (once), and training is then planned to run 50% longer: it stops after ``e + e // 2`` epochs,
    ``e`` being the number of epochs finished at the drop, and never after ``max_epochs``.

    The state (:meth:`state_dict`) goes into checkpoints, so a resumed run neither drops the
    learning rate twice nor forgets where to stop.
    """

    def __init__(
        self,
        step_factor: float = 0.7,
        gamma: float = 0.1,
        base_epoch: int = 1,
        max_epochs: int = 60,
    ) -> None:
        if not 0 < step_factor < 1:
            raise ValueError(f"step_factor must be in (0, 1), got {step_factor}")
        if base_epoch < 0 or max_epochs < 1:
            raise ValueError(
                f"need base_epoch >= 0 and max_epochs >= 1, got {base_epoch}, {max_epochs}"
            )
        self.step_factor = step_factor
        self.gamma = gamma
        self.base_epoch = base_epoch
        self.max_epochs = max_epochs
        self.base_loss: float | None = None
        self.stepped_at: int | None = None
        self.final_epochs = max_epochs

    def update(self, epoch: int, loss: float) -> tuple[bool, bool]:
        """Record epoch ``epoch``'s (0-based) mean loss; returns ``(drop_lr, stop)``."""
        drop = False
        if epoch == self.base_epoch:
            self.base_loss = loss
        elif (
            self.base_loss is not None
            and self.stepped_at is None
            and loss < self.step_factor * self.base_loss
        ):
            finished = epoch + 1
            self.stepped_at = finished
            self.final_epochs = min(self.max_epochs, finished + finished // 2)
            drop = True
        return drop, epoch + 1 >= self.final_epochs

    def state_dict(self) -> dict[str, float | int | None]:
        return {
            "base_loss": self.base_loss,
            "stepped_at": self.stepped_at,
            "final_epochs": self.final_epochs,
        }

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        self.base_loss = state["base_loss"]
        self.stepped_at = state["stepped_at"]
        self.final_epochs = int(state["final_epochs"])


class ExponentialDecayLR(LRScheduler):
    """The AlignedReID reproduction's "exp" schedule, stepped once per epoch (0-based ``e``):
    the base rate until ``start_epoch``, then ``base * final_factor ** ((e + 1 - start_epoch) /
    (total_epochs - start_epoch))``, reaching ``final_factor`` x base after the last epoch.

    With the reproduction's 1-based ``E0 = 151, T = 300``: ``start_epoch=150, total_epochs=300``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_epoch: int = 150,
        total_epochs: int = 300,
        final_factor: float = 0.001,
        last_epoch: int = -1,
    ) -> None:
        if not 0 <= start_epoch < total_epochs:
            raise ValueError(
                f"need 0 <= start_epoch < total_epochs, got {start_epoch} and {total_epochs}"
            )
        self.start_epoch = start_epoch
        self.total_epochs = total_epochs
        self.final_factor = final_factor
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch: int) -> float:
        if epoch < self.start_epoch:
            return 1.0
        progress = (epoch + 1 - self.start_epoch) / (self.total_epochs - self.start_epoch)
        return self.final_factor ** min(progress, 1.0)

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
