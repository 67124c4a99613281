"""Train and test image transforms for re-identification, built from config values.

Both pipelines take a PIL image (any mode; converted to RGB) or a ``uint8`` tensor ``[C, H', W']``
and return a plain ``float32`` tensor ``[3, height, width]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real

import torch
from PIL import Image
from torchvision.transforms import v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RandomOcclusion", "build_transforms"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_INTERPOLATIONS: dict[str, v2.InterpolationMode] = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}


class RandomOcclusion:
    """Paint one random white square over the image (QAConv 2.1's occlusion augmentation).

    With ``S = min(H, W)``, the side ``s`` is drawn uniformly from the integers
    ``[max(1, floor(S * min_size)), floor(S * max_size))`` and the top-left corner from
    ``x0 in [0, W - s)``, ``y0 in [0, H - s)``, so the square always lies inside the image. It is
    applied to every image (no probability). Draws use torch's global RNG, so ``torch.manual_seed``
    (or the per-worker seeding of ``DataLoader``) makes it reproducible.

    :param min_size: smallest side as a fraction of ``S``, in ``[0, max_size]``.
    :param max_size: largest side (exclusive) as a fraction of ``S``, in ``(0, 1]``.

    Input: an image tensor ``[C, H, W]`` (``uint8``, as after ``v2.ToImage()``, or float in
    [0, 1]). Output: a copy of the same shape, dtype and tensor type with the square set to the
    dtype's white (255 for ``uint8``, 1.0 for float).
    """

    def __init__(self, min_size: float = 0.0, max_size: float = 0.8) -> None:
        if not 0.0 < max_size <= 1.0:
            raise ValueError(f"RandomOcclusion max_size must be in (0, 1], got {max_size}")
        if not 0.0 <= min_size <= max_size:
            raise ValueError(
                f"RandomOcclusion min_size must be in [0, max_size={max_size}], got {min_size}"
            )
        self.min_size = float(min_size)
        self.max_size = float(max_size)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim < 2:
            raise ValueError(
                f"RandomOcclusion needs an image [..., H, W], got {tuple(image.shape)}"
            )
        height, width = image.shape[-2:]
        short = min(height, width)
        low = max(1, math.floor(short * self.min_size))
        # The official range is half-open and can be empty for tiny images or min == max; fall
        # back to the single size ``low`` then instead of failing mid-epoch.
        high = max(math.floor(short * self.max_size), low + 1)
        side = int(torch.randint(low, high, ()).item())
        # A square as wide as the image has only one position; the half-open range would be empty.
        x0 = int(torch.randint(0, max(width - side, 1), ()).item())
        y0 = int(torch.randint(0, max(height - side, 1), ()).item())
        white = 255 if image.dtype == torch.uint8 else 1.0
        out = image.clone()  # clone keeps the tv_tensors.Image type, so later v2 ops see an image
        out[..., y0 : y0 + side, x0 : x0 + side] = white
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_size={self.min_size}, max_size={self.max_size})"


def _jitter_ranges(
    color_jitter: float | Sequence[float], hue: float | None
) -> tuple[tuple[float, float] | None, float]:
    """Validate ``color_jitter`` / ``hue`` and return (brightness/contrast/saturation range, hue).

    The range is ``None`` when those three factors are not jittered.
    """
    if isinstance(color_jitter, Real) and not isinstance(color_jitter, bool):
        strength = float(color_jitter)
        if strength < 0:
            raise ValueError(f"color_jitter strength must be >= 0, got {strength}")
        factors = (max(0.0, 1.0 - strength), 1.0 + strength) if strength > 0 else None
        default_hue = min(0.5, strength / 4)
    elif (
        isinstance(color_jitter, Sequence)
        and not isinstance(color_jitter, str)
        and len(color_jitter) == 2
        and all(isinstance(v, Real) and not isinstance(v, bool) for v in color_jitter)
    ):
        low, high = (float(v) for v in color_jitter)
        if low < 0 or low > high:
            raise ValueError(
                f"color_jitter [low, high] needs 0 <= low <= high, got [{low}, {high}]"
            )
        factors = None if low == high == 1.0 else (low, high)
        default_hue = 0.0
    else:
        raise ValueError(
            "color_jitter must be a strength >= 0 or a [low, high] factor range, "
            f"got {color_jitter!r}"
        )
    hue_bound = default_hue if hue is None else float(hue)
    if not 0.0 <= hue_bound <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue_bound}")
    return factors, hue_bound


def build_transforms(
    height: int = 256,
    width: int = 128,
    train: bool = True,
    flip_prob: float = 0.5,
    pad: int = 10,
    color_jitter: float | Sequence[float] = 0.0,
    random_erasing_prob: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    normalize: bool = True,
    interpolation: str = "bilinear",
    rotation: float = 0.0,
    hue: float | None = None,
    occlusion: float = 0.0,
    occlusion_min: float = 0.0,
) -> Callable[[Image.Image | torch.Tensor], torch.Tensor]:
    """Build the train pipeline (BoT-style by default) or the plain test pipeline.

    Train, in this order (each optional step is skipped at its disabling value):

    1. RGB, then resize to ``(height, width)`` with ``interpolation`` (antialiased).
    2. Horizontal flip with ``flip_prob``.
    3. Zero-pad by ``pad`` pixels and random-crop back to ``(height, width)``.
    4. Random rotation by an angle uniform in ``[-rotation, rotation]`` degrees, nearest
       neighbour, corners filled with 0 (black).
    5. Colour jitter of brightness, contrast, saturation and hue (``color_jitter``, ``hue``).
    6. Random occlusion: one white square (:class:`RandomOcclusion`) with side up to
       ``occlusion`` of the shorter image side.
    7. Float in [0, 1], then normalise with ``mean`` / ``std`` (when ``normalize``).
    8. Random erasing with ``random_erasing_prob``.

    Flip before crop (QAConv crops first) gives the same distribution: the padding is symmetric
    and the crop offset uniform, so a flipped crop is an equally likely crop of the flipped image.

    Test: RGB -> resize with ``interpolation`` -> float in [0, 1] -> normalise (when
    ``normalize``). Deterministic.

    :param height, width: output size in pixels.
    :param train: which pipeline to build; every augmentation argument is ignored for test (but
        still validated).
    :param flip_prob: probability of a horizontal flip (0 disables).
    :param pad: padding in pixels before the random crop (0 disables both).
    :param color_jitter: either a strength ``s``, where brightness, contrast and saturation factors
        are drawn from ``[1 - s, 1 + s]`` and hue from ``[-s / 4, s / 4]`` (capped at 0.5) --
        hue moves less because clothing colour is much of a person's identity; 0 disables --
        or a pair ``[low, high]`` (any 2-number sequence, e.g. a Hydra ``ListConfig``) used
        as the factor range of brightness, contrast and saturation, with no hue jitter unless
        ``hue`` is given. ``[1, 1]`` disables those three factors.
    :param random_erasing_prob: probability of erasing one rectangle of 2-40% of the image area
        with aspect ratio in [0.3, 3.3], as in BoT (0 disables).
    :param mean, std: per-channel statistics of the RGB input in [0, 1] (ImageNet by default).
    :param normalize: subtract ``mean`` and divide by ``std``.
    :param interpolation: ``"bilinear"`` or ``"bicubic"``, for the resize of both pipelines.
    :param rotation: maximum rotation angle in degrees (0 disables).
    :param hue: hue jitter bound in [0, 0.5]; the hue shift is drawn from ``[-hue, hue]``. ``None``
        keeps the default of ``color_jitter`` (``s / 4`` for a strength, 0 for a pair).
    :param occlusion: largest occlusion side as a fraction of ``min(height, width)``, in [0, 1]
        (0 disables). Applied to every training image.
    :param occlusion_min: smallest occlusion side fraction, in ``[0, occlusion]``.

    Random erasing fills the rectangle with the per-channel ``mean`` colour, which is BoT's
    intent: after normalisation that is the value 0, without normalisation it is ``mean``.

    Example, the QAConv 2.1 training recipe (no normalisation; pixels stay in [0, 1]) and its
    test counterpart ``build_transforms(384, 128, train=False, interpolation="bicubic",
    normalize=False)``::

        build_transforms(
            height=384, width=128, interpolation="bicubic", pad=10, flip_prob=0.5, rotation=5,
            color_jitter=[0.5, 2.0], hue=0.1, occlusion=0.8, occlusion_min=0.0,
            random_erasing_prob=0.0, normalize=False,
        )

    :returns: A callable mapping one image to ``float32`` ``[3, height, width]``.

    :raises ValueError: for an out-of-range or malformed argument.

    Determinism: the random transforms draw from torch's global RNG. Inside ``DataLoader``
    workers that RNG is seeded per worker from the loader's base seed (itself drawn from the
    main process's RNG or the loader's ``generator``), so ``seed_everything`` /
    ``Trainer(..., deterministic=True)``-style seeding makes the augmentations reproducible for a
    fixed ``num_workers``; call ``torch.manual_seed`` before calling the transform directly.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height} x {width}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 channels, got {len(mean)} and {len(std)}")
    for name, p in (("flip_prob", flip_prob), ("random_erasing_prob", random_erasing_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}"
        )
    if rotation < 0:
        raise ValueError(f"rotation must be >= 0 degrees, got {rotation}")
    if not 0.0 <= occlusion <= 1.0:
        raise ValueError(f"occlusion must be in [0, 1], got {occlusion}")
    # occlusion = 0 may switch the step off without also zeroing a configured occlusion_min.
    if not 0.0 <= occlusion_min <= (occlusion if occlusion > 0 else 1.0):
        raise ValueError(
            f"occlusion_min must be in [0, occlusion] (or [0, 1] when occlusion is 0), "
            f"got {occlusion_min} with occlusion={occlusion}"
        )
    jitter_factors, hue_bound = _jitter_ranges(color_jitter, hue)

    mean_t = [float(m) for m in mean]
    std_t = [float(s) for s in std]
    resize = v2.Resize(
        (height, width), interpolation=_INTERPOLATIONS[interpolation], antialias=True
    )
    # v2 ops run on uint8 tensors after ToImage, which is faster than PIL for the geometric ops.
    steps: list[Callable] = [v2.RGB(), v2.ToImage(), resize]
    if train:
        if flip_prob > 0:
            steps.append(v2.RandomHorizontalFlip(p=flip_prob))
        if pad > 0:
            steps.append(v2.RandomCrop((height, width), padding=pad, fill=0))
        if rotation > 0:
            # Nearest neighbour as in QAConv; a few degrees barely benefit from smoothing.
            steps.append(v2.RandomRotation(degrees=float(rotation), fill=0))
        if jitter_factors is not None or hue_bound > 0:
            steps.append(
                v2.ColorJitter(
                    brightness=jitter_factors,
                    contrast=jitter_factors,
                    saturation=jitter_factors,
                    hue=hue_bound if hue_bound > 0 else None,
                )
            )
        if occlusion > 0:
            # On uint8 before ToDtype, as QAConv pastes its square on the 8-bit image.
            steps.append(RandomOcclusion(min_size=occlusion_min, max_size=occlusion))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if normalize:
        steps.append(v2.Normalize(mean=mean_t, std=std_t))
    if train and random_erasing_prob > 0:
        fill = [0.0, 0.0, 0.0] if normalize else mean_t  # the mean colour in either space
        steps.append(
            v2.RandomErasing(p=random_erasing_prob, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=fill)
        )
    # Plain Tensor out: collate and downstream code need not know about tv_tensors.Image.
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)
