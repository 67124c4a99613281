"""DomainMix's parts without a trainer: classifier size, cluster rows, domain labels, phases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reidgen.clustering.pseudo_labels import PseudoLabeller, PseudoLabels
from reidgen.methods.domainmix import DomainMix
from reidgen.models import GlobalAvgPool


class TinyBackbone(nn.Module):
    out_channels = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)


def make_method(num_classes: int = 5, num_unlabelled_images: int = 40, **kwargs) -> DomainMix:
    torch.manual_seed(0)
    return DomainMix(
        num_classes,
        TinyBackbone(),
        GlobalAvgPool(),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        labeller=PseudoLabeller(min_cluster_size=4),
        num_unlabelled_images=num_unlabelled_images,
        **kwargs,
    )


def test_classifier_has_a_row_per_labelled_identity_and_per_possible_cluster() -> None:
    method = make_method(num_classes=5, num_unlabelled_images=42)
    # 42 images in clusters of at least 4: at most 10 clusters.
    assert method.head.classifier.weight.shape == (5 + 10, 8)
    assert method.hparams["num_unlabelled_images"] == 42
    assert method.active_classes == 5


@pytest.mark.parametrize("match_row_norm", [False, True])
def test_cluster_rows_become_normalised_cluster_means_and_labelled_rows_stay(
    match_row_norm: bool,
) -> None:
    method = make_method(match_row_norm=match_row_norm)
    with torch.no_grad():
        method.head.classifier.weight[:5] *= torch.arange(1.0, 6.0)[:, None]
    before = method.head.classifier.weight.detach().clone()
    # Official: unit rows; matched: the labelled rows' mean norm.
    scale = before[:5].norm(dim=1).mean() if match_row_norm else torch.tensor(1.0)
    features = F.normalize(torch.randn(12, 8), dim=1)
    labels = np.array([0, 1, -1, 0, 2, 1, 1, -1, 2, 0, 2, 2])
    method.reset_cluster_rows(features, PseudoLabels(labels, eps=0.6))
    weight = method.head.classifier.weight.detach()
    for cluster in range(3):
        mean = features[torch.from_numpy(labels == cluster)].mean(0)
        assert torch.allclose(weight[5 + cluster], scale * mean / mean.norm(), atol=1e-6)
    assert torch.equal(weight[:5], before[:5])
    assert torch.equal(weight[8:], before[8:])


def test_domain_labels_corrected_and_the_official_off_by_one() -> None:
    labels = torch.tensor([0, 4, 5, 6, 9])  # 5 labelled identities: 5 is the first cluster
    assert make_method().domain_targets(labels).tolist() == [0, 0, 1, 1, 1]
    official = make_method(domain_label_ge=False)
    assert official.domain_targets(labels).tolist() == [0, 0, 0, 1, 1]


def test_discriminator_has_its_own_optimizer_and_the_model_all_other_parameters() -> None:
    method = make_method()
    model_optimizer, discriminator_optimizer = method.configure_optimizers()
    model_params = {id(p) for g in model_optimizer.param_groups for p in g["params"]}
    discriminator_params = {
        id(p) for g in discriminator_optimizer.param_groups for p in g["params"]
    }
    assert discriminator_params == {id(p) for p in method.discriminator.parameters()}
    assert model_params | discriminator_params == {id(p) for p in method.parameters()}
    assert not model_params & discriminator_params


def test_discriminator_every_must_leave_model_steps() -> None:
    with pytest.raises(ValueError, match="discriminator_every must be >= 2"):
        make_method(discriminator_every=1)
