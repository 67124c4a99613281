"""Pixels: figures rasterised into label maps, coloured, placed in a scene and seen by a camera.

The image is drawn at twice the output size and averaged down, which anti-aliases edges; label maps
(materials for colouring, body parts for the structure maps) come from the same primitives and the
same placement, so the structure maps align with the image pixel for pixel.

A camera that looks down (:attr:`Placement.tilt`, from the domain's ``camera_tilt``) is
approximated by a vertical warp of the figure rather than a 3-D projection: the magnification
grows linearly with the height above the feet, so heads are larger and legs shorter than at eye
level, and more of the head shows hair (:func:`~reidgen.synthperson.figure.build_figure`). The
warp keeps the body's height in the box, so detector boxes stay as tight as at eye level.

Per camera (:func:`camera_look`): the scene (:func:`build_background`, of the domain's
``background`` kind or, when it lists ``alt_backgrounds``, of a kind the camera draws), the
brightness, colour cast and light colour, contrast, blur, noise, JPEG quality, downward view and a
resolution factor. Draws that only the newer domain settings need happen only when a domain uses
them, so studio and street images keep their bytes.
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
    """Where the figure lands on a canvas: centre x, feet y and body height, all in pixels; and
    how far the camera looks down on it (``tilt``, see the module docstring)."""

    centre_x: float
    feet_y: float
    height: float
    tilt: float = 0.0

    def scaled(self, factor: float) -> Placement:
        return Placement(
            self.centre_x * factor, self.feet_y * factor, self.height * factor, self.tilt
        )

    def magnification(self, y: float) -> tuple[float, float]:
        """The figure's (horizontal, vertical) scale at body height ``y`` (0 feet, 1 crown).

        Vertically 1 on average over the body, growing towards the head (nearer a high camera);
        horizontally ``1 + tilt / 4`` times that: seen from above, a body's height is
        foreshortened and its width is not, and the box is fitted to the height.
        """
        vertical = (1.0 + self.tilt * y) / (1.0 + self.tilt / 2)
        return vertical * (1.0 + self.tilt / 4), vertical

    def screen(self, u: float, y: float) -> tuple[float, float]:
        """Canvas pixel (x, y) of the body point ``u`` right of the axis, ``y`` up from the feet."""
        if not self.tilt:  # eye level: the plain scale, and the fast path
            return self.centre_x + u * self.height, self.feet_y - y * self.height
        # The vertical position integrates the vertical scale, so the crown stays at `height`.
        lifted = (y + self.tilt * y * y / 2) / (1.0 + self.tilt / 2)
        return (
            self.centre_x + u * self.magnification(y)[0] * self.height,
            self.feet_y - lifted * self.height,
        )


@dataclass(frozen=True)
class CameraLook:
    """How one camera sees: its scene and its imaging chain."""

    background: np.ndarray  # [h, w, 3] float32, larger than the canvas; images crop from it
    gain: np.ndarray  # [3] brightness times colour cast (times light colour)
    contrast: float
    blur_sigma: float
    noise_std: float
    jpeg_quality: int
    tilt: float = 0.0  # how far the camera looks down (Placement.tilt)
    resolution: float = 1.0  # factor on every image's resolution
    image_colour_cast: float = 0.0  # max per-channel gain deviation drawn per image


def draw_labels(
    canvas: Image.Image, prims: list[Primitive], placement: Placement, use_parts: bool
) -> None:
    """Rasterises primitives (already sorted far to near) into an 'L' canvas.

    A pixel gets ``material | shade << 4``, or the body part when ``use_parts`` (parts 0 skipped).
    Round shapes are scaled by the placement's magnification at their centre.
    """
    draw = ImageDraw.Draw(canvas)
    h = placement.height
    px = placement.screen

    for prim in prims:
        value = prim.part if use_parts else prim.material | (prim.shade << 4)
        if use_parts and not prim.part:
            continue
        p = prim.points
        if prim.shape == "poly":
            draw.polygon([px(p[i], p[i + 1]) for i in range(0, len(p), 2)], fill=value)
        elif prim.shape in ("ellipse", "chord"):
            u, y = px(p[0], p[1])
            mx, my = placement.magnification(p[1])
            box = (u - p[2] * h * mx, y - p[3] * h * my, u + p[2] * h * mx, y + p[3] * h * my)
            if prim.shape == "ellipse":
                draw.ellipse(box, fill=value)
            else:
                draw.chord(box, p[4], p[5], fill=value)
        else:  # capsule: a thick segment with round ends
            # A limb's thickness is a width: the horizontal scale at its middle.
            mid = placement.magnification((p[1] + p[3]) / 2)[0]
            (u0, y0), (u1, y1), r = px(p[0], p[1]), px(p[2], p[3]), p[4] * h * mid
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
    prims = build_figure(identity, yaw, phase, tilt=placement.tilt)
    draw_labels(canvas, prims, placement, use_parts=False)
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
    rng: np.random.Generator,
    style: DomainStyle,
    size: tuple[int, int],
    kind: str | None = None,
    tilt: float = 0.0,
) -> np.ndarray:
    """A camera's scene [h, w, 3] float32, wider and taller than a canvas of ``size`` (H, W).

    :param rng: the camera's generator.
    :param style: the domain (its background colours).
    :param size: the canvas (H, W) that images crop from the scene.
    :param kind: the scene kind, one of :data:`~reidgen.synthperson.style.SCENE_KINDS`; default
        the domain's ``background``.
    :param tilt: how far the camera looks down: the horizon rises, so more floor shows.
    :returns: [1.4 H, 5 W, 3] float32 in 0..255 units (plus texture noise).
    """
    kind = kind or style.background
    height, width = int(size[0] * 1.4), size[1] * 5
    base = np.asarray(style.background_colours[int(rng.integers(len(style.background_colours)))])
    image = Image.new("RGB", (width, height), tuple(int(c) for c in base))
    draw = ImageDraw.Draw(image)
    # A camera looking down sees the floor up to a higher line in its picture.
    horizon = int(height * rng.uniform(0.55, 0.75) * (1.0 - 0.35 * tilt))
    floor = np.clip(base * rng.uniform(0.55, 0.85) + rng.normal(0, 10, 3), 0, 255)
    draw.rectangle((0, horizon, width, height), fill=tuple(int(c) for c in floor))
    if kind == "mall":
        return _mall_scene(rng, image, base, floor, horizon, size)
    if kind == "street":
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
    texture = rng.normal(0.0, 6.0 if kind == "street" else 1.5, array.shape[:2])
    return array + texture[..., None].astype(np.float32)


# Shop signs: vivid fascia colours, and the dark or white ones of many brands.
_SIGN_COLOURS = np.array(
    [
        (200, 30, 40),
        (20, 70, 160),
        (240, 190, 20),
        (30, 140, 70),
        (240, 110, 20),
        (120, 40, 140),
        (25, 25, 30),
        (245, 245, 245),
    ],
    dtype=np.float64,
)
_GLASS = np.array((150.0, 175.0, 190.0))


def _rect(draw: ImageDraw.ImageDraw, box: tuple[float, ...], colour: np.ndarray) -> None:
    draw.rectangle(tuple(int(v) for v in box), fill=tuple(int(c) for c in np.clip(colour, 0, 255)))


def _mall_scene(
    rng: np.random.Generator,
    image: Image.Image,
    base: np.ndarray,
    floor: np.ndarray,
    horizon: int,
    size: tuple[int, int],
) -> np.ndarray:
    """Draws a mall on ``image``, whose wall (colour ``base``) and floor (colour ``floor``, from
    row ``horizon`` down) are filled in; ``size`` is the canvas (H, W) images crop.

    Top down: the ceiling with its light band, shop fronts (sign fascias, glass with goods behind,
    open entrances, pillars), then a glossy tiled floor in perspective that mirrors the shop
    fronts.

    :returns: the scene as :func:`build_background` returns it, [h, w, 3] float32.
    """
    width, height = image.size
    draw = ImageDraw.Draw(image)
    # Ceiling: a light band along it, brighter than anything else in the crop.
    ceiling = max(4, int(horizon * rng.uniform(0.14, 0.24)))
    _rect(draw, (0, 0, width, ceiling), base * rng.uniform(0.75, 0.9))
    light = np.array((255.0, 252.0, 240.0)) - rng.uniform(0, 15, 3)
    _rect(draw, (0, ceiling * 0.3, width, ceiling * 0.75), light)
    # Shop fronts, side by side; a pillar between two.
    fascia = ceiling + max(3, int((horizon - ceiling) * rng.uniform(0.15, 0.25)))
    x = -int(rng.uniform(0, size[1]))
    while x < width:
        shop = int(size[1] * rng.uniform(0.7, 1.6))
        pillar = max(2, int(size[1] * rng.uniform(0.06, 0.12)))
        _rect(draw, (x, ceiling, x + pillar, horizon), base * rng.uniform(0.8, 1.05))
        left, right = x + pillar, x + shop
        sign = _SIGN_COLOURS[int(rng.integers(len(_SIGN_COLOURS)))]
        _rect(draw, (left, ceiling, right, fascia), sign)
        # The lettering: a band that contrasts with the fascia.
        letters = 255.0 - sign * rng.uniform(0.6, 1.0)
        inset_x, inset_y = (right - left) * rng.uniform(0.15, 0.3), (fascia - ceiling) * 0.3
        _rect(draw, (left + inset_x, ceiling + inset_y, right - inset_x, fascia - inset_y), letters)
        if rng.random() < 0.3:  # an open entrance: the shop's dim inside
            _rect(draw, (left, fascia, right, horizon), base * rng.uniform(0.3, 0.5))
        else:
            glass = 0.6 * _GLASS + 0.4 * base
            _rect(draw, (left, fascia, right, horizon), glass * rng.uniform(0.85, 1.1))
            # Goods and mannequins behind the glass, dimmed by it.
            for _ in range(int(rng.integers(1, 4))):
                gx = rng.uniform(left, right)
                top = rng.uniform(fascia, horizon - 2)
                goods = 0.55 * rng.uniform(20, 235, 3) + 0.45 * glass
                _rect(draw, (gx, top, gx + size[1] * rng.uniform(0.08, 0.3), horizon), goods)
            frame = base * 0.45
            for mullion in np.arange(left, right, max(4.0, size[1] * 0.35)):
                _rect(draw, (mullion, fascia, mullion + 1, horizon), frame)
        _rect(draw, (left, horizon - max(2, size[0] // 40), right, horizon), base * 0.5)
        x += shop
    # Floor tiles in perspective: rows grow towards the camera, joints meet at a vanishing point.
    tile = floor * rng.uniform(1.04, 1.12)
    vanish_x = rng.uniform(0.3, 0.7) * width
    depth = height - horizon
    rows = [float(horizon)]
    step = max(2.0, size[0] * 0.03)
    while rows[-1] < height:
        rows.append(rows[-1] + step)
        step *= 1.3
    spacing = size[1] * rng.uniform(0.5, 0.8)
    columns = np.arange(vanish_x - 4 * width, vanish_x + 4 * width, spacing)

    def fan(column: float, y: float) -> float:
        # A joint's x at row y: a third of its offset at the horizon, all of it at the bottom.
        return vanish_x + (column - vanish_x) * (1 + 2 * (y - horizon) / depth) / 3

    for i, (y0, y1) in enumerate(zip(rows[:-1], rows[1:], strict=True)):
        for j, (c0, c1) in enumerate(zip(columns[:-1], columns[1:], strict=True)):
            if (i + j) % 2:
                quad = [(fan(c0, y0), y0), (fan(c1, y0), y0), (fan(c1, y1), y1), (fan(c0, y1), y1)]
                draw.polygon(quad, fill=tuple(int(c) for c in np.clip(tile, 0, 255)))
    array = np.asarray(image, dtype=np.float32).copy()
    # Gloss: the shop fronts mirrored in the floor, fading with the distance from the wall.
    reach = min(horizon - ceiling, depth)
    mirrored = array[horizon - reach : horizon][::-1]
    fade = (0.45 * (1.0 - np.arange(reach) / reach))[:, None, None]
    below = array[horizon : horizon + reach]
    array[horizon : horizon + reach] = (1 - fade) * below + fade * mirrored
    texture = rng.normal(0.0, 2.0, array.shape[:2])
    return array + texture[..., None].astype(np.float32)


def _uniform_unless_fixed(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A uniform draw from ``(low, high)``; no draw when low == high, so that the domains that
    leave a setting at its fixed default keep their sequence of draws (and their bytes)."""
    low, high = bounds
    return float(rng.uniform(low, high)) if low != high else float(low)


