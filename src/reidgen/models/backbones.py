"""ResNet backbones (18/34/50, IBN-a/IBN-b) that return a feature map, never logits.

Built on torchvision's ResNets so that parameter names stay torchvision's (``conv1``, ``bn1``,
``layer1.0.conv1``, ...): torchvision ImageNet checkpoints load without renaming. The IBN modules
use the attribute names of the IBN-Net release (``IN``, ``BN``) for the same reason, so its
ImageNet checkpoints (``resnet50_ibn_a-d9d0bb7b.pth``, ``resnet50_ibn_b-9ca61e85.pth``) load too.

Nothing here downloads: ``pretrained="imagenet"`` only looks in torch's local hub cache.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum, resnet
from torchvision.models.resnet import Bottleneck

log = logging.getLogger(__name__)

# depth -> (torchvision constructor, ImageNet weights in order of preference). ResNet-50 V1 comes
# first because it is what the re-id papers (BoT and later) were trained from; V2 is accepted.
_RESNETS: dict[int, tuple[Callable[..., resnet.ResNet], tuple[WeightsEnum, ...]]] = {
    18: (resnet.resnet18, (resnet.ResNet18_Weights.IMAGENET1K_V1,)),
    34: (resnet.resnet34, (resnet.ResNet34_Weights.IMAGENET1K_V1,)),
    50: (
        resnet.resnet50,
        (resnet.ResNet50_Weights.IMAGENET1K_V1, resnet.ResNet50_Weights.IMAGENET1K_V2),
    ),
}

# ImageNet checkpoints of the IBN-Net release (github.com/XingangPan/IBN-Net, v1.0); torchvision
# has none, and its hub entry point caches them under these names.
_IBN_RELEASE = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/"
_IBN_IMAGENET = {"a": "resnet50_ibn_a-d9d0bb7b.pth", "b": "resnet50_ibn_b-9ca61e85.pth"}


class IBN(nn.Module):
    """Instance-batch normalisation of IBN-Net-a: InstanceNorm on the first half of the channels,
    BatchNorm on the rest.

    ``[B, C, H, W] -> [B, C, H, W]``. The IN half removes per-image appearance (colour, contrast,
    style) while the BN half keeps the discriminative content statistics.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: Tensor) -> Tensor:
        instance_part, batch_part = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(instance_part), self.BN(batch_part)], dim=1)


class InstanceNormBottleneck(nn.Module):
    """A torchvision ``Bottleneck`` with InstanceNorm after the residual sum (IBN-Net-b).

    Takes over the given block's (already initialised) layers under their original names, so
    that state-dict keys are unchanged apart from the added ``IN``.
    ``[B, C_in, H, W] -> [B, C_out, H/stride, W/stride]``.
    """

    def __init__(self, block: Bottleneck) -> None:
        super().__init__()
        self.conv1, self.bn1 = block.conv1, block.bn1
        self.conv2, self.bn2 = block.conv2, block.bn2
        self.conv3, self.bn3 = block.conv3, block.bn3
        self.relu = block.relu
        self.downsample = block.downsample
        self.IN = nn.InstanceNorm2d(block.bn3.num_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.IN(out + identity))


def _apply_ibn_a(net: resnet.ResNet) -> None:
    """IBN-a: the first norm of every bottleneck in layer1..layer3 becomes an :class:`IBN`.

    layer4 stays BN-only: the paper keeps IN out of the last stage so that the final features
    remain discriminative.
    """
    for layer in (net.layer1, net.layer2, net.layer3):
        for block in layer:
            block.bn1 = IBN(block.bn1.num_features)


def _apply_ibn_b(net: resnet.ResNet) -> None:
    """IBN-b: InstanceNorm replaces the stem's BN, and follows the residual sum of the last
    block of layer1 and layer2 (as in the IBN-Net paper and release)."""
    net.bn1 = nn.InstanceNorm2d(net.bn1.num_features, affine=True)
    for layer in (net.layer1, net.layer2):
        layer[-1] = InstanceNormBottleneck(layer[-1])


def _set_last_stride_one(net: resnet.ResNet) -> None:
    """Make layer4 keep its input resolution (BoT's last-stride trick: 2x finer final map).

    Only the first block of layer4 downsamples: in one of its 3x3 convs and in its shortcut.
    Strides do not change parameter shapes, so pretrained weights still fit.
    """
    for module in net.layer4[0].modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)


def imagenet_weight_paths(depth: int, ibn: str | None) -> list[Path]:
    """Where ``pretrained="imagenet"`` looks, in order: torch's hub cache (``$TORCH_HOME``)."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if ibn is not None:
        return [cache / _IBN_IMAGENET[ibn]]
    return [cache / Path(weights.url).name for weights in _RESNETS[depth][1]]


def _imagenet_urls(depth: int, ibn: str | None) -> list[str]:
    if ibn is not None:
        return [_IBN_RELEASE + _IBN_IMAGENET[ibn]]
    return [weights.url for weights in _RESNETS[depth][1]]


def _find_imagenet_weights(depth: int, ibn: str | None) -> Path:
    candidates = imagenet_weight_paths(depth, ibn)
    for path in candidates:
        if path.is_file():
            return path
    looked = "\n".join(f"  {p}" for p in candidates)
    sources = "\n".join(f"  {u}" for u in _imagenet_urls(depth, ibn))
    raise FileNotFoundError(
        f"ImageNet weights for ResNet-{depth}{'-IBN-' + ibn if ibn else ''} not found. "
        f"Looked in:\n{looked}\n"
        "reidgen never downloads weights. Copy the file (published at\n"
        f"{sources}\n) to that location (the cache folder follows $TORCH_HOME), or pass "
        "pretrained=<path to a .pth state dict>."
    )


def unwrap_state_dict(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """A state dict out of ``{"state_dict": ...}`` checkpoints and without ``module.`` prefixes
    (DataParallel), the two forms in which released re-id models circulate."""
    if "state_dict" in state:
        state = state["state_dict"]
    return {key.removeprefix("module."): value for key, value in state.items()}


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Load a state dict file (see :func:`unwrap_state_dict`)."""
    return unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))


