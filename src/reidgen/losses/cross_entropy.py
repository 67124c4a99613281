"""Identity (classification) loss with label smoothing."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against smoothed targets, as in "Bag of Tricks" (Luo et al., 2019).

    The target of a sample of class ``y`` among ``N`` classes is ``q = (1 - eps) * onehot(y) +
    eps / N`` and the loss is ``mean_b sum_c -q_c log softmax(logits)_c``. PyTorch's
    ``cross_entropy(label_smoothing=eps)`` computes exactly this (``(1 - eps) * NLL + eps *
    mean_c(-log p_c)``); the test suite checks it against the formula.

    ``forward(logits [B, N], targets [B] int64) -> scalar``.

    :param epsilon: the smoothing.
    :param temperature: the logits are divided by it first (DomainMix: 2, see
        ``docs/methods/domainmix.md``).
    """

    def __init__(self, epsilon: float = 0.1, temperature: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.epsilon = epsilon
        self.temperature = temperature

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return F.cross_entropy(logits, targets, label_smoothing=self.epsilon)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, temperature={self.temperature}"