@dataclass(frozen=True)
class CameraStrata:
    """Which of ``count`` equal slices of the brightness and contrast ranges a camera draws from
    (``DomainStyle.spread_cameras``)."""

    brightness: int
    contrast: int
    count: int


def _in_stratum(
    rng: np.random.Generator, bounds: tuple[float, float], stratum: int | None, count: int
) -> float:
    if stratum is None:
        return float(rng.uniform(*bounds))
    low, high = bounds
    return low + (stratum + rng.random()) / count * (high - low)


def camera_look(
    rng: np.random.Generator,
    style: DomainStyle,
    canvas_size: tuple[int, int],
    strata: CameraStrata | None = None,
) -> CameraLook:
    """Draws one camera's scene and imaging parameters from the domain; with ``strata``, its
    brightness and contrast from its slices of their ranges."""
    count = strata.count if strata else 1
    brightness_slice = strata.brightness if strata else None
    contrast_slice = strata.contrast if strata else None
    brightness = _in_stratum(rng, style.brightness, brightness_slice, count)
    cast = 1.0 + rng.uniform(-style.colour_cast, style.colour_cast, 3)
    # Scene kind, light colour, downward view and sharpness: drawn only where the domain varies
    # them (see _uniform_unless_fixed).
    kind = style.background
    if style.alt_backgrounds:
        kinds = (style.background, *style.alt_backgrounds)
        kind = kinds[int(rng.integers(len(kinds)))]
    if style.light_tints:
        cast = cast * np.asarray(style.light_tints[int(rng.integers(len(style.light_tints)))])
    tilt = _uniform_unless_fixed(rng, style.camera_tilt)
    resolution = _uniform_unless_fixed(rng, style.camera_resolution)
    return CameraLook(
        background=build_background(rng, style, canvas_size, kind, tilt),
        gain=(brightness * cast).astype(np.float32),
        contrast=_in_stratum(rng, style.contrast, contrast_slice, count),
        blur_sigma=float(rng.uniform(*style.blur_sigma)),
        noise_std=float(rng.uniform(*style.noise_std)),
        jpeg_quality=int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1)),
        tilt=tilt,
        resolution=resolution,
        image_colour_cast=style.image_colour_cast,
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
    gain = look.gain * jitter
    if look.image_colour_cast:
        cast = look.image_colour_cast
        gain = gain * (1.0 + rng.uniform(-cast, cast, 3)).astype(np.float32)
    image = ((image - 128.0) * look.contrast + 128.0) * gain
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
