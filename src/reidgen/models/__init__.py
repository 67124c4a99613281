"""Shared model building blocks: backbones (feature maps), global pooling, embedding heads, a
domain discriminator."""

from reidgen.models.backbones import IBN, InstanceNormBottleneck, ResNetBackbone
from reidgen.models.heads import BNNeckHead, DomainDiscriminator, HeadOutput, LinearHead
from reidgen.models.pooling import GeMPool, GlobalAvgPool, GlobalMaxPool, MixedPool

__all__ = [
    "IBN",
    "BNNeckHead",
    "DomainDiscriminator",
    "GeMPool",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "HeadOutput",
    "InstanceNormBottleneck",
    "LinearHead",
    "MixedPool",
    "ResNetBackbone",
]
