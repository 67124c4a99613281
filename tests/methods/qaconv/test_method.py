"""QAConv's network, losses, recipe mechanics and GS graph, against direct computations."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reidgen.data.samplers.graph import GraphSampler, nearest_classes
from reidgen.eval.features import Features
from reidgen.methods.qaconv import losses as qaconv_losses
from reidgen.methods.qaconv.losses import (
    ClassMemoryLoss,
    PairwiseMatchingLoss,
    ScoreTripletLoss,
)
from reidgen.methods.qaconv.matcher import QAConvMatcher
from reidgen.methods.qaconv.method import QAConv, QAConvGS, QAConvMethod
from reidgen.methods.qaconv.network import FeatureMapNet
from reidgen.models import ResNetBackbone
from reidgen.optim import LossAdaptiveSchedule


def unit_maps(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator), dim=1)


def small_gs(**recipe) -> QAConvGS:
    torch.manual_seed(0)
    return QAConvGS(
        num_classes=6,
        backbone=ResNetBackbone(depth=18, out_stage=3),
        optimizer=partial(torch.optim.SGD, lr=0.01, momentum=0.9),
        input_size=(64, 32),
        loss=ScoreTripletLoss(16.0),
        neck_channels=16,
        **recipe,
    )


# ---------------------------------------------------------------------------- network
@pytest.mark.parametrize("neck", ["2.1", "1.x"])
def test_feature_maps_are_unit_norm_per_location(neck: str) -> None:
    net = FeatureMapNet(ResNetBackbone(depth=18, out_stage=3), neck_channels=16, neck=neck)
    maps = net(torch.rand(2, 3, 64, 32))
    assert maps.shape == (2, 16, 4, 2) == (2, net.out_channels, *net.output_size(64, 32))
    torch.testing.assert_close(maps.norm(dim=1), torch.ones(2, 4, 2))
    convs = [m for m in net.neck.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].kernel_size == (3, 3)
    assert (convs[0].bias is not None) == (neck == "2.1")
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.neck.modules()) == (neck == "1.x")
    assert not any(isinstance(m, nn.ReLU) for m in net.neck.modules())


def test_no_neck_keeps_backbone_channels() -> None:
    net = FeatureMapNet(ResNetBackbone(depth=18, out_stage=3), neck_channels=0)
    assert net(torch.rand(1, 3, 64, 32)).shape[1] == 256 == net.out_channels


# ---------------------------------------------------------------------------- losses
def test_score_triplet_loss_matches_a_hand_computation() -> None:
    scores = torch.tensor(
        [
            [9.0, 3.0, 5.0, 1.0],
            [3.0, 9.0, 2.0, 4.0],
            [5.0, 2.0, 9.0, -1.0],
            [1.0, 4.0, -1.0, 9.0],
        ]
    )
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: positive 3 (self excluded), hardest negative 5 -> relu(5 - 3 + 2) = 4
    # anchor 1: positive 3, negatives 2, 4 -> relu(4 - 3 + 2) = 3
    # anchor 2: positive -1, negatives 5, 2 -> relu(5 + 1 + 2) = 8
    # anchor 3: positive -1, negatives 1, 4 -> relu(4 + 1 + 2) = 7
    out = ScoreTripletLoss(margin=2.0)(scores, labels)
    assert out.loss.item() == pytest.approx((4 + 3 + 8 + 7) / 4)
    assert out.accuracy.item() == 0.0
    easy = ScoreTripletLoss(margin=2.0)(
        torch.tensor([[9.0, 8.0, 0.0], [8.0, 9.0, 0.0], [0.0, 0.0, 9.0]]), torch.tensor([0, 0, 1])
    )
    # anchors 0, 1: 0 - 8 + 2 < 0; anchor 2 has no positive and is left out.
    assert easy.loss.item() == 0.0 and easy.accuracy.item() == 1.0


def test_score_triplet_loss_drops_non_finite_anchors() -> None:
    scores = torch.tensor([[0.0, 1.0, float("inf")], [1.0, 0.0, 2.0], [float("inf"), 2.0, 0.0]])
    scores.requires_grad_(True)
    out = ScoreTripletLoss(margin=1.0)(scores, torch.tensor([0, 0, 1]))
    assert torch.isfinite(out.loss)
    # anchor 1 only: relu(2 - 1 + 1) = 2
    assert out.loss.item() == pytest.approx(2.0)
    out.loss.backward()
    assert torch.isfinite(scores.grad).all()


def test_pairwise_matching_loss_matches_the_definition() -> None:
    scores = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 0.0], [-2.0, 1.0, 4.0]])
    labels = torch.tensor([0, 0, 1])
    target = torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]])

    def bce(s: float, t: float) -> float:
        p = 1 / (1 + math.exp(-s))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    expected = (
        sum(bce(scores[i, j].item(), target[i, j].item()) for i in range(3) for j in range(3)) / 3
    )
    out = PairwiseMatchingLoss()(scores, labels)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    # anchor 0: positive 1.0 > negative -1.0; anchor 1: 0.5 > 0.0; anchor 2 has no positive.
    assert out.accuracy.item() == 1.0


def direct_memory_loss(scores: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    total = torch.zeros(())
    for i in range(scores.shape[0]):
        for k in range(scores.shape[1]):
            p = torch.sigmoid(scores[i, k])
            if k == labels[i]:
                total = total - (1 - p) ** gamma * torch.log(p)
            else:
                total = total - p**gamma * torch.log(1 - p)
    return total / scores.shape[0]


@pytest.mark.parametrize("mask_unseen", [False, True])
def test_class_memory_loss_scores_update_and_focal_weights(
    mask_unseen: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    matcher = QAConvMatcher(num_locations=6).train()
    loss = ClassMemoryLoss(num_classes=5, feature_shape=(8, 3, 2), mask_unseen=mask_unseen)
    first = unit_maps(4, 8, 3, 2, seed=1)
    labels = torch.tensor([1, 3, 1, 0])
    out = loss(first, labels, matcher)
    # Before any write the memory is zero: every pair has the same score.
    assert loss.seen.tolist() == [True, True, False, True, False]
    torch.testing.assert_close(loss.memory[1], first[2])  # the last sample of class 1 wins
    torch.testing.assert_close(loss.memory[3], first[1])
    assert loss.memory[2].abs().sum() == 0
    assert out.loss.requires_grad

    # Second batch: scores equal one unchunked matcher call against the whole memory, also
    # when the correlation is computed a class at a time.
    second = unit_maps(3, 8, 3, 2, seed=2)
    labels2 = torch.tensor([3, 4, 0])
    memory = loss.memory.clone()
    expected_scores = matcher(second, memory)
    monkeypatch.setattr(qaconv_losses, "_MEMORY_BLOCK_ELEMENTS", 1)
    torch.testing.assert_close(loss.scores(second, matcher), expected_scores)
    out = loss(second, labels2, matcher)
    if mask_unseen:
        seen = torch.tensor([1.0, 1, 0, 1, 0])
        keep = expected_scores.detach()  # the masked columns must not count
        direct = 0.0
        for i in range(3):
            for k in range(5):
                if seen[k]:
                    p = torch.sigmoid(keep[i, k])
                    t = k == labels2[i]
                    direct -= (1 - p) ** 2 * torch.log(p) if t else p**2 * torch.log(1 - p)
        assert out.loss.item() == pytest.approx(float(direct.detach()) / 3, rel=1e-5)
    else:
        assert out.loss.item() == pytest.approx(
            direct_memory_loss(expected_scores, labels2, 2.0).item(), rel=1e-5
        )
    assert out.accuracy.item() == pytest.approx(
        (expected_scores.argmax(1) == labels2).float().mean().item()
    )


def test_class_memory_gradient_reaches_features_and_matcher_not_memory() -> None:
    matcher = QAConvMatcher(num_locations=6).train()
    loss = ClassMemoryLoss(num_classes=3, feature_shape=(4, 3, 2))
    loss(unit_maps(3, 4, 3, 2, seed=3), torch.tensor([0, 1, 2]), matcher)
    features = unit_maps(3, 4, 3, 2, seed=4).requires_grad_(True)
    loss(features, torch.tensor([0, 1, 2]), matcher).loss.backward()
    assert features.grad.abs().sum() > 0
    assert matcher.fc.weight.grad.abs().sum() > 0
    assert not loss.memory.requires_grad


# ---------------------------------------------------------------------------- schedule
def test_adaptive_schedule_drops_once_and_stops_half_as_long_again() -> None:
    schedule = LossAdaptiveSchedule(step_factor=0.7, gamma=0.1, base_epoch=1, max_epochs=60)
    decisions = [schedule.update(e, loss) for e, loss in enumerate([12.0, 10.0, 8.0, 7.5, 6.9])]
    # base loss = epoch 1's 10.0; epoch 4 (the 5th) is the first below 7.0 -> drop, stop after 7
    assert decisions == [(False, False)] * 4 + [(True, False)]
    assert schedule.final_epochs == 5 + 2
    assert schedule.update(5, 1.0) == (False, False)
    assert schedule.update(6, 0.5) == (False, True)
    restored = LossAdaptiveSchedule()
    restored.load_state_dict(schedule.state_dict())
    assert restored.update(5, 0.1) == (False, False)  # no second drop after a resume


def test_the_running_epochs_losses_are_in_its_checkpoint() -> None:
    # A run resumed mid-epoch skips on_train_epoch_start and averages the whole epoch's losses.
    method = small_gs()
    method._epoch_loss = [torch.tensor(2.0), torch.tensor(4.0)]
    checkpoint: dict = {}
    method.on_save_checkpoint(checkpoint)
    restored = small_gs()
    restored.on_load_checkpoint(checkpoint)
    assert [float(loss) for loss in restored._epoch_loss] == [2.0, 4.0]


def test_adaptive_schedule_stops_at_max_epochs_without_a_drop() -> None:
    schedule = LossAdaptiveSchedule(max_epochs=3)
    assert [schedule.update(e, 1.0) for e in range(3)] == [(False, False)] * 2 + [(False, True)]
    capped = LossAdaptiveSchedule(max_epochs=4)
    capped.update(1, 10.0)
    assert capped.update(2, 1.0) == (True, False)
    assert capped.final_epochs == 4  # 3 + 1 = 4, within max


# ---------------------------------------------------------------------------- method recipe
def test_optimizer_groups_scale_the_backbone_learning_rate() -> None:
    method = small_gs(backbone_lr_scale=0.1)
    optimizer = method.configure_optimizers()
    backbone, rest = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(0.001) and rest["lr"] == pytest.approx(0.01)
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert ids == {id(p) for p in method.parameters()}
    assert {id(p) for p in backbone["params"]} == {
        id(p) for p in method.network.backbone.parameters()
    }


def test_gradients_are_clipped_separately_for_network_and_matcher() -> None:
    method = small_gs(clip_grad_norm=0.5)
    for p in method.parameters():
        p.grad = torch.full_like(p, 3.0)
    method.configure_gradient_clipping(None)

    def norm(params) -> float:
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))

    assert norm(method.network.parameters()) == pytest.approx(0.5, rel=1e-3)
    assert norm(method.matcher.parameters()) == pytest.approx(0.5, rel=1e-3)


def test_frozen_backbone_bn_keeps_running_statistics_while_the_head_bn_trains() -> None:
    method = small_gs(freeze_backbone_bn=True)
    method.train()
    bn = method.network.backbone.bn1
    before = bn.running_mean.clone()
    head_before = method.matcher.bn.running_mean.clone()
    method.on_train_batch_start(None, 0)
    assert not method.network.training and method.matcher.training
    maps = method.feature_maps(torch.rand(4, 3, 64, 32))
    out = method.compute_loss(maps, torch.tensor([0, 0, 1, 1]))
    out.loss.backward()
    torch.testing.assert_close(bn.running_mean, before)
    assert not torch.equal(method.matcher.bn.running_mean, head_before)
    assert bn.weight.grad is not None  # the affine parameters still learn


def test_flip_merge_undoes_the_mirror() -> None:
    method = small_gs().eval()
    images = torch.rand(2, 3, 64, 32)
    maps = method.extract(images)["maps"]
    mirrored = Features({"maps": maps.flip(dims=[3])})
    # Merging a map with the map of ... itself, mirrored and flipped back, returns the map.
    torch.testing.assert_close(
        method.merge_flipped(Features({"maps": maps}), mirrored)["maps"], maps
    )


def test_distance_is_one_minus_sigmoid_of_the_eval_scores() -> None:
    method = small_gs().eval()
    query, gallery = unit_maps(3, 16, 4, 2, seed=5), unit_maps(5, 16, 4, 2, seed=6)
    expected = 1 - torch.sigmoid(method.matcher(query, gallery) / 10)
    distance = method.distance(Features({"maps": query}), Features({"maps": gallery}))
    torch.testing.assert_close(distance(0, 3), expected)


def official_rerank_start(method: QAConvMethod, query: torch.Tensor, gallery: torch.Tensor):
    """What the official QAConv re-ranking starts from (docs/methods/qaconv.md §9): the matrix
    [[QQ, QG], [QG^T, GG]] of 1 - sigmoid(s / 10), divided by its column maxima, transposed,
    not squared."""

    def d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - torch.sigmoid(method.matcher(a, b) / 10)

    qg = d(query, gallery)
    matrix = torch.cat(
        [torch.cat([d(query, query), qg], dim=1), torch.cat([qg.T, d(gallery, gallery)], dim=1)]
    )
    return (matrix / matrix.amax(dim=0, keepdim=True)).T, matrix


@pytest.mark.parametrize("version", ["2.1", "1.x"])
def test_rerank_input_is_the_official_normalised_matrix(version: str) -> None:
    torch.manual_seed(0)
    method = QAConv(
        num_classes=4,
        backbone=ResNetBackbone(depth=18, out_stage=3),
        optimizer=partial(torch.optim.SGD, lr=0.01),
        input_size=(64, 32),
        version=version,
        neck_channels=16,
        clip_grad_norm=None,
    ).eval()
    with torch.no_grad():
        # Non-trivial head parameters, so that a transposed or mis-assembled matrix shows.
        for parameter in method.matcher.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
        query, gallery = unit_maps(3, 16, 4, 2, seed=5), unit_maps(5, 16, 4, 2, seed=6)
        official, matrix = official_rerank_start(method, query, gallery)
        rows = method.rerank_rows(Features({"maps": torch.cat([query, gallery])}), 3)
        # Re-ranking's own first step: square the rows, divide each by its maximum.
        squared = torch.cat([rows(0, 2), rows(2, 6), rows(6, 8)]).square()
        normalised = squared / squared.amax(dim=1, keepdim=True)
    torch.testing.assert_close(normalised, official.float(), rtol=1e-5, atol=1e-6)
    if version == "1.x":  # the test bites: rows of M would not do
        assert not torch.allclose(matrix, matrix.T, atol=1e-4)


def test_class_memory_method_builds_its_memory_from_the_input_size() -> None:
    method = QAConv(
        num_classes=7,
        backbone=ResNetBackbone(depth=18, out_stage=3),
        optimizer=partial(torch.optim.SGD, lr=0.01),
        input_size=(64, 32),
        version="1.x",
        neck_channels=16,
        clip_grad_norm=None,
    )
    assert method.memory_loss.memory.shape == (7, 16, 4, 2)
    assert method.matcher.num_locations == 8 and method.matcher.version == "1.x"


# ---------------------------------------------------------------------------- GS graph
class ImagesOf:
    """A stand-in for ReIDDataModule.train_images over fixed images."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images
        self.requested: list[int] = []

    def train_images(self, indices):
        self.requested = list(indices)
        return [{"image": self.images[indices[i : i + 3]]} for i in range(0, len(indices), 3)]


def test_class_graph_is_the_matchers_nearest_classes_in_eval_mode() -> None:
    method = small_gs()
    method.train()
    images = torch.rand(8, 3, 64, 32)
    data = ImagesOf(images)
    labels = [c for c in range(4) for _ in range(2)]
    sampler = GraphSampler(labels, batch_size=4, num_instances=2, seed=3)
    method.configure_train_sampler(sampler, data)
    plan = sampler.rank_indices()
    representatives = sampler.representatives()
    assert data.requested == representatives
    assert method.training and method.network.training  # modes restored
    method.eval()
    maps = method.extract(images[representatives])["maps"]
    expected = nearest_classes(-method.matcher.scores_in_chunks(maps, maps), 1)
    assert torch.equal(torch.as_tensor(sampler._neighbours(0)), expected)
    # every batch: an anchor class and its nearest class, two images each
    batches = torch.as_tensor(plan).view(4, 4)
    for batch in batches:
        classes = [labels[i] for i in batch.tolist()]
        anchor = classes[0]
        neighbour = int(expected[anchor, 0])
        assert classes == [anchor, anchor, neighbour, neighbour]
