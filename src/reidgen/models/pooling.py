"""Global pooling of a feature map into one vector per image: ``[B, C, h, w] -> [B, C]``."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GlobalAvgPool(nn.Module):
    """Mean over the spatial positions: ``[B, C, h, w] -> [B, C]``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class GlobalMaxPool(nn.Module):
    """Maximum over the spatial positions: ``[B, C, h, w] -> [B, C]``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(dim=(2, 3))


class GeMPool(nn.Module):
    """Generalised-mean pooling (Radenović et al., 2018): ``(mean(x ** p)) ** (1 / p)``.

    ``[B, C, h, w] -> [B, C]``. ``p = 1`` is average pooling and ``p -> inf`` approaches max
    pooling; a trainable ``p`` lets the network choose in between (ES-Net's "P-pooling",
    ``docs/methods/esnet.md``). Inputs are expected to be non-negative (post-ReLU feature maps)
    and are clamped to ``eps`` so that fractional powers and their gradients stay finite.

    Computed as ``max * mean((x / max) ** p) ** (1 / p)`` per channel, which is the same value
    but never overflows: ``x ** p`` alone is infinite in float32 for ``x = 3, p = 100``.

    :param p: initial exponent.
    :param trainable: learn ``p`` (a parameter) or keep it fixed (a buffer, still saved).
    :param eps: lower clamp of the input.
    :param channels: None = one ``p`` for all channels; ``C`` = one per channel.
    :param p_range: ``(low, high)``: the exponent used is ``p`` clamped to it (the parameter
        itself is left as learned); None = unclamped.
    """

    def __init__(
        self,
        p: float = 3.0,
        trainable: bool = True,
        eps: float = 1e-6,
        channels: int | None = None,
        p_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        p_tensor = torch.full((channels or 1,), float(p))
        if trainable:
            self.p = nn.Parameter(p_tensor)
        else:
            self.register_buffer("p", p_tensor)
        self.eps = eps
        if p_range is not None and not 0 < p_range[0] <= p_range[1]:
            raise ValueError(f"p_range must be (low, high) with 0 < low <= high, got {p_range}")
        self.p_range = tuple(p_range) if p_range is not None else None

    def effective_p(self) -> Tensor:
        """The exponent(s) used, ``[1]`` or ``[C]``: ``p`` clamped to ``p_range``."""
        if self.p_range is None:
            return self.p
        return self.p.clamp(*self.p_range)

    def forward(self, x: Tensor) -> Tensor:
        x = x.clamp(min=self.eps)
        peak = x.detach().amax(dim=(2, 3), keepdim=True)
        p = self.effective_p().view(1, -1, 1, 1)
        return (x / peak).pow(p).mean(dim=(2, 3)).pow(1.0 / p.view(1, -1)) * peak.flatten(1)

    def extra_repr(self) -> str:
        p = self.p.detach()
        shown = f"{p.item():.4g}" if p.numel() == 1 else f"[{p.numel()} values]"
        return (
            f"p={shown}, trainable={isinstance(self.p, nn.Parameter)}, eps={self.eps}, "
            f"p_range={self.p_range}"
        )


class MixedPool(nn.Module):
    """A learnable mix of max and average pooling: ``alpha * GMP + (1 - alpha) * GAP`` with
    ``alpha = sigmoid(a)``, the second reading of ES-Net's P-pooling (``docs/methods/esnet.md``).

    ``[B, C, h, w] -> [B, C]``.

    :param alpha: initial ``alpha`` in (0, 1).
    """

    def __init__(self, alpha: float = 0.5) -> None:
        super().__init__()
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.logit = nn.Parameter(torch.logit(torch.tensor([float(alpha)])))

    @property
    def alpha(self) -> Tensor:
        """The weight of max pooling, ``[1]``."""
        return torch.sigmoid(self.logit)

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha
        return alpha * x.amax(dim=(2, 3)) + (1 - alpha) * x.mean(dim=(2, 3))
