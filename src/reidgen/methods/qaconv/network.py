"""QAConv's feature-map network: backbone up to layer3, a neck, per-location L2 normalisation.

``forward(images [B, 3, H, W]) -> maps [B, D, h, w]`` with every location's ``D``-vector of unit
norm, so that the matcher's local dot products are cosines (``docs/methods/qaconv.md`` §2).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

NECKS = ("2.1", "1.x")


class FeatureMapNet(nn.Module):
    """Backbone -> neck -> L2 normalisation over channels at every location.

    :param backbone: ``[B, 3, H, W] -> [B, C, h, w]`` with ``out_channels`` and
        ``output_size(H, W)`` (:class:`reidgen.models.ResNetBackbone` with ``out_stage=3``).
    :param neck_channels: ``D``; ``0`` keeps the backbone's ``C`` channels without a neck.
    :param neck: ``"2.1"``: one 3x3 conv with bias (QAConv 2.1); ``"1.x"``: 3x3 conv without
        bias followed by ``BatchNorm2d`` (QAConv 1.0-2.0). Neither has a ReLU.
    """

    def __init__(self, backbone: nn.Module, neck_channels: int = 128, neck: str = "2.1") -> None:
        super().__init__()
        if neck not in NECKS:
            raise ValueError(f"neck must be one of {NECKS}, got {neck!r}")
        if neck_channels < 0:
            raise ValueError(f"neck_channels must be >= 0, got {neck_channels}")
        self.backbone = backbone
        channels = backbone.out_channels
        if neck_channels == 0:
            self.neck: nn.Module = nn.Identity()
            self.out_channels = channels
        elif neck == "2.1":
            self.neck = nn.Conv2d(channels, neck_channels, 3, padding=1, bias=True)
            self.out_channels = neck_channels
        else:
            self.neck = nn.Sequential(
                nn.Conv2d(channels, neck_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(neck_channels),
            )
            self.out_channels = neck_channels

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the maps for ``height x width`` inputs (the neck keeps the size)."""
        return self.backbone.output_size(height, width)

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.neck(self.backbone(images)), dim=1)
