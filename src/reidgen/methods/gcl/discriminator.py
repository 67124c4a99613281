"""GCL's multi-scale PatchGAN discriminator and its LSGAN losses with the R1 penalty.

As the official configuration (``docs/methods/gcl.md``, "Discriminator"): three scales, each the
same small network without normalisation on the image average-pooled once more than the last;
LSGAN targets 1 (real) and 0 (fake); R1 (the squared gradient of D on real images) weighted 0.01;
the generator's adversarial term carries the official factor 2.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reidgen.methods.gcl.generator import ConvBlock, ResBlock


def _scale_network(in_channels: int, dim: int, num_res: int) -> nn.Sequential:
    """One scale: ``[B, 3, H, W] -> [B, 1, H / 4, W / 4]`` logits."""
    return nn.Sequential(
        ConvBlock(in_channels, dim, 1, norm="none"),
        ConvBlock(dim, dim, 3, norm="none"),
        ConvBlock(dim, dim, 3, stride=2, norm="none"),
        ConvBlock(dim, dim, 3, norm="none"),
        ConvBlock(dim, 2 * dim, 3, stride=2, norm="none"),
        *[ResBlock(2 * dim, norm="none") for _ in range(num_res)],
        nn.Conv2d(2 * dim, 1, 1),
    )


class MultiScaleDiscriminator(nn.Module):
    """D: an image ``[B, 3, H, W]`` -> one logit map per scale, ``[B, 1, H / 4^s..., W / ...]``:
    scale ``s`` sees the image downsampled ``s`` times (3x3 average pooling, stride 2).

    :param dim: width of the first layers (official 32).
    :param num_scales: official 3.
    :param num_res: residual blocks per scale (official 4).
    """

    def __init__(
        self, in_channels: int = 3, dim: int = 32, num_scales: int = 3, num_res: int = 4
    ) -> None:
        super().__init__()
        self.scales = nn.ModuleList(
            _scale_network(in_channels, dim, num_res) for _ in range(num_scales)
        )
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> list[Tensor]:
        outputs = []
        for index, network in enumerate(self.scales):
            if index:
                images = self.downsample(images)
            outputs.append(network(images))
        return outputs


def r1_penalty(real_outputs: list[Tensor], real_images: Tensor) -> Tensor:
    """R1 over the scales: for each, the squared gradient of ``sum D(real)`` with respect to the
    real images, summed over pixels and averaged over the batch; summed over scales. The graph is
    kept (``create_graph``) so the penalty trains D. ``real_images`` must require grad."""
    penalty = real_images.new_zeros(())
    for output in real_outputs:
        (gradient,) = torch.autograd.grad(output.sum(), real_images, create_graph=True)
        penalty = penalty + gradient.pow(2).flatten(1).sum(1).mean()
    return penalty


def discriminator_loss(
    discriminator: MultiScaleDiscriminator, fake: Tensor, real: Tensor, r1_weight: float = 0.01
) -> Tensor:
    """LSGAN loss of D on one (fake, real) pair, summed over scales, plus ``r1_weight`` times the
    R1 penalty on the reals: ``sum_s mean(D_s(fake)^2) + mean((D_s(real) - 1)^2)``. ``fake`` is
    detached here: this loss trains D only."""
    real = real.detach().requires_grad_(r1_weight > 0)
    fake_outputs = discriminator(fake.detach())
    real_outputs = discriminator(real)
    loss = sum(
        (
            f.pow(2).mean() + (r - 1).pow(2).mean()
            for f, r in zip(fake_outputs, real_outputs, strict=True)
        ),
        start=real.new_zeros(()),
    )
    if r1_weight > 0:
        loss = loss + r1_weight * r1_penalty(real_outputs, real)
    return loss


def generator_adversarial_loss(discriminator: MultiScaleDiscriminator, fake: Tensor) -> Tensor:
    """The generator's LSGAN term for one fake batch: ``sum_s 2 * mean((D_s(fake) - 1)^2)`` (the
    official factor 2)."""
    return sum(
        (2 * (output - 1).pow(2).mean() for output in discriminator(fake)),
        start=fake.new_zeros(()),
    )
