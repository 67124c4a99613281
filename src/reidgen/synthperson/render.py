"""Pixels: figures rasterised into label maps, coloured, placed in a scene and seen by a camera.

The image is drawn at twice the output size and averaged down, which anti-aliases edges; label maps
(materials for colouring, body parts for the structure maps) come from the same primitives and the
same placement, so the structure maps align with the image pixel for pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reidgen.synthperson.figure import (
    BACKGROUND,
    BACKPACK,
    BAG,
    HAIR,
    HAT,
    LOWER,
    PRINT,
    SHADE_FACTORS,
    SHOES,
    SKIN,
    STRAP,
    UPPER,
    Primitive,
    build_figure,
)
from reidgen.synthperson.identity import Identity
from reidgen.synthperson.style import DomainStyle

STRUCTURE_YAWS_DEG = (0, 45, 90, 135, 180, 225, 270, 315)  # GCL's original view + 7 rotations
SUPERSAMPLE = 2


@dataclass(frozen=True)
class Placement:
    """Where the figure lands on a canvas: centre x, feet y and body height, all in pixels."""

    centre_x: float
    feet_y: float
    height: float

    def scaled(self, factor: float) -> Placement:
        return Placement(self.centre_x * factor, self.feet_y * factor, self.height * factor)


@dataclass(frozen=True)
class CameraLook:
    """How one camera sees: its scene and its imaging chain."""

    background: np.ndarray  # [h, w, 3] float32, larger than the canvas; images crop from it
    gain: np.ndarray  # [3] brightness times colour cast
    contrast: float
    blur_sigma: float
    noise_std: float
    jpeg_quality: int


def draw_labels(
    canvas: Image.Image, prims: list[Primitive], placement: Placement, use_parts: bool
) -> None:
    """Rasterises primitives (already sorted far to near) into an 'L' canvas.

    A pixel gets ``material | shade << 4``, or the body part when ``use_parts`` (parts 0 skipped).
    """
    draw = ImageDraw.Draw(canvas)
    cx, fy, h = placement.centre_x, placement.feet_y, placement.height

    def px(u: float, y: float) -> tuple[float, float]:
        return cx + u * h, fy - y * h

    for prim in prims:
        value = prim.part if use_parts else prim.material | (prim.shade << 4)
        if use_parts and not prim.part:
            continue
        p = prim.points
        if prim.shape == "poly":
            draw.polygon([px(p[i], p[i + 1]) for i in range(0, len(p), 2)], fill=value)
        elif prim.shape == "ellipse":
            u, y = px(p[0], p[1])
            draw.ellipse((u - p[2] * h, y - p[3] * h, u + p[2] * h, y + p[3] * h), fill=value)
        elif prim.shape == "chord":
            u, y = px(p[0], p[1])
            box = (u - p[2] * h, y - p[3] * h, u + p[2] * h, y + p[3] * h)
            draw.chord(box, p[4], p[5], fill=value)
        else:  # capsule: a thick segment with round ends
            (u0, y0), (u1, y1), r = px(p[0], p[1]), px(p[2], p[3]), p[4] * h
            length = math.hypot(u1 - u0, y1 - y0) or 1.0
            nu, ny = -(y1 - y0) / length * r, (u1 - u0) / length * r
            draw.polygon(
                [(u0 + nu, y0 + ny), (u1 + nu, y1 + ny), (u1 - nu, y1 - ny), (u0 - nu, y0 - ny)],
                fill=value,
            )
            draw.ellipse((u0 - r, y0 - r, u0 + r, y0 + r), fill=value)
            draw.ellipse((u1 - r, y1 - r, u1 + r, y1 + r), fill=value)


def colour_table(identity: Identity) -> np.ndarray:
    """[64, 3] float32 colours indexed by ``material | shade << 4``."""
    base = np.zeros((16, 3), dtype=np.float32)
    carried = identity.backpack or identity.bag or (0, 0, 0)
    for material, colour in (
        (SKIN, identity.skin),
        (HAIR, identity.hair),
        (HAT, identity.hat or (0, 0, 0)),
        (UPPER, identity.upper),
        (LOWER, identity.lower),
        (SHOES, identity.shoes),
        (BACKPACK, identity.backpack or (0, 0, 0)),
        (BAG, identity.bag or (0, 0, 0)),
        (PRINT, identity.upper_secondary),
        (STRAP, tuple(0.6 * c for c in carried)),
    ):
        base[material] = colour
    return np.concatenate([base * f for f in SHADE_FACTORS]).astype(np.float32)


def paint_figure(
    identity: Identity, yaw: float, phase: float, placement: Placement, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Colours a figure on a canvas of ``size`` (H, W).

    Returns (rgb [H, W, 3] float32, mask [H, W] bool of the figure's pixels).
    """
    height, width = size
    canvas = Image.new("L", (width, height), 0)
    draw_labels(canvas, build_figure(identity, yaw, phase), placement, use_parts=False)
    labels = np.asarray(canvas)
    rgb = colour_table(identity)[labels]
    material = labels & 15
    if identity.upper_pattern in ("stripes", "checks"):
        period = max(identity.pattern_period * placement.height, 2.0)
        rows = ((np.arange(height) - placement.feet_y) // period).astype(np.int64) % 2
        pattern = np.broadcast_to(rows[:, None].astype(bool), labels.shape)
        if identity.upper_pattern == "checks":
            cols = ((np.arange(width) - placement.centre_x) // period).astype(np.int64) % 2
            pattern = pattern ^ cols[None, :].astype(bool)
        where = pattern & (material == UPPER)
        shade = np.asarray(SHADE_FACTORS, dtype=np.float32)[labels[where] >> 4]
        rgb[where] = np.asarray(identity.upper_secondary, dtype=np.float32) * shade[:, None]
    mask = material != BACKGROUND
    # Light from above and a round body: darker towards the silhouette's sides and the feet.
    cols = (np.arange(width, dtype=np.float32) - placement.centre_x) / (0.16 * placement.height)
    across = np.clip(1.0 - 0.22 * cols**2, 0.6, 1.0)
    rows = (placement.feet_y - np.arange(height, dtype=np.float32)) / placement.height
    down = 0.85 + 0.15 * np.clip(rows, 0.0, 1.0)
    rgb *= (down[:, None] * across[None, :])[..., None]
    return rgb, mask


def structure_maps(
    identity: Identity, yaw: float, phase: float, placement: Placement, size: tuple[int, int]
) -> np.ndarray:
    """Body-part maps [H, W * 8] uint8: the image's own view, then yaw + 45, ..., + 315 degrees.

    Every view uses the image's placement (the body turned in place), so view 0 is aligned with the
    image; the labels are the indices of :data:`~reidgen.synthperson.figure.PART_NAMES`.
    """
    height, width = size
    strip = Image.new("L", (width * len(STRUCTURE_YAWS_DEG), height), 0)
    for index, degrees in enumerate(STRUCTURE_YAWS_DEG):
        canvas = Image.new("L", (width, height), 0)
        prims = build_figure(identity, yaw + math.radians(degrees), phase, accessories=False)
        draw_labels(canvas, prims, placement, use_parts=True)
        strip.paste(canvas, (index * width, 0))
    return np.asarray(strip)


def build_background(
    rng: np.random.Generator, style: DomainStyle, size: tuple[int, int]
) -> np.ndarray:
    """A camera's scene [h, w, 3] float32, wider and taller than a canvas of ``size`` (H, W)."""
    height, width = int(size[0] * 1.4), size[1] * 5
    base = np.asarray(style.background_colours[int(rng.integers(len(style.background_colours)))])
    image = Image.new("RGB", (width, height), tuple(int(c) for c in base))
    draw = ImageDraw.Draw(image)
    horizon = int(height * rng.uniform(0.55, 0.75))
    floor = np.clip(base * rng.uniform(0.55, 0.85) + rng.normal(0, 10, 3), 0, 255)
    draw.rectangle((0, horizon, width, height), fill=tuple(int(c) for c in floor))
    if style.background == "street":
        # Facades with windows, a pavement with joints, poles, signs and parked things.
        for _ in range(int(rng.integers(2, 5))):
            x0 = int(rng.uniform(0, width))
            x1 = x0 + int(rng.uniform(0.3, 1.2) * size[1] * 2)
            shade = np.clip(base * rng.uniform(0.6, 1.3) + rng.normal(0, 20, 3), 0, 255)
            draw.rectangle((x0, 0, x1, horizon), fill=tuple(int(c) for c in shade))
            pane = np.clip(shade * rng.uniform(0.2, 0.6), 0, 255)
            step_x, step_y = max(4, size[1] // 5), max(5, size[0] // 7)
            for wx in range(x0 + 2, x1 - step_x // 2, step_x):
                for wy in range(2, horizon - step_y, step_y):
                    draw.rectangle(
                        (wx, wy, wx + step_x // 2, wy + step_y // 2),
                        fill=tuple(int(c) for c in pane),
                    )
        joint = tuple(int(c) for c in np.clip(floor * 0.8, 0, 255))
        for y in range(horizon, height, max(3, size[0] // 12)):
            draw.line((0, y, width, y), fill=joint)
        for _ in range(int(rng.integers(3, 8))):
            # Mostly the scene's own hues, now and then a vivid sign or car.
            vivid = rng.uniform(20, 235, 3)
            mix = rng.uniform(0.2, 0.6) if rng.random() < 0.7 else 1.0
            colour = tuple(int(c) for c in mix * vivid + (1 - mix) * base)
            x0 = int(rng.uniform(0, width))
            if rng.random() < 0.5:  # pole or sign
                draw.rectangle(
                    (x0, int(horizon * rng.uniform(0.1, 0.6)), x0 + 3, horizon), fill=colour
                )
            else:  # car, bench or bin
                top = horizon - int(rng.uniform(0.1, 0.35) * size[0])
                draw.rectangle(
                    (x0, top, x0 + int(rng.uniform(0.3, 1.5) * size[1]), horizon + 4), fill=colour
                )
    else:
        # Studio: soft vertical panels and a clean floor.
        for _ in range(int(rng.integers(2, 5))):
            x0 = int(rng.uniform(0, width))
            shade = np.clip(base * rng.uniform(0.9, 1.1), 0, 255)
            draw.rectangle(
                (x0, 0, x0 + int(size[1] * rng.uniform(0.5, 2)), horizon),
                fill=tuple(int(c) for c in shade),
            )
    array = np.asarray(image, dtype=np.float32)
    texture = rng.normal(0.0, 6.0 if style.background == "street" else 1.5, array.shape[:2])
    return array + texture[..., None].astype(np.float32)


def camera_look(
    rng: np.random.Generator, style: DomainStyle, canvas_size: tuple[int, int]
) -> CameraLook:
    """Draws one camera's scene and imaging parameters from the domain."""
    brightness = rng.uniform(*style.brightness)
    cast = 1.0 + rng.uniform(-style.colour_cast, style.colour_cast, 3)
    return CameraLook(
        background=build_background(rng, style, canvas_size),
        gain=(brightness * cast).astype(np.float32),
        contrast=float(rng.uniform(*style.contrast)),
        blur_sigma=float(rng.uniform(*style.blur_sigma)),
        noise_std=float(rng.uniform(*style.noise_std)),
        jpeg_quality=int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1)),
    )


def finish(
    rng: np.random.Generator,
    canvas: np.ndarray,
    look: CameraLook,
    size: tuple[int, int],
    resolution: float,
) -> Image.Image:
    """The camera's imaging chain on a supersampled canvas: down to ``size``, tone, blur, noise."""
    height, width = size
    image = sum(
        canvas[dy::SUPERSAMPLE, dx::SUPERSAMPLE]
        for dy in range(SUPERSAMPLE)
        for dx in range(SUPERSAMPLE)
    ) * (1.0 / SUPERSAMPLE**2)
    jitter = rng.uniform(0.92, 1.08)
    image = ((image - 128.0) * look.contrast + 128.0) * (look.gain * jitter)
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    if resolution < 0.97:
        small = (max(8, round(width * resolution)), max(16, round(height * resolution)))
        pil = pil.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    sigma = look.blur_sigma * rng.uniform(0.7, 1.3) * width / 64
    if sigma > 0.15:
        pil = pil.filter(ImageFilter.GaussianBlur(sigma))
    if look.noise_std > 0:
        noisy = np.asarray(pil, dtype=np.float32)
        noisy = noisy + rng.standard_normal(noisy.shape, dtype=np.float32) * look.noise_std
        pil = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    return pil