class ResNetBackbone(nn.Module):
    """ResNet-18/34/50 trunk (optionally IBN-a/IBN-b) returning the feature map of one stage.

    ``forward(images [B, 3, H, W]) -> features [B, out_channels, h, w]`` with ``h = H / 32``
    (``H / 16`` with ``last_stride=1``) for ``out_stage=4``, and ``H / 4 / 2**(out_stage-1)``
    for earlier taps. Stages after ``out_stage`` are not built at all, so they hold no parameters
    (no unused parameters under DDP). ``last_stride`` only matters when ``out_stage == 4``.

    :param depth: 18, 34 or 50.
    :param last_stride: stride of layer4 (BoT and most re-id methods use 1).
    :param ibn: ``"a"`` or ``"b"`` for IBN-Net variants (ResNet-50 only), or ``None``.
    :param pretrained: ``None`` (random init), a path to a ``.pth`` state dict, or ``"imagenet"``
        for the standard ImageNet weights found in torch's hub cache (never downloaded).
    :param out_stage: 1..4, the stage (layer1..layer4) whose output is returned.
    """

    def __init__(
        self,
        depth: int = 50,
        last_stride: int = 1,
        ibn: str | None = None,
        pretrained: str | os.PathLike[str] | None = None,
        out_stage: int = 4,
    ) -> None:
        super().__init__()
        if depth not in _RESNETS:
            raise ValueError(f"depth must be one of {sorted(_RESNETS)}, got {depth}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        if ibn not in (None, "a", "b"):
            raise ValueError(f"ibn must be 'a', 'b' or None, got {ibn!r}")
        if ibn is not None and depth != 50:
            raise ValueError(f"IBN variants are implemented for depth 50 only, got {depth}")
        if out_stage not in (1, 2, 3, 4):
            raise ValueError(f"out_stage must be 1..4, got {out_stage}")
        self.depth, self.ibn, self.out_stage = depth, ibn, out_stage
        self.last_stride = last_stride

        build, _ = _RESNETS[depth]
        net = build(weights=None)
        if ibn == "a":
            _apply_ibn_a(net)
        elif ibn == "b":
            _apply_ibn_b(net)
        if last_stride == 1:
            _set_last_stride_one(net)

        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        for stage in range(1, out_stage + 1):
            setattr(self, f"layer{stage}", getattr(net, f"layer{stage}"))
        expansion = 4 if depth == 50 else 1
        self.out_channels = 64 * 2 ** (out_stage - 1) * expansion

        if pretrained is not None:
            self.load_pretrained(pretrained)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of the feature map for ``height x width`` inputs, without running the net.

        Every stride-2 layer (conv1, maxpool, the first block of layer2.. and of layer4 unless
        ``last_stride == 1``) pads so that it maps a size ``n`` to ``ceil(n / 2)``.
        """
        halvings = 2 + min(self.out_stage, 3) - 1
        if self.out_stage == 4 and self.last_stride == 2:
            halvings += 1
        for _ in range(halvings):
            height, width = -(-height // 2), -(-width // 2)
        return height, width

    def forward(self, images: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        for stage in range(1, self.out_stage + 1):
            x = getattr(self, f"layer{stage}")(x)
        return x

    def load_pretrained(self, pretrained: str | os.PathLike[str]) -> None:
        """Load ``"imagenet"`` (hub cache) or a local state-dict file into this backbone.

        The classifier (``fc.*``) and stages after ``out_stage`` are dropped on purpose. Plain
        ResNets then require an exact key match (``RuntimeError`` listing the differences).
        IBN variants load what matches and log a warning listing missing and unexpected keys,
        so that e.g. a plain torchvision ResNet-50 can initialise everything but the IN layers;
        a file sharing no key at all with the model is an error.
        """
        if isinstance(pretrained, str) and pretrained == "imagenet":
            path = _find_imagenet_weights(self.depth, self.ibn)
        else:
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"pretrained weights file not found: {path}")

        dropped = ("fc.", *(f"layer{s}." for s in range(self.out_stage + 1, 5)))
        state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith(dropped)}
        result = self.load_state_dict(state, strict=False)
        missing, unexpected = result.missing_keys, result.unexpected_keys
        if missing or unexpected:
            details = f"missing keys: {missing}\nunexpected keys: {unexpected}"
            if self.ibn is None:
                raise RuntimeError(f"{path} does not match ResNet-{self.depth}:\n{details}")
            if len(unexpected) == len(state):
                raise RuntimeError(f"{path} shares no parameter with ResNet-50-IBN-{self.ibn}")
            log.warning(
                "%s loaded partially into ResNet-50-IBN-%s (the rest keeps its random init)\n%s",
                path,
                self.ibn,
                details,
            )
        log.info("loaded pretrained backbone weights from %s", path)
