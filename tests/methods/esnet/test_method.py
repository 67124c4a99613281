"""ES-Net's parts without a trainer: no erasing at test time, the inference feature, the
optimizer groups, the global-only ablation, and both branches learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

from reidgen.methods.esnet.erasing import FeatureErasing
from reidgen.methods.esnet.method import ESNet
from reidgen.models import GeMPool, GlobalAvgPool, ResNetBackbone
from reidgen.run_support import build_method


def make_method(num_classes: int = 4, **kwargs) -> ESNet:
    torch.manual_seed(0)
    options = {
        "backbone": ResNetBackbone(depth=18, last_stride=1),
        "global_pooling": GlobalAvgPool(),
        "erase_pooling": GeMPool(p=3.0, p_range=(1.0, 100.0)),
        "erasing": FeatureErasing("salient_block", 0.3, 1.0),
        "optimizer": lambda params: torch.optim.Adam(params, lr=1e-3),
        "pooling_lr_scale": 10.0,
        **kwargs,
    }
    return ESNet(num_classes, **options)


def images_of(num_ids: int = 4, per_id: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Each identity a colour and a horizontal band at its own height, plus noise."""
    generator = torch.Generator().manual_seed(1)
    images, labels = [], []
    for pid in range(num_ids):
        for _ in range(per_id):
            image = torch.rand(3, 64, 32, generator=generator) * 0.3
            image[pid % 3] += 0.5
            image[:, 16 * pid : 16 * pid + 8] += 0.6
            images.append(image)
            labels.append(pid)
    return torch.stack(images), torch.tensor(labels)


def test_extract_never_erases_and_concatenates_normalised_branches() -> None:
    method = make_method().eval()
    images, _ = images_of()
    with torch.no_grad():
        features = method.extract(images)["embedding"]
        feature_map = method.backbone(images)
        global_part = method.global_branch(feature_map).bn_features
        erase_part = method.erase_head(method.erase_pooling(method.erase_block(feature_map)))
    assert features.shape == (16, 1024)
    expected = torch.cat(
        [F.normalize(global_part, dim=1), F.normalize(erase_part.bn_features, dim=1)], dim=1
    )
    torch.testing.assert_close(features, expected)
    method.inference_feature = "global"
    with torch.no_grad():
        torch.testing.assert_close(
            method.extract(images)["embedding"], F.normalize(global_part, dim=1)
        )


def test_the_training_mask_is_computed_for_pictures_in_any_mode() -> None:
    method = make_method().eval()
    images, labels = images_of()
    saliency, keep = method.saliency_and_mask(images, labels)
    assert saliency.shape == (16, 4, 2) and keep.shape == (16, 1, 4, 2)
    # round(0.3 * 4) = 1 full-width row per sample, at the peak.
    assert torch.all((keep == 0).flatten(1).sum(1) == 2)
    peaks = saliency.flatten(1).argmax(1)
    assert torch.all(keep.flatten(1).gather(1, peaks[:, None]) == 0)
    assert not method.erasing.training


def test_pooling_parameters_get_their_own_learning_rate() -> None:
    method = make_method()
    optimizer = method.configure_optimizers()
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 1e-2]
    assert optimizer.param_groups[1]["params"] == [method.erase_pooling.p]


def test_global_only_needs_the_global_inference_feature() -> None:
    with pytest.raises(ValueError, match="inference_feature=global"):
        make_method(erase_branch=False)
    method = make_method(erase_branch=False, inference_feature="global")
    assert not hasattr(method, "erase_block")
    with pytest.raises(ValueError, match="inference_feature"):
        make_method(inference_feature="both")


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_both_branches_learn_through_training_step() -> None:
    method = make_method()
    images, labels = images_of()
    optimizer = method.configure_optimizers()
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        method.training_step({"image": images, "pid": labels}, 0).backward()
        optimizer.step()
        with torch.no_grad():  # batch statistics, as in training; nothing erased
            feature_map = method.backbone(images)
            global_logits = method.global_branch(feature_map).logits
            erase_logits = method.erase_head_output(method.erase_branch_map(feature_map)).logits
        losses.append(
            (F.cross_entropy(global_logits, labels), F.cross_entropy(erase_logits, labels))
        )
    assert losses[-1][0] < 0.7 * losses[0][0] and losses[-1][1] < 0.7 * losses[0][1]
    assert method.erase_pooling.p.item() != 3.0


def method_config(*overrides: str):
    with initialize_config_module("reidgen.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides)).method


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_the_global_branch_alone_is_the_bot_baseline() -> None:
    """Same seed, same initial weights in the same parameter order, same losses: a run of one is
    a run of the other (the ablation's first row is the BoT baseline's)."""
    torch.manual_seed(3)
    bot = build_method(method_config("method=baseline"), 6)
    torch.manual_seed(3)
    alone = build_method(
        method_config(
            "method=esnet", "method.erase_branch=false", "method.inference_feature=global"
        ),
        6,
    )
    bot_parameters = [p for _, p in bot.named_parameters()]
    alone_parameters = [p for _, p in alone.named_parameters()]
    assert len(bot_parameters) == len(alone_parameters)
    for a, b in zip(bot_parameters, alone_parameters, strict=True):
        assert torch.equal(a, b)
    images, labels = images_of(num_ids=3, per_id=2)
    bot_optimizer = bot.configure_optimizers()["optimizer"]
    alone_optimizer = alone.configure_optimizers()["optimizer"]
    for _ in range(2):
        for method, optimizer in ((bot, bot_optimizer), (alone, alone_optimizer)):
            optimizer.zero_grad()
            method.training_step({"image": images, "pid": labels}, 0).backward()
            optimizer.step()
    for a, b in zip(bot_parameters, alone_parameters, strict=True):
        assert torch.equal(a, b)
    bot.eval()
    alone.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            alone.extract(images)["embedding"],
            F.normalize(bot.extract(images)["embedding"], dim=1),
        )
