"""AlignedReID: branches, hard pairs shared by the local loss, mutual learning isolation."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from reidgen.losses import hard_example_mining, pairwise_euclidean, triplet_ranking_loss
from reidgen.methods.alignedreid.local_distance import local_distance, paired_local_distance
from reidgen.methods.alignedreid.method import AlignedReID
from reidgen.models import ResNetBackbone

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def build(**options) -> AlignedReID:
    torch.manual_seed(0)
    return AlignedReID(
        num_classes=3,
        backbone=partial(ResNetBackbone, depth=18, last_stride=1),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        **options,
    )


class Recorder:
    def __init__(self) -> None:
        self.logged: dict[str, torch.Tensor] = {}

    def __call__(self, values, **_) -> None:
        self.logged.update(values)


def step(method: AlignedReID, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
    recorder = Recorder()
    method.log_dict = recorder  # the step's losses, without a Trainer
    loss = method.training_step({"image": images, "pid": LABELS}, 0)
    return loss, recorder.logged


def test_one_stripe_per_feature_map_row() -> None:
    method = build(local_channels=16)
    output = method.models[0](torch.rand(2, 3, 64, 32))
    assert output.global_features.shape == (2, 512)
    assert output.local_features.shape == (2, 4, 16)  # 64 / 16 rows at last stride 1
    assert output.logits.shape == (2, 3)
    assert (output.local_features >= 0).all()  # after the ReLU


def test_local_triplet_scores_the_pairs_mined_on_the_global_distance() -> None:
    method = build(local_channels=16)
    method.train()
    images = torch.rand(6, 3, 64, 32)
    _, logged = step(method, images)
    # Recompute with the same batch statistics: BN is in training mode on the same images.
    output = method.models[0](images)
    global_distance = pairwise_euclidean(output.global_features, output.global_features)
    dist_ap, dist_an, pos, neg = hard_example_mining(global_distance, LABELS)
    local_ap = paired_local_distance(output.local_features, output.local_features[pos])
    local_an = paired_local_distance(output.local_features, output.local_features[neg])
    expected = triplet_ranking_loss(local_ap, local_an, 0.3)
    torch.testing.assert_close(logged["train/local_triplet"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        logged["train/global_triplet"],
        triplet_ranking_loss(dist_ap, dist_an, 0.3),
        rtol=1e-4,
        atol=1e-5,
    )


def test_mutual_losses_never_send_gradient_to_the_peer() -> None:
    method = build(num_models=2, local_channels=16, id_weight=1.0)
    method.train()
    images = torch.rand(6, 3, 64, 32)
    _, logged = step(method, images)
    assert logged["train/probability_mutual"] > 0 and logged["train/distance_mutual"] > 0
    # Model 0's own total loss (incl. its mutual terms) must not reach model 1's weights.
    method.zero_grad()
    logged["train/loss"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in method.models[1].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.models[0].parameters())


def test_one_optimizer_step_equals_each_model_stepping_on_its_own_loss() -> None:
    images = torch.rand(6, 3, 64, 32)
    joint = build(num_models=2, local_channels=8)
    joint.train()
    optimizer = joint.configure_optimizers()
    loss, _ = step(joint, images)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    separate = build(num_models=2, local_channels=8)
    separate.train()
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in separate.models]
    _, logged = step(separate, images)
    own_losses = [logged["train/loss"], logged["train/model1/loss"]]
    grads = [
        torch.autograd.grad(own, list(model.parameters()), allow_unused=True, retain_graph=True)
        for own, model in zip(own_losses, separate.models, strict=True)
    ]
    for model, optimizer_i, model_grads in zip(separate.models, optimizers, grads, strict=True):
        for p, g in zip(model.parameters(), model_grads, strict=True):
            p.grad = g
        optimizer_i.step()
    for a, b in zip(joint.parameters(), separate.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("test_distance", ["global", "global_local"])
def test_test_distances(test_distance: str) -> None:
    method = build(local_channels=8, test_distance=test_distance).eval()
    images = torch.rand(5, 3, 64, 32)
    features = method.extract(images)
    output = method.models[0](images)
    expected = pairwise_euclidean(output.global_features, output.global_features)
    assert features["embedding"].shape == (5, 512)
    if test_distance == "global_local":
        assert features["stripes"].shape == (5, 4, 8)
        expected = expected + local_distance(output.local_features, output.local_features)
    else:
        assert features.names == ("embedding",)
    torch.testing.assert_close(
        method.distance(features, features)(0, 5), expected, rtol=1e-4, atol=1e-4
    )
    if test_distance == "global":  # read from the features: exact zeros for a sample to itself
        expected.fill_diagonal_(0.0)
    torch.testing.assert_close(
        method.rerank_rows(features, 2)(1, 3), expected[1:3], rtol=1e-4, atol=1e-4
    )


def test_stripe_features_are_those_of_the_local_distance() -> None:
    images = torch.rand(4, 3, 64, 32)
    method = build(local_channels=8, normalize_features=True, test_distance="global_local").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            method.stripe_features(images), method.extract(images)["stripes"]
        )
        stripes = build(local_channels=8, normalize_features=True).eval().stripe_features(images)
    assert stripes.shape == (4, 4, 8)
    torch.testing.assert_close(stripes.norm(dim=2), torch.ones(4, 4))


def test_a_short_training_run_learns() -> None:
    method = build(local_channels=8)
    method.train()
    optimizer = method.configure_optimizers()
    generator = torch.Generator().manual_seed(1)
    # Three "identities": each a colour, with noise per image.
    colours = torch.rand(3, 3, 1, 1, generator=generator)
    images = colours[LABELS] + 0.05 * torch.randn(6, 3, 64, 32, generator=generator)
    losses = []
    for _ in range(8):
        loss, _ = step(method, images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
