"""build_transforms: shapes, determinism, flip, erasing, normalisation, and the QAConv 2.1 extras
(bicubic resize, rotation, colour jitter ranges, white-square occlusion)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from reidgen.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomOcclusion,
    build_transforms,
)

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
        {"rotation": -5.0},
        {"color_jitter": [2.0, 0.5]},
        {"color_jitter": [-0.1, 1.0]},
        {"color_jitter": [0.5]},
        {"color_jitter": [0.5, 1.0, 2.0]},
        {"color_jitter": "strong"},
        {"color_jitter": [0.5, "2"]},
        {"hue": 0.6},
        {"hue": -0.1},
        {"color_jitter": [0.5, 2.0], "hue": 0.7},
        {"occlusion": 1.2},
        {"occlusion": -0.1},
        {"occlusion": 0.3, "occlusion_min": 0.5},
        {"occlusion_min": -0.1},
    ],
)
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        build_transforms(**kwargs)


# --- QAConv 2.1 extras ------------------------------------------------------------------------


@pytest.fixture
def smooth_image() -> Image.Image:
    """A photo-like 180 x 80 image: smooth gradients, a texture and a sharp-edged block."""
    yy, xx = np.mgrid[0:180, 0:80]
    rgb = np.stack([128 + 100 * np.sin(xx / 5.0 + yy / 9.0), 60 + yy, 200 - 1.5 * xx], -1)
    rgb[40:100, 10:70] = (30, 60, 200)  # a jacket: hard edges are where the kernels differ most
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def non_white(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """uint8 noise in [0, 254], so every 255 in an output was painted by the occlusion."""
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8))


def white_square(out: torch.Tensor, white: float = 255) -> tuple[int, int, int]:
    """(y0, x0, side) of the white pixels of ``out`` [C, H, W]; asserts they form one square."""
    mask = (out == white).all(0)
    rows, cols = mask.nonzero(as_tuple=True)
    assert rows.numel() > 0, "no white pixels"
    y0, x0 = int(rows.min()), int(cols.min())
    side_h, side_w = int(rows.max()) - y0 + 1, int(cols.max()) - x0 + 1
    assert side_h == side_w, f"white region is {side_h} x {side_w}, not a square"
    assert int(mask.sum()) == side_h * side_w, "white region is not a filled square"
    return y0, x0, side_h


def test_random_occlusion_paints_one_exactly_white_square_and_keeps_the_rest() -> None:
    image = tv_tensors.Image(non_white((3, 64, 32)))
    torch.manual_seed(0)
    out = RandomOcclusion(0.0, 0.8)(image)
    assert (
        isinstance(out, tv_tensors.Image) and out.dtype == torch.uint8 and out.shape == image.shape
    )
    y0, x0, side = white_square(out)
    square = (slice(None), slice(y0, y0 + side), slice(x0, x0 + side))
    assert (out[square] == 255).all()
    outside = torch.ones(64, 32, dtype=torch.bool)
    outside[square[1:]] = False
    assert torch.equal(out[:, outside], image[:, outside])
    assert (image != 255).all(), "the input must not be modified in place"


@pytest.mark.parametrize(("min_size", "low", "high"), [(0.0, 1, 101), (0.25, 32, 101)])
def test_random_occlusion_sides_and_positions_span_the_documented_ranges(
    min_size: float, low: int, high: int
) -> None:
    # 128-wide image, max 0.8: sides in [max(1, floor(128 * min)), floor(102.4)) = [low, 101].
    height, width = 130, 128
    occlude = RandomOcclusion(min_size, 0.8)
    image = non_white((1, height, width))  # one channel keeps the 400 draws fast
    sides, corners = [], []
    torch.manual_seed(0)
    for _ in range(400):
        y0, x0, side = white_square(occlude(image))
        # Half-open corner ranges: the square ends at least one pixel before the far edges.
        assert 0 <= x0 < width - side and 0 <= y0 < height - side
        sides.append(side)
        corners.append((y0, x0))
    assert min(sides) >= low and max(sides) <= high
    assert min(sides) <= low + 2 and max(sides) >= high - 2, "both ends of the range are drawn"
    assert min(x for _, x in corners) <= 2 and min(y for y, _ in corners) <= 2


def test_random_occlusion_handles_degenerate_ranges_and_float_images() -> None:
    torch.manual_seed(0)
    # min == max and a side equal to the whole image: the empty half-open ranges collapse.
    full = RandomOcclusion(1.0, 1.0)(non_white((3, 8, 8)))
    assert (full == 255).all()
    tiny = RandomOcclusion(0.0, 0.8)(non_white((3, 1, 1)))
    assert (tiny == 255).all()
    as_float = non_white((3, 20, 10)).float() / 255
    assert white_square(RandomOcclusion(0.5, 0.6)(as_float), white=1.0)[2] == 5
    with pytest.raises(ValueError):
        RandomOcclusion(0.0, 0.0)
    with pytest.raises(ValueError):
        RandomOcclusion(0.9, 0.5)


def test_occlusion_in_the_pipeline_is_white_in_0_1_and_reproducible() -> None:
    image = Image.fromarray(non_white((90, 40, 3)).numpy())
    reference = build_transforms(**plain(normalize=False))(image)
    occlude = build_transforms(**plain(normalize=False, occlusion=0.8, occlusion_min=0.3))
    outs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        outs.append(occlude(image))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    for out in outs:
        y0, x0, side = white_square(out, white=1.0)
        assert 9 <= side <= 25  # S = 32: [floor(32 * 0.3), floor(32 * 0.8)) = [9, 25)
        changed = (out != reference).any(0)
        assert not changed[:y0].any() and not changed[y0 + side :].any()
        assert not changed[:, :x0].any() and not changed[:, x0 + side :].any()


def test_rotation_turns_content_and_fills_corners_with_black() -> None:
    # Values in [1, 254]: an exact 0 can only be the rotation's fill.
    image = Image.fromarray((non_white((90, 40, 3)) // 2 + 1).numpy())
    reference = build_transforms(**plain(normalize=False))(image)
    torch.manual_seed(0)
    rotate = build_transforms(**plain(normalize=False, rotation=30.0))
    rotated = [rotate(image) for _ in range(8)]
    values = set((reference * 255).round().int().unique().tolist()) | {0}
    for out in rotated:
        assert out.shape == reference.shape and out.min() >= 0.0 and out.max() <= 1.0
        # Nearest neighbour: every output value is an input value or the black fill.
        assert set((out * 255).round().int().unique().tolist()) <= values
    # Angles under ~0.8 degrees move no pixel of a 64 x 32 image, so allow a rare identity.
    assert sum(not torch.equal(out, reference) for out in rotated) >= 6
    # Beyond a few degrees a corner of the frame turns black.
    corners = torch.stack([out[:, [0, 0, -1, -1], [0, -1, 0, -1]] for out in rotated])
    assert (corners == 0).all(1).sum() >= 4


@pytest.mark.parametrize("as_listconfig", [False, True])
def test_color_jitter_pair_is_the_factor_range(as_listconfig: bool) -> None:
    # A flat grey image isolates brightness: contrast blends towards the (same) grey mean and
    # saturation towards the (same) grey image, up to a few levels because the uint8 greyscale
    # conversion rounds 60 down to 59. A strength reading of the pair would scatter far more.
    grey = Image.new("RGB", (40, 90), (60, 60, 60))
    torch.manual_seed(0)
    for factor in (0.5, 2.0):
        pair = [factor, factor]
        jitter = OmegaConf.create({"v": pair}).v if as_listconfig else pair
        pipeline = build_transforms(**plain(normalize=False, color_jitter=jitter))
        for _ in range(5):  # the three factors are applied in a random order
            out = pipeline(grey)
            assert torch.allclose(out, torch.full_like(out, 60 * factor / 255), atol=4 / 255)
    image = Image.fromarray(non_white((90, 40, 3)).numpy())
    reference = build_transforms(**plain(normalize=False))(image)
    wide = build_transforms(**plain(normalize=False, color_jitter=(0.5, 2.0)))(image)
    assert not torch.equal(wide, reference) and wide.min() >= 0.0 and wide.max() <= 1.0


def test_hue_only_jitter_changes_colours_but_keeps_each_pixels_value(image: Image.Image) -> None:
    reference = build_transforms(**plain(normalize=False))(image)
    torch.manual_seed(0)
    shifted = build_transforms(**plain(normalize=False, hue=0.5))(image)
    assert not torch.equal(shifted, reference)
    assert shifted.min() >= 0.0 and shifted.max() <= 1.0
    # A hue rotation keeps HSV value, i.e. the brightest channel of every pixel.
    assert torch.allclose(shifted.amax(0), reference.amax(0), atol=1 / 255 + 1e-6)


@pytest.mark.parametrize(
    ("color_jitter", "hue", "factors", "hue_range"),
    [
        (0.4, None, (0.6, 1.4), (-0.1, 0.1)),
        (0.4, 0.0, (0.6, 1.4), None),
        (0.4, 0.3, (0.6, 1.4), (-0.3, 0.3)),
        ([0.5, 2.0], None, (0.5, 2.0), None),
        ((0.5, 2.0), 0.1, (0.5, 2.0), (-0.1, 0.1)),
        (0.0, 0.2, None, (-0.2, 0.2)),
    ],
)
def test_color_jitter_and_hue_configure_the_jitter_ranges(
    color_jitter: float | list[float],
    hue: float | None,
    factors: tuple[float, float] | None,
    hue_range: tuple[float, float] | None,
) -> None:
    pipeline = build_transforms(**plain(color_jitter=color_jitter, hue=hue))
    (jitter,) = [t for t in pipeline.transforms if isinstance(t, v2.ColorJitter)]
    for name in ("brightness", "contrast", "saturation"):
        got = getattr(jitter, name)
        assert got is None if factors is None else got == pytest.approx(factors)
    assert jitter.hue is None if hue_range is None else jitter.hue == pytest.approx(hue_range)


@pytest.mark.parametrize("color_jitter", [0.0, [1.0, 1.0]])
def test_no_jitter_when_the_range_is_the_identity(
    image: Image.Image, color_jitter: float | list[float]
) -> None:
    pipeline = build_transforms(**plain(color_jitter=color_jitter))
    assert not any(isinstance(t, v2.ColorJitter) for t in pipeline.transforms)
    assert torch.equal(pipeline(image), build_transforms(**plain())(image))


@pytest.mark.parametrize("train", [True, False])
def test_bicubic_resize_matches_torchvision_and_differs_from_bilinear(
    smooth_image: Image.Image, train: bool
) -> None:
    kwargs = plain(train=train, normalize=False)
    bicubic = build_transforms(**kwargs, interpolation="bicubic")(smooth_image)
    bilinear = build_transforms(**kwargs, interpolation="bilinear")(smooth_image)
    assert torch.equal(bilinear, build_transforms(**kwargs)(smooth_image))  # the default
    assert (bicubic - bilinear).abs().max() > 4 / 255
    expected = v2.functional.resize(
        v2.functional.pil_to_tensor(smooth_image),
        [H, W],
        interpolation=v2.InterpolationMode.BICUBIC,
        antialias=True,
    )
    assert torch.equal(bicubic, v2.functional.to_dtype(expected, torch.float32, scale=True))
    # QAConv resizes PIL images; the tensor kernel agrees with PIL's bicubic to one grey level.
    pil = v2.functional.pil_to_tensor(smooth_image.resize((W, H), Image.BICUBIC)).float() / 255
    assert (bicubic - pil).abs().max() <= 1 / 255 + 1e-6


def test_invalid_interpolation_names_the_argument_and_choices() -> None:
    with pytest.raises(ValueError, match=r"interpolation.*bicubic.*bilinear.*'nearest'"):
        build_transforms(interpolation="nearest")


def test_qaconv_recipe_gives_unnormalised_reproducible_384_by_128(image: Image.Image) -> None:
    qaconv = build_transforms(
        height=384,
        width=128,
        interpolation="bicubic",
        pad=10,
        flip_prob=0.5,
        rotation=5,
        color_jitter=[0.5, 2.0],
        hue=0.1,
        occlusion=0.8,
        random_erasing_prob=0.0,
        normalize=False,
    )
    names = [type(t).__name__ for t in qaconv.transforms]
    assert names.index("ColorJitter") < names.index("RandomOcclusion") < names.index("ToDtype")
    assert "Normalize" not in names and "RandomErasing" not in names
    torch.manual_seed(7)
    out = qaconv(image)
    torch.manual_seed(7)
    assert torch.equal(out, qaconv(image))
    assert out.shape == (3, 384, 128) and out.min() >= 0.0 and out.max() <= 1.0
    assert (out == 1.0).all(0).sum() >= 1  # the occluding square survives to the output
    test = build_transforms(384, 128, train=False, interpolation="bicubic", normalize=False)
    assert test(image).shape == (3, 384, 128) and 0.0 <= test(image).min() <= test(image).max() <= 1
