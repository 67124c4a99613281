"""Backbones, pooling and heads: shapes, IBN placement, offline pretrained loading."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from reidgen.models import (
    IBN,
    BNNeckHead,
    DomainDiscriminator,
    GeMPool,
    GlobalAvgPool,
    GlobalMaxPool,
    InstanceNormBottleneck,
    LinearHead,
    MixedPool,
    ResNetBackbone,
)
from reidgen.models.backbones import imagenet_weight_paths

IMAGE_SIZE = (64, 32)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *IMAGE_SIZE)


def _instance_norm_names(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, nn.InstanceNorm2d)}


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


# --- backbone shapes ----------------------------------------------------------------------------


@pytest.mark.parametrize(("depth", "channels"), [(18, 512), (34, 512), (50, 2048)])
def test_backbone_output_shape_per_depth(depth: int, channels: int) -> None:
    model = ResNetBackbone(depth=depth, last_stride=2).eval()
    with torch.no_grad():
        out = model(_images())
    assert model.out_channels == channels
    assert out.shape == (2, channels, 2, 1)


def test_last_stride_one_doubles_final_resolution() -> None:
    strided = ResNetBackbone(depth=18, last_stride=2).eval()
    full = ResNetBackbone(depth=18, last_stride=1).eval()
    with torch.no_grad():
        assert strided(_images()).shape[-2:] == (2, 1)
        assert full(_images()).shape[-2:] == (4, 2)
    # Same parameter shapes either way, so one checkpoint serves both.
    assert {k: v.shape for k, v in strided.state_dict().items()} == {
        k: v.shape for k, v in full.state_dict().items()
    }


@pytest.mark.parametrize(
    ("out_stage", "channels", "size"),
    [(1, 256, (16, 8)), (2, 512, (8, 4)), (3, 1024, (4, 2)), (4, 2048, (4, 2))],
)
def test_out_stage_taps_the_right_layer(out_stage: int, channels: int, size: tuple) -> None:
    model = ResNetBackbone(depth=50, out_stage=out_stage).eval()
    with torch.no_grad():
        out = model(_images())
    assert model.out_channels == channels
    assert out.shape == (2, channels, *size)
    # Later stages are not built: no parameters that would never receive gradients.
    assert not any(k.startswith(f"layer{out_stage + 1}.") for k in model.state_dict())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 101},
        {"last_stride": 3},
        {"ibn": "c"},
        {"depth": 18, "ibn": "a"},
        {"out_stage": 0},
        {"out_stage": 5},
    ],
)
def test_backbone_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ResNetBackbone(**kwargs)


# --- IBN ----------------------------------------------------------------------------------------


def test_ibn_a_puts_half_instance_norm_in_layers_1_to_3() -> None:
    model = ResNetBackbone(depth=50, ibn="a")
    expected = {
        f"layer{layer}.{block}.bn1.IN"
        for layer, blocks in ((1, 3), (2, 4), (3, 6))
        for block in range(blocks)
    }
    assert _instance_norm_names(model) == expected
    ibn = model.layer2[0].bn1
    assert isinstance(ibn, IBN)
    assert ibn.IN.num_features == 64 and ibn.BN.num_features == 64
    assert ibn.IN.affine
    assert isinstance(model.bn1, nn.BatchNorm2d)


def test_ibn_module_instance_normalises_first_half_only() -> None:
    ibn = IBN(8).train()
    x = torch.randn(4, 8, 5, 5) * 3 + torch.arange(4.0)[:, None, None, None]
    out = ibn(x)
    per_image_mean = out.mean(dim=(2, 3))
    torch.testing.assert_close(per_image_mean[:, :4], torch.zeros(4, 4), atol=1e-5, rtol=0)
    # BN half: centred over the batch, but each image keeps its own offset.
    torch.testing.assert_close(per_image_mean[:, 4:].mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    assert per_image_mean[:, 4:].abs().max() > 0.5


def test_ibn_b_puts_instance_norm_on_stem_and_after_residuals() -> None:
    model = ResNetBackbone(depth=50, ibn="b")
    assert _instance_norm_names(model) == {"bn1", "layer1.2.IN", "layer2.3.IN"}
    assert isinstance(model.layer1[-1], InstanceNormBottleneck)
    assert isinstance(model.layer2[-1], InstanceNormBottleneck)
    assert model.bn1.affine


@pytest.mark.parametrize("ibn", ["a", "b"])
def test_ibn_variants_forward_and_backward(ibn: str) -> None:
    model = ResNetBackbone(depth=50, ibn=ibn).train()
    out = model(_images())
    assert out.shape == (2, 2048, 4, 2)
    out.mean().backward()
    in_params = [
        p for m in model.modules() if isinstance(m, nn.InstanceNorm2d) for p in m.parameters()
    ]
    assert in_params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in in_params)


# --- pretrained weights -------------------------------------------------------------------------


def test_pretrained_local_state_dict_roundtrip(tmp_path: Path) -> None:
    source = ResNetBackbone(depth=18)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    loaded = ResNetBackbone(depth=18, pretrained=str(path))
    _assert_same_state(loaded.state_dict(), source.state_dict())


def test_pretrained_ignores_classifier_and_unbuilt_stages(tmp_path: Path) -> None:
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "tv.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    loaded = ResNetBackbone(depth=18, out_stage=3, pretrained=path)
    expected = {
        k: v for k, v in net.state_dict().items() if k.split(".")[0] not in ("fc", "layer4")
    }
    _assert_same_state(loaded.state_dict(), expected)


def test_pretrained_mismatch_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(RuntimeError, match="unexpected keys"):
        ResNetBackbone(depth=18, pretrained=path)


def test_pretrained_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        ResNetBackbone(depth=18, pretrained=tmp_path / "nothing.pth")


def test_plain_resnet_weights_into_ibn_report_key_differences(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net = torchvision.models.resnet50(weights=None)
    path = tmp_path / "r50.pth"
    torch.save(net.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="reidgen.models.backbones"):
        model = ResNetBackbone(depth=50, ibn="a", pretrained=path)
    assert "layer1.0.bn1.IN.weight" in caplog.text  # missing
    assert "'layer1.0.bn1.running_mean'" in caplog.text  # unexpected
    torch.testing.assert_close(model.layer3[5].conv2.weight, net.layer3[5].conv2.weight)
    torch.testing.assert_close(model.layer4[0].bn1.weight, net.layer4[0].bn1.weight)


def test_imagenet_without_cached_file_names_the_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError) as error:
        ResNetBackbone(depth=18, pretrained="imagenet")
    assert str(cache / "resnet18-f37072fd.pth") in str(error.value)
    with pytest.raises(FileNotFoundError) as error:
        ResNetBackbone(depth=50, pretrained="imagenet")
    assert str(cache / "resnet50-0676ba61.pth") in str(error.value)
    assert str(cache / "resnet50-11ad3fa6.pth") in str(error.value)
    with pytest.raises(FileNotFoundError) as error:
        ResNetBackbone(depth=50, ibn="b", pretrained="imagenet")
    assert str(cache / "resnet50_ibn_b-9ca61e85.pth") in str(error.value)


def test_imagenet_found_in_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (path,) = imagenet_weight_paths(18, None)
    assert path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), path)
    loaded = ResNetBackbone(depth=18, last_stride=2, pretrained="imagenet")
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    _assert_same_state(loaded.state_dict(), expected)


# --- pooling ------------------------------------------------------------------------------------


def test_gem_with_p_one_is_average_pooling() -> None:
    x = torch.rand(3, 5, 4, 2)
    torch.testing.assert_close(GeMPool(p=1.0)(x), GlobalAvgPool()(x))
    assert GlobalAvgPool()(x).shape == (3, 5)


def test_gem_matches_formula_and_approaches_max() -> None:
    x = torch.rand(2, 3, 4, 4) + 0.1
    expected = x.pow(3).mean(dim=(2, 3)).pow(1 / 3)
    torch.testing.assert_close(GeMPool(p=3.0)(x), expected)
    torch.testing.assert_close(GeMPool(p=200.0)(x), x.amax(dim=(2, 3)), rtol=0.05, atol=0)


def test_gem_gradient_flows_to_p() -> None:
    pool = GeMPool(p=3.0)
    pool(torch.rand(2, 4, 3, 3)).sum().backward()
    assert pool.p.grad is not None and pool.p.grad.abs().item() > 0


def test_gem_fixed_p_is_a_buffer() -> None:
    pool = GeMPool(p=2.0, trainable=False)
    assert list(pool.parameters()) == []
    assert "p" in pool.state_dict()


def test_gem_is_finite_for_large_activations_and_exponents() -> None:
    x = torch.full((1, 2, 3, 3), 3.0)
    x[0, 0, 0, 0] = 9.0
    pooled = GeMPool(p=100.0)(x)  # 9 ** 100 alone is infinite in float32
    assert torch.isfinite(pooled).all()
    torch.testing.assert_close(pooled[0, 1], torch.tensor(3.0))
    torch.testing.assert_close(pooled[0, 0], torch.tensor(9.0 * (1 / 9) ** (1 / 100)))


def test_p_pooling_limits_with_the_exponent_clamped() -> None:
    x = torch.rand(3, 4, 6, 2) + 0.05
    # p below the range is used as 1: average pooling; p at the top: close to max pooling.
    low = GeMPool(p=0.2, p_range=(1.0, 100.0))
    torch.testing.assert_close(low(x), GlobalAvgPool()(x))
    torch.testing.assert_close(low.effective_p(), torch.tensor([1.0]))
    high = GeMPool(p=500.0, p_range=(1.0, 100.0))
    torch.testing.assert_close(high(x), GlobalMaxPool()(x), rtol=0.05, atol=0)
    with pytest.raises(ValueError, match="p_range"):
        GeMPool(p_range=(2.0, 1.0))


def test_p_pooling_per_channel_exponents_learn_separately() -> None:
    pool = GeMPool(p=3.0, channels=4, p_range=(1.0, 100.0))
    assert pool.p.shape == (4,)
    x = torch.rand(2, 4, 3, 3) + 0.1
    torch.testing.assert_close(pool(x)[:, 1], GeMPool(p=3.0)(x[:, 1:2])[:, 0])
    pool(x)[:, 0].sum().backward()
    assert pool.p.grad[0] != 0 and torch.all(pool.p.grad[1:] == 0)


def test_mixed_pool_spans_average_and_max_pooling() -> None:
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(
        MixedPool(0.5)(x), 0.5 * GlobalMaxPool()(x) + 0.5 * GlobalAvgPool()(x)
    )
    torch.testing.assert_close(MixedPool(1e-6)(x), GlobalAvgPool()(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(MixedPool(1 - 1e-6)(x), GlobalMaxPool()(x), rtol=1e-4, atol=1e-5)
    pool = MixedPool(0.3)
    pool(x).sum().backward()
    assert pool.logit.grad is not None and pool.logit.grad.item() > 0  # max >= mean


def test_linear_head_uses_one_feature_for_both_losses() -> None:
    head = LinearHead(8, 5)
    features = torch.randn(4, 8)
    output = head(features)
    assert output.features is features and output.bn_features is features
    assert output.logits.shape == (4, 5)


# --- BNNeck -------------------------------------------------------------------------------------


def test_bnneck_shapes_and_logits() -> None:
    head = BNNeckHead(in_channels=16, num_classes=7).train()
    features = torch.randn(6, 16)
    out = head(features)
    assert out.features is features
    assert out.bn_features.shape == (6, 16)
    assert out.logits.shape == (6, 7)
    torch.testing.assert_close(out.logits, out.bn_features @ head.classifier.weight.T)
    torch.testing.assert_close(out.bn_features.mean(0), torch.zeros(16), atol=1e-5, rtol=0)


def test_bnneck_init_and_frozen_bias() -> None:
    head = BNNeckHead(in_channels=256, num_classes=100)
    assert head.classifier.bias is None
    assert not head.bn.bias.requires_grad
    assert head.bn.weight.requires_grad
    torch.testing.assert_close(head.bn.weight, torch.ones(256))
    torch.testing.assert_close(head.bn.bias, torch.zeros(256))
    assert 0.0008 < head.classifier.weight.std().item() < 0.0012

    optimizer = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    head(torch.randn(8, 256)).logits.pow(2).sum().backward()
    optimizer.step()
    torch.testing.assert_close(head.bn.bias, torch.zeros(256))


def test_bnneck_classifier_bias_option() -> None:
    head = BNNeckHead(in_channels=8, num_classes=3, bias_free_classifier=False)
    assert head.classifier.bias is not None
    torch.testing.assert_close(head.classifier.bias, torch.zeros(3))


def test_domain_discriminator_shape_and_it_learns_to_tell_two_domains_apart() -> None:
    torch.manual_seed(0)
    discriminator = DomainDiscriminator(64)
    widths = [m.out_features for m in discriminator.modules() if isinstance(m, nn.Linear)]
    assert widths == [32, 16, 8, 2]  # halved three times, then the domain logits
    shift = torch.zeros(64)
    shift[:8] = 2.0  # the best possible accuracy is then 99.8%
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-2)
    for _ in range(60):
        features = torch.randn(64, 64)
        domains = torch.arange(64) % 2
        features[domains == 1] += shift
        loss = nn.functional.cross_entropy(discriminator(features), domains)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    discriminator.eval()
    test = torch.randn(200, 64)
    truth = torch.arange(200) % 2
    test[truth == 1] += shift
    accuracy = (discriminator(test).argmax(1) == truth).float().mean()
    assert accuracy > 0.95
