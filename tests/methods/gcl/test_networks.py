"""GCL's generator and discriminator: shapes, the identity code's layout, AdaIN routing, the
norms against direct computations, gradients to every part, and the GAN losses by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reidgen.methods.gcl.discriminator import (
    MultiScaleDiscriminator,
    discriminator_loss,
    generator_adversarial_loss,
    r1_penalty,
)
from reidgen.methods.gcl.generator import (
    AdaptiveInstanceNorm2d,
    Generator,
    LayerNorm2d,
    StructureEncoder,
    part_code,
)

H, W = 128, 64  # the structure code (H/4 x W/4) must exceed ASPP's largest dilation, 9


def test_part_code_is_channel_major_stripe_means() -> None:
    feature_map = torch.randn(2, 5, 8, 3)
    code = part_code(feature_map)
    assert code.shape == (2, 20)
    for channel in range(5):
        for part in range(4):
            stripe = feature_map[:, channel, 2 * part : 2 * part + 2, :].mean(dim=(1, 2))
            torch.testing.assert_close(code[:, channel * 4 + part], stripe)


def test_structure_encoder_official_shape() -> None:
    encoder = StructureEncoder(in_channels=1, dim=16)
    assert encoder(torch.randn(2, 1, 256, 128)).shape == (2, 128, 64, 32)
    assert 0.3e6 < sum(p.numel() for p in encoder.parameters()) < 0.45e6  # spec: about 0.38 M


def test_generator_shapes_and_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    generator = Generator(code_dim=64, dim=4, mlp_dim=16)
    structure = torch.rand(3, 1, H, W) * 2 - 1
    code = torch.randn(3, 64, requires_grad=True)
    structure_code = generator.encode(structure)
    assert structure_code.shape == (3, 32, H // 4, W // 4)
    image = generator.decode(structure_code, code)
    assert image.shape == (3, 3, H, W)
    image.square().mean().backward()
    missing = [n for n, p in generator.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    assert code.grad is not None and code.grad.abs().sum() > 0


def test_code_slice_k_drives_residual_block_k_only() -> None:
    torch.manual_seed(0)
    decoder = Generator(code_dim=64, dim=4, mlp_dim=16).decoder
    code = torch.randn(2, 64)
    structure_code = torch.randn(2, 32, 4, 4)
    decoder(structure_code, code)
    before = [(layer.scale.clone(), layer.shift.clone()) for layer in decoder.adain]
    changed = code.clone()
    changed[:, 32:48] += 1.0  # slice 2 (0-based) of four
    decoder(structure_code, changed)
    moved = [
        not (torch.equal(s, layer.scale) and torch.equal(b, layer.shift))
        for (s, b), layer in zip(before, decoder.adain, strict=True)
    ]
    assert len(moved) == 8
    assert moved == [False, False, False, False, True, True, False, False]


def test_adain_uses_the_scale_as_given() -> None:
    layer = AdaptiveInstanceNorm2d(3)
    x = torch.randn(2, 3, 5, 4) * 3 + 1
    scale, shift = torch.tensor([[0.5, 2.0, 0.0]] * 2), torch.tensor([[1.0, -1.0, 3.0]] * 2)
    layer.set_style(scale, shift)
    y = layer(x)
    torch.testing.assert_close(y.mean(dim=(2, 3)), shift, atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(2, 3), unbiased=False), scale**2, atol=1e-3, rtol=1e-3)
    with pytest.raises(RuntimeError, match="set_style"):
        AdaptiveInstanceNorm2d(3)(x)


def test_layer_norm_matches_direct_computation() -> None:
    norm = LayerNorm2d(3)
    with torch.no_grad():
        norm.gamma.copy_(torch.tensor([0.5, 1.0, 2.0]))
        norm.beta.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.randn(2, 3, 4, 4)
    expected = torch.stack(
        [(sample - sample.mean()) / (sample.std(unbiased=True) + 1e-5) for sample in x]
    )
    expected = expected * norm.gamma.view(1, 3, 1, 1) + norm.beta.view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    assert ((LayerNorm2d(64).gamma >= 0) & (LayerNorm2d(64).gamma < 1)).all()


def test_discriminator_scales() -> None:
    discriminator = MultiScaleDiscriminator(dim=8)
    outputs = discriminator(torch.randn(2, 3, H, W))
    assert [tuple(o.shape) for o in outputs] == [(2, 1, 32, 16), (2, 1, 16, 8), (2, 1, 8, 4)]


class _Linear(nn.Module):
    """D_s(x) = sum(w_s * x) per sample: gradient w_s, so R1 = sum_s |w_s|^2 exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.randn(2, 3, 4, 4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [(w * x).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1) for w in self.weights]


def test_r1_and_lsgan_losses_by_hand() -> None:
    torch.manual_seed(0)
    discriminator = _Linear()
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    w = discriminator.weights.detach()
    real_leaf = real.clone().requires_grad_(True)
    torch.testing.assert_close(r1_penalty(discriminator(real_leaf), real_leaf), w.square().sum())
    scores_fake = [(ws * fake).sum(dim=(1, 2, 3)) for ws in w]
    scores_real = [(ws * real).sum(dim=(1, 2, 3)) for ws in w]
    lsgan = sum(
        f.square().mean() + (r - 1).square().mean()
        for f, r in zip(scores_fake, scores_real, strict=True)
    )
    torch.testing.assert_close(
        discriminator_loss(discriminator, fake, real, r1_weight=0.01),
        lsgan + 0.01 * w.square().sum(),
    )
    torch.testing.assert_close(
        generator_adversarial_loss(discriminator, fake),
        sum(2 * (f - 1).square().mean() for f in scores_fake),
    )


def test_discriminator_loss_trains_d_only_and_r1_reaches_d() -> None:
    torch.manual_seed(0)
    discriminator = MultiScaleDiscriminator(dim=4, num_res=1)
    fake = torch.randn(2, 3, H, W, requires_grad=True)
    discriminator_loss(discriminator, fake, torch.randn(2, 3, H, W)).backward()
    assert fake.grad is None
    assert all(p.grad is not None for p in discriminator.parameters())


def test_generator_learns_to_reconstruct() -> None:
    torch.manual_seed(0)
    generator = Generator(code_dim=16, dim=4, mlp_dim=16, aspp_dilations=(1, 1, 1))
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3)
    images, structure = torch.randn(4, 3, 32, 16), torch.rand(4, 1, 32, 16) * 2 - 1
    code = torch.randn(4, 16)
    losses = []
    for _ in range(40):
        loss = (generator.decode(generator.encode(structure), code) - images).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses[::10]
