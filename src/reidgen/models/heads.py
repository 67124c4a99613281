"""Embedding heads on pooled features ``[B, C]``."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class HeadOutput:
    """What a head returns for a batch of ``B`` pooled feature vectors.

    Attributes:
        features: ``[B, C]`` before the BN neck (metric losses such as triplet use these).
        bn_features: ``[B, C]`` after the BN neck (the retrieval embedding).
        logits: ``[B, num_classes]`` identity logits (for the ID loss; methods may ignore them).
    """

    features: Tensor
    bn_features: Tensor
    logits: Tensor


class BNNeckHead(nn.Module):
    """BNNeck of "Bag of Tricks" (Luo et al., 2019): BatchNorm1d between the triplet-loss space
    and the classifier.

    ``forward(features [B, C]) -> HeadOutput``. The BN bias is fixed at zero (not trained), as in
    BoT, so the normalised features stay centred on the origin, where the bias-free classifier's
    decision boundaries pass. BN starts at weight 1 / bias 0 and the classifier at
    N(0, 0.001^2), as BoT does.

    :param in_channels: ``C``, the pooled feature size.
    :param num_classes: number of training identities.
    :param bias_free_classifier: the classifier has no bias (BoT); ``False`` adds one, initialised
        0.
    """

    def __init__(
        self, in_channels: int, num_classes: int, bias_free_classifier: bool = True
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_channels)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_channels, num_classes, bias=not bias_free_classifier)
        nn.init.normal_(self.classifier.weight, std=0.001)
        if self.classifier.bias is not None:
            nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Tensor) -> HeadOutput:
        bn_features = self.bn(features)
        return HeadOutput(features, bn_features, self.classifier(bn_features))


class LinearHead(nn.Module):
    """A classifier straight on the features, no BN neck (BDB's branches): the triplet loss,
    the ID loss and retrieval all see the same vector.

    ``forward(features [B, C]) -> HeadOutput`` with ``bn_features`` = ``features``.

    :param in_channels: ``C``, the pooled feature size.
    :param num_classes: number of training identities.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(in_channels, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: Tensor) -> HeadOutput:
        return HeadOutput(features, features, self.classifier(features))


class DomainDiscriminator(nn.Module):
    """Which domain a feature comes from (DomainMix's ``classifier_D``): an MLP of Linear,
    BatchNorm1d and LeakyReLU(0.2) layers, then a linear layer to the domain logits.

    ``forward(features [B, C]) -> [B, num_domains]`` logits.

    :param in_channels: ``C``.
    :param num_domains: 2 for synthetic and real.
    :param hidden: widths of the hidden layers; None halves ``C`` three times (DomainMix on
        ResNet-50: 2048 -> 1024 -> 512 -> 256 -> 2).
    """

    def __init__(
        self, in_channels: int, num_domains: int = 2, hidden: tuple[int, ...] | None = None
    ) -> None:
        super().__init__()
        if hidden is None:
            hidden = (in_channels // 2, in_channels // 4, in_channels // 8)
        layers: list[nn.Module] = []
        width = in_channels
        for size in hidden:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.LeakyReLU(0.2)]
            width = size
        layers.append(nn.Linear(width, num_domains))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)
