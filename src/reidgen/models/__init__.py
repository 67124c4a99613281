"""Shared model building blocks: backbones (feature maps), global pooling, embedding heads."""

from reidgen.models.backbones import IBN, InstanceNormBottleneck, ResNetBackbone
from reidgen.models.heads import BNNeckHead, HeadOutput
from reidgen.models.pooling import GeMPool, GlobalAvgPool

__all__ = [
    "IBN",
    "BNNeckHead",
    "GeMPool",
    "GlobalAvgPool",
    "HeadOutput",
    "InstanceNormBottleneck",
    "ResNetBackbone",
]
