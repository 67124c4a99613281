"""Global pooling of a feature map into one vector per image: ``[B, C, h, w] -> [B, C]``."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GlobalAvgPool(nn.Module):
    """Mean over the spatial positions: ``[B, C, h, w] -> [B, C]``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class GeMPool(nn.Module):
    """Generalised-mean pooling (Radenović et al., 2018): ``(mean(x ** p)) ** (1 / p)``.

    ``[B, C, h, w] -> [B, C]``. ``p = 1`` is average pooling and ``p -> inf`` approaches max
    pooling; a trainable ``p`` lets the network choose in between. Inputs are expected to be
    non-negative (post-ReLU feature maps) and are clamped to ``eps`` so that fractional powers
    and their gradients stay finite.

    :param p: initial exponent.
    :param trainable: learn ``p`` (a parameter) or keep it fixed (a buffer, still saved).
    :param eps: lower clamp of the input.
    """

    def __init__(self, p: float = 3.0, trainable: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        p_tensor = torch.tensor([float(p)])
        if trainable:
            self.p = nn.Parameter(p_tensor)
        else:
            self.register_buffer("p", p_tensor)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return (
            f"p={self.p.item():.4g}, trainable={isinstance(self.p, nn.Parameter)}, eps={self.eps}"
        )
