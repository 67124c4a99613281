"""ES-Net's salient erasing on feature maps: where the model looks, and what to hide from it.

A saliency map ``[B, h, w]`` comes from the global branch's own head applied at every position of
its feature map (:func:`saliency_map`); :class:`FeatureErasing` turns it into a keep-mask
``[B, 1, h, w]`` (1 = kept, 0 = erased) that multiplies the erasing branch's map. Which parts are
the paper's and which are inferred: ``docs/methods/esnet.md``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from reidgen.models.heads import HeadOutput

SaliencyKind = Literal["confidence", "cam"]
EraseMode = Literal["salient_block", "threshold", "topk", "batch_drop", "none"]
ERASE_MODES = ("salient_block", "threshold", "topk", "batch_drop", "none")


@torch.no_grad()
def saliency_map(
    feature_map: Tensor,
    head: nn.Module,
    labels: Tensor | None = None,
    kind: SaliencyKind = "confidence",
) -> Tensor:
    """The global head's belief in each sample's class at every position, detached.

    The head (pooled features ``[N, C] -> HeadOutput``) is applied to every position's
    ``C``-vector as if it were a pooled feature, in eval mode (BN with its running statistics, so
    no statistic is updated by this look), under ``no_grad``: the map steers erasing but is not
    trained through.

    :param feature_map: ``[B, C, h, w]``, the map the global branch pools.
    :param head: the global branch's head.
    :param labels: ``[B]`` class indices (training: the ground truth); None = each sample's own
        top class from the pooled features (for pictures of test images).
    :param kind: ``"confidence"``: softmax probability of the class at each position (ES-Net's
        "confidence of objects", the default reading); ``"cam"``: the class logit at each position
        (class activation map), min-max normalised per sample.
    :returns: ``[B, h, w]`` in [0, 1], float32.
    """
    batch, channels, height, width = feature_map.shape
    was_training = head.training
    head.eval()
    try:
        positions = feature_map.permute(0, 2, 3, 1).reshape(-1, channels)
        output: HeadOutput = head(positions)
        logits = output.logits.float().view(batch, height * width, -1)
        if labels is None:
            pooled: HeadOutput = head(feature_map.mean(dim=(2, 3)))
            labels = pooled.logits.argmax(dim=1)
    finally:
        head.train(was_training)
    index = labels.view(batch, 1, 1).expand(batch, height * width, 1)
    if kind == "confidence":
        saliency = logits.softmax(dim=2).gather(2, index).squeeze(2)
    elif kind == "cam":
        saliency = logits.gather(2, index).squeeze(2)
        low = saliency.amin(dim=1, keepdim=True)
        high = saliency.amax(dim=1, keepdim=True)
        saliency = (saliency - low) / (high - low).clamp(min=1e-12)
    else:
        raise ValueError(f"saliency kind must be 'confidence' or 'cam', got {kind!r}")
    return saliency.view(batch, height, width)


def block_size(height: int, width: int, height_ratio: float, width_ratio: float) -> tuple[int, int]:
    """Cells of an erased block on an ``height x width`` map: each side rounded, at least 1."""
    return (
        min(height, max(1, round(height_ratio * height))),
        min(width, max(1, round(width_ratio * width))),
    )


class FeatureErasing(nn.Module):
    """Keep-masks for the erasing branch: ``forward(saliency [B, h, w]) -> [B, 1, h, w]``.

    Modes:

    * ``salient_block`` (ES-Net default): per sample, a block of ``height_ratio x width_ratio`` of
      the map centred on the saliency peak, shifted inside the map so its area is always the
      configured one;
    * ``threshold``: per sample, every position whose min-max normalised saliency is at least
      ``threshold``;
    * ``topk``: per sample, the ``top_fraction`` most salient positions (at least one);
    * ``batch_drop`` (BDB, the random ancestor): one random block of the same size for the whole
      batch, saliency ignored;
    * ``none``: nothing erased.

    In eval mode nothing is erased whatever the mode: erasing is a training device only.
    """

    def __init__(
        self,
        mode: EraseMode = "salient_block",
        height_ratio: float = 0.3,
        width_ratio: float = 1.0,
        threshold: float = 0.75,
        top_fraction: float = 0.25,
    ) -> None:
        super().__init__()
        if mode not in ERASE_MODES:
            raise ValueError(f"erasing mode must be one of {ERASE_MODES}, got {mode!r}")
        for name, value in (("height_ratio", height_ratio), ("width_ratio", width_ratio)):
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        self.mode = mode
        self.height_ratio = height_ratio
        self.width_ratio = width_ratio
        self.threshold = threshold
        self.top_fraction = top_fraction

    def forward(self, saliency: Tensor) -> Tensor:
        batch, height, width = saliency.shape
        keep = torch.ones(batch, 1, height, width, device=saliency.device)
        if not self.training or self.mode == "none":
            return keep
        if self.mode in ("salient_block", "batch_drop"):
            rows, columns = block_size(height, width, self.height_ratio, self.width_ratio)
            if self.mode == "batch_drop":
                top = int(torch.randint(height - rows + 1, (1,)))
                left = int(torch.randint(width - columns + 1, (1,)))
                keep[:, :, top : top + rows, left : left + columns] = 0
                return keep
            peak = saliency.flatten(1).argmax(dim=1)
            tops = (peak // width - rows // 2).clamp(0, height - rows)
            lefts = (peak % width - columns // 2).clamp(0, width - columns)
            row_index = torch.arange(height, device=saliency.device).view(1, height, 1)
            column_index = torch.arange(width, device=saliency.device).view(1, 1, width)
            inside = (
                (row_index >= tops.view(-1, 1, 1))
                & (row_index < (tops + rows).view(-1, 1, 1))
                & (column_index >= lefts.view(-1, 1, 1))
                & (column_index < (lefts + columns).view(-1, 1, 1))
            )
            return keep.masked_fill(inside.unsqueeze(1), 0)
        flat = saliency.flatten(1)
        if self.mode == "threshold":
            low = flat.amin(dim=1, keepdim=True)
            high = flat.amax(dim=1, keepdim=True)
            erased = (flat - low) / (high - low).clamp(min=1e-12) >= self.threshold
        else:
            count = max(1, round(self.top_fraction * height * width))
            erased = torch.zeros_like(flat, dtype=torch.bool)
            erased.scatter_(1, flat.topk(count, dim=1).indices, True)
        return keep.masked_fill(erased.view(batch, 1, height, width), 0)

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode}, height_ratio={self.height_ratio}, width_ratio={self.width_ratio}, "
            f"threshold={self.threshold}, top_fraction={self.top_fraction}"
        )
