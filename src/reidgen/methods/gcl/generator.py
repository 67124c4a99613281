"""GCL's generator: a structure encoder and an AdaIN decoder driven by the identity code.

The design is DG-Net's, as GCL uses it (``docs/methods/gcl.md``, "Generator"): the structure
encoder turns a one-channel, identity-neutral structure map into a spatial code; the decoder
re-draws a person from that code, every residual block modulated (AdaIN) by scales and shifts
that MLPs compute from one quarter of the identity code. The identity code is the re-ID model's
own 4-stripe feature (:func:`part_code`), so the decoder can only draw what the re-ID model
encodes.

Sizes follow the official configuration at ``dim=16`` (structure code ``8 * dim = 128``
channels, MLPs ``512`` wide); smaller ``dim`` / ``mlp_dim`` make a CPU-sized generator with the
same layout. All convolutions pad by reflection; the output is in the images' own normalised
space (no tanh), as the official decoder's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_PARTS = 4  # horizontal stripes of the identity code, one per decoder residual block


def part_code(feature_map: Tensor, num_parts: int = NUM_PARTS) -> Tensor:
    """The generator's identity code: ``[B, C, h, w] -> [B, C * num_parts]``, the map averaged in
    ``num_parts`` horizontal stripes and flattened channel-major (entry ``c * num_parts + p``), as
    the official code flattens it, so each quarter of the code holds a quarter of the channels
    over all stripes."""
    return F.adaptive_avg_pool2d(feature_map, (num_parts, 1)).flatten(1)


class LayerNorm2d(nn.Module):
    """DG-Net's layer norm: each sample normalised over (C, H, W) with the unbiased std, then a
    per-channel scale (initialised uniform in [0, 1)) and shift (0). ``[B, C, H, W]`` in and out."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.rand(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        std = flat.std(dim=1).view(-1, 1, 1, 1)
        x = (x - mean) / (std + self.eps)
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class AdaptiveInstanceNorm2d(nn.Module):
    """Instance norm whose per-sample scale and shift come from outside: ``set_style(scale,
    shift)`` (``[B, C]`` each) before every forward. The scale is used as it is (not
    ``1 + scale``), as in the official decoder."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.scale: Tensor | None = None
        self.shift: Tensor | None = None

    def set_style(self, scale: Tensor, shift: Tensor) -> None:
        self.scale, self.shift = scale, shift

    def forward(self, x: Tensor) -> Tensor:
        if self.scale is None or self.shift is None:
            raise RuntimeError("AdaptiveInstanceNorm2d needs set_style(scale, shift) first")
        x = F.instance_norm(x, eps=self.eps)
        return x * self.scale[:, :, None, None] + self.shift[:, :, None, None]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "in":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "ln":
        return LayerNorm2d(channels)
    if kind == "adain":
        return AdaptiveInstanceNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected in, ln, adain or none")


class ConvBlock(nn.Sequential):
    """Reflection-padded convolution, norm (``in``, ``ln``, ``adain``, ``none``), LeakyReLU(0.2)
    unless ``activation=False``. ``[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        norm: str = "in",
        activation: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = []
        if padding:
            layers.append(nn.ReflectionPad2d(padding))
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, dilation=dilation),
            _norm(norm, out_channels),
        ]
        if activation:
            layers.append(nn.LeakyReLU(0.2))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """``x + conv(norm, LReLU) -> conv(norm)``, channels and size kept."""

    def __init__(self, channels: int, norm: str = "in") -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBlock(channels, channels, 3, norm=norm),
            ConvBlock(channels, channels, 3, norm=norm, activation=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of the structure encoder: a 1x1 branch and three 1x1 ->
    dilated 3x3 branches (dilations 3, 6, 9), ``channels // 2`` each, concatenated and fused by a
    1x1 conv. ``[B, C, H, W] -> [B, 2C, H, W]``."""

    def __init__(self, channels: int, dilations: Sequence[int] = (3, 6, 9)) -> None:
        super().__init__()
        branch = channels // 2
        self.branches = nn.ModuleList([ConvBlock(channels, branch, 1, activation=False)])
        for dilation in dilations:
            self.branches.append(
                nn.Sequential(
                    ConvBlock(channels, branch, 1),
                    ConvBlock(branch, branch, 3, dilation=dilation, activation=False),
                )
            )
        width = branch * (len(dilations) + 1)
        self.fuse = ConvBlock(width, width, 1, activation=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))


class StructureEncoder(nn.Module):
    """E_str: structure map ``[B, in_channels, H, W]`` -> structure code ``[B, 8 * dim, H / 4,
    W / 4]`` (two stride-2 convs, residual blocks, ASPP; instance norm, no final activation)."""

    def __init__(
        self,
        in_channels: int = 1,
        dim: int = 16,
        num_res: int = 4,
        aspp_dilations: Sequence[int] = (3, 6, 9),
    ) -> None:
        super().__init__()
        self.out_channels = 8 * dim
        self.net = nn.Sequential(
            ConvBlock(in_channels, dim, 3, stride=2),
            ConvBlock(dim, 2 * dim, 3),
            ConvBlock(2 * dim, 2 * dim, 3),
            ConvBlock(2 * dim, 4 * dim, 3, stride=2),
            *[ResBlock(4 * dim) for _ in range(num_res)],
            ASPP(4 * dim, aspp_dilations),
        )

    def forward(self, structure: Tensor) -> Tensor:
        return self.net(structure)


class StyleMLPs(nn.Module):
    """The AdaIN parameter MLPs: for each of ``NUM_PARTS`` slices of the identity code one MLP for
    scales and one for shifts (Linear-LReLU-Linear-LReLU-Linear), each giving the ``2 * channels``
    values of one residual block's two AdaIN layers. ``[B, code_dim] -> ([B, 2 * parts *
    channels], same)``."""

    def __init__(self, code_dim: int, channels: int, mlp_dim: int = 512) -> None:
        super().__init__()
        if code_dim % NUM_PARTS:
            raise ValueError(f"identity code of {code_dim} values is not {NUM_PARTS} equal slices")
        self.slice = code_dim // NUM_PARTS

        def mlp() -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(self.slice, mlp_dim),
                nn.LeakyReLU(0.2),
                nn.Linear(mlp_dim, mlp_dim),
                nn.LeakyReLU(0.2),
                nn.Linear(mlp_dim, 2 * channels),
            )

        self.scales = nn.ModuleList(mlp() for _ in range(NUM_PARTS))
        self.shifts = nn.ModuleList(mlp() for _ in range(NUM_PARTS))

    def forward(self, identity_code: Tensor) -> tuple[Tensor, Tensor]:
        slices = identity_code.split(self.slice, dim=1)
        scales = torch.cat([mlp(part) for mlp, part in zip(self.scales, slices, strict=True)], 1)
        shifts = torch.cat([mlp(part) for mlp, part in zip(self.shifts, slices, strict=True)], 1)
        return scales, shifts


class Decoder(nn.Module):
    """G: structure code ``[B, 8 * dim, h, w]`` + identity code ``[B, code_dim]`` -> image
    ``[B, out_channels, 4h, 4w]``: ``NUM_PARTS`` AdaIN residual blocks (block k modulated by
    code slice k), two nearest-upsample + 5x5 conv + layer-norm stages, two 3x3 convs, a 1x1
    conv with no activation."""

    def __init__(
        self, code_dim: int, dim: int = 16, mlp_dim: int = 512, out_channels: int = 3
    ) -> None:
        super().__init__()
        channels = 8 * dim
        self.blocks = nn.ModuleList(ResBlock(channels, norm="adain") for _ in range(NUM_PARTS))
        self.styles = StyleMLPs(code_dim, channels, mlp_dim)
        self.adain = [m for m in self.blocks.modules() if isinstance(m, AdaptiveInstanceNorm2d)]
        self.upsample = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            ConvBlock(channels, channels // 2, 5, norm="ln"),
            nn.Upsample(scale_factor=2, mode="nearest"),
            ConvBlock(channels // 2, channels // 4, 5, norm="ln"),
            ConvBlock(channels // 4, channels // 4, 3, norm="none"),
            ConvBlock(channels // 4, channels // 4, 3, norm="none"),
            nn.Conv2d(channels // 4, out_channels, 1),
        )

    def forward(self, structure_code: Tensor, identity_code: Tensor) -> Tensor:
        scales, shifts = self.styles(identity_code)
        # Module order: block 1 conv a, block 1 conv b, block 2 conv a, ...; code slice k's MLP
        # output (2 * channels) covers block k's two layers.
        width = self.adain[0].channels
        for layer, scale, shift in zip(
            self.adain, scales.split(width, dim=1), shifts.split(width, dim=1), strict=True
        ):
            layer.set_style(scale, shift)
        x = structure_code
        for block in self.blocks:
            x = block(x)
        return self.upsample(x)


class Generator(nn.Module):
    """E_str + G: ``encode(structure)`` gives the structure code, ``decode(code, identity)`` the
    image. The identity encoder is the re-ID model and lives in the method, not here.

    :param code_dim: length of the identity code (``channels * NUM_PARTS`` of the re-ID map).
    :param structure_channels: channels of the structure maps (1: a grey render).
    :param dim: base width (official 16).
    :param num_res: residual blocks of the structure encoder (official 4).
    :param mlp_dim: width of the AdaIN MLPs (official 512).
    :param aspp_dilations: of the structure encoder's ASPP (official 3, 6, 9: reflection padding
        needs a structure code, ``H / 4 x W / 4``, larger than the largest).
    """

    def __init__(
        self,
        code_dim: int,
        structure_channels: int = 1,
        dim: int = 16,
        num_res: int = 4,
        mlp_dim: int = 512,
        aspp_dilations: Sequence[int] = (3, 6, 9),
    ) -> None:
        super().__init__()
        self.structure_encoder = StructureEncoder(structure_channels, dim, num_res, aspp_dilations)
        self.decoder = Decoder(code_dim, dim, mlp_dim)
        self.apply(kaiming_init)

    def encode(self, structure: Tensor) -> Tensor:
        """``[B, structure_channels, H, W] -> [B, 8 * dim, H / 4, W / 4]``."""
        return self.structure_encoder(structure)

    def decode(self, structure_code: Tensor, identity_code: Tensor) -> Tensor:
        """``[B, 8 * dim, h, w]`` and ``[B, code_dim]`` -> ``[B, 3, 4h, 4w]``."""
        return self.decoder(structure_code, identity_code)


def kaiming_init(module: nn.Module) -> None:
    """The official generator's initialisation: Kaiming normal (fan in) weights, zero biases,
    for every convolution and linear layer."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
