"""DomainMix's domain balance loss: the feature extractor's side of the adversarial game."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DomainBalanceLoss(nn.Module):
    """``mean_b sum_c (p_bc log p_bc + 1 / C)`` with ``p = softmax(domain_logits)`` (no
    temperature), i.e. ``1 - H(p)`` averaged over the batch for two domains.

    Minimising it maximises the entropy of the domain discriminator's prediction: the features
    should leave it unable to tell synthetic from real. The minimum, at equal logits, is
    ``1 - ln 2`` for two domains (``docs/methods/domainmix.md``).

    ``forward(domain_logits [B, C]) -> scalar``.
    """

    def forward(self, domain_logits: Tensor) -> Tensor:
        log_p = torch.log_softmax(domain_logits.float(), dim=1)
        per_sample = (log_p.exp() * log_p).sum(dim=1) + 1.0
        return per_sample.mean()
