"""Train and test image transforms for re-identification, built from config values.

Both pipelines take a PIL image (any mode; converted to RGB) or a ``uint8`` tensor ``[C, H', W']``
and return a plain ``float32`` tensor ``[3, height, width]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_transforms"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def build_transforms(
    height: int = 256,
    width: int = 128,
    train: bool = True,
    flip_prob: float = 0.5,
    pad: int = 10,
    color_jitter: float = 0.0,
    random_erasing_prob: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    normalize: bool = True,
) -> Callable[[Image.Image | torch.Tensor], torch.Tensor]:
    """Build the BoT-style train pipeline or the plain test pipeline.

    Train: RGB -> resize to ``(height, width)`` -> horizontal flip with ``flip_prob`` -> zero-pad
    by ``pad`` pixels and random-crop back to ``(height, width)`` (skipped when ``pad == 0``) ->
    colour jitter (when ``color_jitter > 0``) -> float in [0, 1] -> normalise with ``mean`` /
    ``std`` (when ``normalize``) -> random erasing with ``random_erasing_prob``.

    Test: RGB -> resize -> float in [0, 1] -> normalise (when ``normalize``). Deterministic.

    Args:
        height, width: output size in pixels.
        train: which pipeline to build; every other augmentation argument is ignored for test.
        flip_prob: probability of a horizontal flip (0 disables).
        pad: padding in pixels before the random crop (0 disables both).
        color_jitter: strength ``s``; brightness, contrast and saturation factors are drawn from
            ``[1 - s, 1 + s]`` and hue from ``[-s / 4, s / 4]`` (capped at 0.5). Hue moves less
            because clothing colour is much of a person's identity. 0 disables.
        random_erasing_prob: probability of erasing one rectangle of 2-40% of the image area
            with aspect ratio in [0.3, 3.3], as in BoT (0 disables).
        mean, std: per-channel statistics of the RGB input in [0, 1] (ImageNet by default).
        normalize: subtract ``mean`` and divide by ``std``.

    Random erasing fills the rectangle with the per-channel ``mean`` colour, which is BoT's
    intent: after normalisation that is the value 0, without normalisation it is ``mean``.

    Returns:
        A callable mapping one image to ``float32`` ``[3, height, width]``.

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
    if pad < 0 or color_jitter < 0:
        raise ValueError(f"pad and color_jitter must be >= 0, got {pad} and {color_jitter}")

    mean_t = [float(m) for m in mean]
    std_t = [float(s) for s in std]
    # v2 ops run on uint8 tensors after ToImage, which is faster than PIL for the geometric ops.
    steps: list[Callable] = [v2.RGB(), v2.ToImage(), v2.Resize((height, width), antialias=True)]
    if train:
        if flip_prob > 0:
            steps.append(v2.RandomHorizontalFlip(p=flip_prob))
        if pad > 0:
            steps.append(v2.RandomCrop((height, width), padding=pad, fill=0))
        if color_jitter > 0:
            s = float(color_jitter)
            steps.append(
                v2.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4))
            )
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
