"""ES-Net's saliency and keep-masks: where the peak is, how much is erased, per sample, never at
test time, never trained through."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reidgen.methods.esnet.erasing import FeatureErasing, block_size, saliency_map
from reidgen.models import BNNeckHead, LinearHead


def peaked(batch: int, height: int, width: int, peaks: list[tuple[int, int]]) -> torch.Tensor:
    saliency = torch.rand(batch, height, width) * 0.5
    for sample, (row, column) in enumerate(peaks):
        saliency[sample, row, column] = 1.0
    return saliency


@pytest.mark.parametrize(
    ("peak", "rows"),
    [((0, 0), [0, 1]), ((3, 1), [2, 3, 4]), ((7, 3), [5, 6, 7])],
)
def test_salient_block_erases_the_peak_with_the_configured_area(
    peak: tuple[int, int], rows: list[int]
) -> None:
    erasing = FeatureErasing("salient_block", height_ratio=0.3, width_ratio=1.0).train()
    keep = erasing(peaked(1, 8, 4, [peak]))
    assert keep.shape == (1, 1, 8, 4)
    assert keep[0, 0, peak[0], peak[1]] == 0
    # round(0.3 * 8) = 2 rows of the full width, shifted inside the map at the borders; an odd
    # peak in the middle gets rows peak-1 .. peak (the block's centre is rows // 2 below its top).
    erased_rows = sorted({int(r) for r in (keep[0, 0] == 0).nonzero()[:, 0]})
    assert len(erased_rows) == block_size(8, 4, 0.3, 1.0)[0] == 2
    assert set(erased_rows) <= set(rows)
    assert int((keep == 0).sum()) == 2 * 4


def test_salient_block_is_per_sample_and_two_dimensional() -> None:
    erasing = FeatureErasing("salient_block", height_ratio=0.5, width_ratio=0.5).train()
    peaks = [(0, 0), (5, 3), (2, 2)]
    keep = erasing(peaked(3, 6, 4, peaks))
    for sample, (row, column) in enumerate(peaks):
        erased = keep[sample, 0] == 0
        assert erased[row, column]
        assert int(erased.sum()) == 3 * 2  # 0.5 x 6 by 0.5 x 4
    assert not torch.equal(keep[0], keep[1])


def test_threshold_and_topk_erase_the_most_salient_positions() -> None:
    saliency = torch.arange(16, dtype=torch.float32).view(1, 4, 4)  # normalised: i / 15
    keep = FeatureErasing("threshold", threshold=0.75).train()(saliency)
    expected = (saliency / 15 >= 0.75).unsqueeze(1)
    assert torch.equal(keep == 0, expected)
    keep = FeatureErasing("topk", top_fraction=0.25).train()(saliency)
    assert torch.equal((keep == 0).flatten(), torch.arange(16) >= 12)


def test_batch_drop_erases_one_block_for_the_whole_batch() -> None:
    torch.manual_seed(0)
    keep = FeatureErasing("batch_drop", height_ratio=0.5, width_ratio=1.0).train()(
        peaked(4, 8, 4, [(0, 0), (7, 3), (3, 1), (5, 2)])
    )
    assert all(torch.equal(keep[0], keep[i]) for i in range(4))
    assert int((keep[0] == 0).sum()) == 4 * 4


@pytest.mark.parametrize("mode", ["salient_block", "threshold", "topk", "batch_drop", "none"])
def test_nothing_is_erased_in_eval_mode(mode: str) -> None:
    keep = FeatureErasing(mode).eval()(torch.rand(2, 8, 4))
    assert torch.equal(keep, torch.ones(2, 1, 8, 4))


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="erasing mode"):
        FeatureErasing("random")
    with pytest.raises(ValueError, match="height_ratio"):
        FeatureErasing(height_ratio=0)


def test_confidence_is_the_true_class_probability_at_each_position() -> None:
    torch.manual_seed(0)
    head = BNNeckHead(6, 3).train()
    head.bn.running_mean.uniform_(-0.5, 0.5)
    head.bn.running_var.uniform_(0.5, 2.0)
    nn.init.normal_(head.classifier.weight)
    feature_map = torch.randn(2, 6, 4, 2, requires_grad=True)
    labels = torch.tensor([2, 0])
    running_mean = head.bn.running_mean.clone()
    saliency = saliency_map(feature_map, head, labels, "confidence")
    # Detached, the head's statistics untouched and its mode restored.
    assert not saliency.requires_grad and saliency.grad_fn is None
    assert torch.equal(head.bn.running_mean, running_mean) and head.training
    for sample in range(2):
        for row in range(4):
            for column in range(2):
                vector = feature_map[sample, :, row, column].detach()
                normalised = (vector - head.bn.running_mean) / torch.sqrt(
                    head.bn.running_var + head.bn.eps
                ) * head.bn.weight + head.bn.bias
                probability = (head.classifier.weight @ normalised).softmax(0)[labels[sample]]
                torch.testing.assert_close(saliency[sample, row, column], probability.detach())


def test_cam_peaks_where_the_class_evidence_is_and_the_block_erases_it() -> None:
    head = LinearHead(4, 2)
    with torch.no_grad():
        head.classifier.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    feature_map = torch.zeros(2, 4, 8, 4)
    feature_map[0, 0, 6, 1] = 5.0  # class 0's evidence low in sample 0
    feature_map[1, 1, 1, 2] = 5.0  # class 1's evidence high in sample 1
    saliency = saliency_map(feature_map, head, torch.tensor([0, 1]), "cam")
    assert saliency.amax().item() == pytest.approx(1.0) and saliency.amin().item() == 0.0
    assert saliency[0].argmax() == 6 * 4 + 1 and saliency[1].argmax() == 1 * 4 + 2
    keep = FeatureErasing("salient_block", 0.25, 0.5).train()(saliency)
    assert keep[0, 0, 6, 1] == 0 and keep[1, 0, 1, 2] == 0
    # Without labels, each sample's own top class from the pooled map.
    unlabelled = saliency_map(feature_map, head, None, "cam")
    torch.testing.assert_close(unlabelled, saliency)
