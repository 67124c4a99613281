"""The ES-Net saliency picture: panel sizes, the heat map's peak, the erased block's cells."""

from __future__ import annotations

import pytest
import torch

from reidgen.viz.saliency import CAPTION_HEIGHT, GAP, check_esnet_method, draw_saliency_row


def test_row_shows_the_peak_in_red_and_darkens_exactly_the_erased_cells() -> None:
    image = torch.full((3, 64, 32), 0.8)
    saliency = torch.zeros(8, 4)
    saliency[6, 1] = 1.0
    keep = torch.ones(1, 8, 4)
    keep[0, 5:7] = 0  # two full-width rows around the peak
    picture = draw_saliency_row(image, saliency, keep, height=128, caption="query")
    width = 64  # 128 tall at the image's 1:2 aspect ratio
    assert picture.size == (3 * width + 2 * GAP, 128 + CAPTION_HEIGHT)
    cell = 16  # 128 / 8 rows, 64 / 4 columns
    heat_peak = picture.getpixel((width + GAP + cell + cell // 2, 6 * cell + cell // 2))
    heat_cold = picture.getpixel((width + GAP + cell // 2, cell // 2))
    assert heat_peak[0] > heat_peak[2] and heat_cold[2] > heat_cold[0]  # red vs blue
    erased_panel = 2 * (width + GAP)
    kept = picture.getpixel((erased_panel + cell // 2, 2 * cell + cell // 2))
    erased = picture.getpixel((erased_panel + cell // 2, 5 * cell + cell // 2))
    assert kept == picture.getpixel((cell // 2, 2 * cell + cell // 2))  # as the image
    assert max(erased) < 0.5 * min(kept)


def test_only_es_net_checkpoints_are_pictured() -> None:
    with pytest.raises(TypeError, match="not ES-Net"):
        check_esnet_method(torch.nn.Linear(2, 2))
