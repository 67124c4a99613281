"""Label-smoothed cross-entropy, batch-hard triplet and domain balance losses, checked against
hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reidgen.losses import (
    BatchHardTripletLoss,
    CrossEntropyLabelSmooth,
    DomainBalanceLoss,
    hard_example_mining,
    pairwise_euclidean,
    triplet_ranking_loss,
)

# Six points on a line (second coordinate 0), so every distance is a difference of positions.
# Labels: 0 0 0 | 1 1 | 2, the last identity has a single image (no positive).
POSITIONS = [0.0, 1.0, 4.0, 6.0, 9.0, 20.0]
LABELS = torch.tensor([0, 0, 0, 1, 1, 2])
# Worked out by hand from the positions (index: distance):
#   anchor 0 at 0:  positives 1: 1, 2: 4  -> 2 at 4;  negatives 3: 6, 4: 9, 5: 20        -> 3 at 6
#   anchor 1 at 1:  positives 0: 1, 2: 3  -> 2 at 3;  negatives 3: 5, 4: 8, 5: 19        -> 3 at 5
#   anchor 2 at 4:  positives 0: 4, 1: 3  -> 0 at 4;  negatives 3: 2, 4: 5, 5: 16        -> 3 at 2
#   anchor 3 at 6:  positive  4: 3        -> 4 at 3;  negatives 0: 6, 1: 5, 2: 2, 5: 14  -> 2 at 2
#   anchor 4 at 9:  positive  3: 3        -> 3 at 3;  negatives 0: 9, 1: 8, 2: 5, 5: 11  -> 2 at 5
#   anchor 5 at 20: no positive;  negatives 0: 20, 1: 19, 2: 16, 3: 14, 4: 11          -> 4 at 11
EXPECTED_POS_INDEX = [2, 2, 0, 4, 3, 5]
EXPECTED_NEG_INDEX = [3, 3, 3, 2, 2, 4]
EXPECTED_DIST_AP = [4.0, 3.0, 4.0, 3.0, 3.0, -math.inf]
EXPECTED_DIST_AN = [6.0, 5.0, 2.0, 2.0, 5.0, 11.0]


def _line_features() -> torch.Tensor:
    return torch.tensor([[p, 0.0] for p in POSITIONS])


# --- cross-entropy ------------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_manual_formula(epsilon: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    targets = torch.tensor([0, 3, 6, 3, 1])
    smoothed = (1 - epsilon) * F.one_hot(targets, 7).float() + epsilon / 7
    expected = (-smoothed * logits.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(CrossEntropyLabelSmooth(epsilon)(logits, targets), expected)


def test_temperature_divides_the_logits_first() -> None:
    logits, targets = torch.randn(4, 5), torch.tensor([0, 1, 4, 2])
    torch.testing.assert_close(
        CrossEntropyLabelSmooth(0.1, temperature=2.0)(logits, targets),
        CrossEntropyLabelSmooth(0.1)(logits / 2, targets),
    )
    with pytest.raises(ValueError, match="temperature"):
        CrossEntropyLabelSmooth(0.1, temperature=0.0)


def test_label_smoothing_zero_is_plain_cross_entropy() -> None:
    logits, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    loss = CrossEntropyLabelSmooth(0.0)(logits, targets)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets))


def test_label_smoothing_rejects_bad_epsilon() -> None:
    with pytest.raises(ValueError):
        CrossEntropyLabelSmooth(1.0)


# --- distances and mining -----------------------------------------------------------------------


def test_pairwise_euclidean_matches_cdist_and_is_finite_on_duplicates() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(5, 8), torch.randn(3, 8)
    torch.testing.assert_close(pairwise_euclidean(x, y), torch.cdist(x, y), atol=1e-5, rtol=1e-5)

    x = torch.randn(4, 8, requires_grad=True)
    distance = pairwise_euclidean(x, x)
    assert distance.shape == (4, 4)
    # Self-distances are 0 up to float32 round-off of |x|^2 + |x|^2 - 2 x.x (about 1e-3 here).
    assert distance.diagonal().max() < 1e-2
    distance.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_hard_example_mining_picks_the_known_hardest_pairs() -> None:
    features = _line_features()
    dist_ap, dist_an, pos_index, neg_index = hard_example_mining(
        pairwise_euclidean(features, features), LABELS
    )
    assert pos_index.tolist() == EXPECTED_POS_INDEX
    assert neg_index.tolist() == EXPECTED_NEG_INDEX
    torch.testing.assert_close(dist_ap, torch.tensor(EXPECTED_DIST_AP))
    torch.testing.assert_close(dist_an, torch.tensor(EXPECTED_DIST_AN))


def test_hard_example_mining_anchor_without_negative() -> None:
    distance = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    dist_ap, dist_an, pos_index, neg_index = hard_example_mining(distance, torch.tensor([1, 1]))
    assert pos_index.tolist() == [1, 0]
    assert neg_index.tolist() == [0, 1]  # no negative: the anchor itself
    assert dist_ap.tolist() == [2.0, 2.0]
    assert dist_an.tolist() == [math.inf, math.inf]


# --- triplet loss -------------------------------------------------------------------------------


def test_triplet_loss_value_by_hand() -> None:
    # Valid anchors 0..4: relu(ap - an + 0.3) = 0, 0, 2.3, 1.3, 0 -> mean over 5 anchors.
    # Anchor 5 (no positive) is excluded, not averaged in as a zero (which would give 0.6).
    loss = BatchHardTripletLoss(margin=0.3)(_line_features(), LABELS)
    torch.testing.assert_close(loss, torch.tensor(3.6 / 5))


def test_soft_margin_triplet_loss_by_hand() -> None:
    gaps = [-2.0, -2.0, 2.0, 1.0, -2.0]  # ap - an of the valid anchors
    expected = sum(math.log1p(math.exp(g)) for g in gaps) / len(gaps)
    loss = BatchHardTripletLoss(margin=None)(_line_features(), LABELS)
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_anchor_without_positive_does_not_change_the_loss() -> None:
    # Dropping the singleton changes no other anchor's hardest pairs here, so the loss of the
    # remaining five anchors must be the same with or without it.
    features = _line_features()
    loss_fn = BatchHardTripletLoss(margin=0.3)
    torch.testing.assert_close(loss_fn(features, LABELS), loss_fn(features[:5], LABELS[:5]))


def test_batch_without_valid_anchor_gives_zero_and_backpropagates() -> None:
    features = torch.randn(4, 3, requires_grad=True)
    loss = BatchHardTripletLoss()(features, torch.tensor([0, 1, 2, 3]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(features.grad, torch.zeros(4, 3))


def test_normalize_makes_the_loss_scale_invariant() -> None:
    torch.manual_seed(0)
    features, labels = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss_fn = BatchHardTripletLoss(margin=0.3, normalize=True)
    torch.testing.assert_close(loss_fn(features, labels), loss_fn(10 * features, labels))


def test_triplet_ranking_loss_gradient_reaches_only_valid_anchors() -> None:
    dist_ap = torch.tensor([1.0, 2.0, -math.inf], requires_grad=True)
    dist_an = torch.tensor([0.5, 5.0, 1.0], requires_grad=True)
    loss = triplet_ranking_loss(dist_ap, dist_an, margin=0.3)
    torch.testing.assert_close(loss, torch.tensor(0.8 / 2))
    loss.backward()
    torch.testing.assert_close(dist_ap.grad, torch.tensor([0.5, 0.0, 0.0]))
    torch.testing.assert_close(dist_an.grad, torch.tensor([-0.5, 0.0, 0.0]))


@pytest.mark.parametrize("margin", [0.3, None])
def test_short_optimisation_lowers_triplet_loss(margin: float | None) -> None:
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)  # P=4 identities x K=4 images
    inputs = torch.randn(16, 32) + 0.5 * torch.randn(4, 32)[labels]
    embed = torch.nn.Linear(32, 16)
    loss_fn = BatchHardTripletLoss(margin=margin)
    optimizer = torch.optim.Adam(embed.parameters(), lr=1e-2)
    initial = loss_fn(embed(inputs), labels).item()
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(embed(inputs), labels)
        loss.backward()
        optimizer.step()
    final = loss_fn(embed(inputs), labels).item()
    assert final < 0.5 * initial


# --- domain balance -----------------------------------------------------------------------------


def test_domain_balance_is_one_minus_ln2_at_equal_logits_and_larger_otherwise() -> None:
    loss = DomainBalanceLoss()
    assert loss(torch.zeros(3, 2)).item() == pytest.approx(1 - math.log(2))
    assert loss(torch.full((3, 2), 4.0)).item() == pytest.approx(1 - math.log(2))
    # One confident sample: p = (0.9, 0.1) -> 0.9 ln 0.9 + 0.1 ln 0.1 + 1.
    confident = torch.tensor([[math.log(9.0), 0.0]])
    expected = 0.9 * math.log(0.9) + 0.1 * math.log(0.1) + 1
    assert loss(confident).item() == pytest.approx(expected, rel=1e-5)
    # Its gradient makes the prediction less confident.
    logits = confident.clone().requires_grad_(True)
    loss(logits).backward()
    assert logits.grad[0, 0] > 0 > logits.grad[0, 1]
