"""build_transforms: shapes, determinism, flip, erasing, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reidgen.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

H, W = 64, 32


@pytest.fixture
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (90, 40, 3), dtype=np.uint8))


def plain(**kwargs) -> dict:
    """Train kwargs with every augmentation off, plus overrides."""
    base = {"height": H, "width": W, "flip_prob": 0.0, "pad": 0, "random_erasing_prob": 0.0}
    return {**base, **kwargs}


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_output_is_float_tensor_3_h_w(image: Image.Image, train: bool, mode: str) -> None:
    out = build_transforms(height=H, width=W, train=train, color_jitter=0.3)(image.convert(mode))
    assert type(out) is torch.Tensor
    assert out.shape == (3, H, W)
    assert out.dtype == torch.float32


def test_default_size_is_256_by_128(image: Image.Image) -> None:
    assert build_transforms()(image).shape == (3, 256, 128)


def test_test_transform_is_deterministic_and_equals_train_without_augmentation(
    image: Image.Image,
) -> None:
    test = build_transforms(height=H, width=W, train=False)
    torch.manual_seed(0)
    a = test(image)
    torch.manual_seed(1)
    assert torch.equal(a, test(image))
    assert torch.equal(a, build_transforms(**plain())(image))


def test_train_transform_is_reproducible_under_the_global_seed(image: Image.Image) -> None:
    train = build_transforms(height=H, width=W, color_jitter=0.2)
    torch.manual_seed(5)
    a = train(image)
    torch.manual_seed(5)
    assert torch.equal(a, train(image))


def test_flip_with_probability_one_mirrors_the_image(image: Image.Image) -> None:
    reference = build_transforms(**plain())(image)
    flipped = build_transforms(**plain(flip_prob=1.0))(image)
    assert not torch.equal(flipped, reference)
    assert torch.equal(flipped, reference.flip(-1))


def test_random_erasing_with_probability_one_fills_a_rectangle_with_the_mean(
    image: Image.Image,
) -> None:
    for normalize, fill in ((True, (0.0, 0.0, 0.0)), (False, IMAGENET_MEAN)):
        reference = build_transforms(**plain(normalize=normalize))(image)
        torch.manual_seed(0)
        erased = build_transforms(**plain(normalize=normalize, random_erasing_prob=1.0))(image)
        changed = (erased != reference).any(0)
        assert changed.any()
        rows, cols = changed.nonzero(as_tuple=True)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        expected = torch.tensor(fill).view(3, 1, 1).expand(3, H, W)[:, box[0], box[1]]
        assert torch.allclose(erased[:, box[0], box[1]], expected)
        assert torch.equal(erased[:, ~changed], reference[:, ~changed])


def test_padding_crop_shifts_content_and_colour_jitter_changes_colours(image: Image.Image) -> None:
    reference = build_transforms(**plain(normalize=False))(image)
    torch.manual_seed(0)
    shifted = [build_transforms(**plain(normalize=False, pad=10))(image) for _ in range(5)]
    assert any(not torch.equal(s, reference) for s in shifted)
    jittered = build_transforms(**plain(normalize=False, color_jitter=0.5))(image)
    assert jittered.shape == reference.shape
    assert not torch.equal(jittered, reference)
    assert jittered.min() >= 0.0 and jittered.max() <= 1.0


def test_normalisation_uses_the_configured_mean_and_std(image: Image.Image) -> None:
    raw = build_transforms(height=H, width=W, train=False, normalize=False)(image)
    assert raw.min() >= 0.0 and raw.max() <= 1.0
    default = build_transforms(height=H, width=W, train=False)(image)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(default, (raw - mean) / std, atol=1e-6)
    custom = build_transforms(height=H, width=W, train=False, mean=(0.5, 0.4, 0.3), std=(2, 3, 4))(
        image
    )
    expected = (raw - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor(
        [2.0, 3.0, 4.0]
    ).view(3, 1, 1)
    assert torch.allclose(custom, expected, atol=1e-6)


def test_uint8_tensor_input_is_accepted(image: Image.Image) -> None:
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
    test = build_transforms(height=H, width=W, train=False)
    assert torch.allclose(test(tensor), test(image), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 0},
        {"flip_prob": 1.5},
        {"random_erasing_prob": -0.1},
        {"pad": -1},
        {"color_jitter": -0.2},
        {"mean": (0.5, 0.5)},
    ],
)
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        build_transforms(**kwargs)
