"""The camera network: where each camera stands and looks from, what its road and imaging look
like, and the drives of vehicles past the cameras.

Cameras watch a road from the roadside; vehicles drive past in either direction, so a camera
whose axis shows the fronts of vehicles going one way shows the rears of those going the other
(VeRi-776's cameras do the same). In the VeRi layout the camera axes cover front / rear, the two
three-quarter pairs and side views, spread over the cameras; in the VehicleID layout every
camera looks along the road (front or rear views only, as VehicleID's images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from reidgen.synthperson.render import SUPERSAMPLE, CameraLook
from reidgen.synthvehicle.presets import VehiclePreset
from reidgen.synthvehicle.render import VehicleCamera

FPS = 25  # VeRi-776's third name field, read as a frame number at this rate
SITE_METRES = 2000.0
RECORDING_HOURS = 6.0
# Camera axes in the VeRi layout, as (axis, axis + pi) pairs: front / rear, the two
# three-quarter pairs, sides. Degrees.
VIEW_AXES_DEG = (0.0, 45.0, 90.0, 135.0)
TARMAC_BANDS = (
    (np.array([72.0, 110.0, 52.0]), "grass"),
    (np.array([160.0, 158.0, 150.0]), "pavement"),
    (np.array([42.0, 70.0, 38.0]), "hedge"),
    (np.array([150.0, 122.0, 100.0]), "wall"),
)


@dataclass(frozen=True)
class CameraView:
    """Where a camera stands and how it looks at the road."""

    position: tuple[float, float]  # metres on the site
    axis_yaw: float  # radians: the view of vehicles driving one way; the other way adds pi
    elevation: float  # radians, how far the camera looks down


@dataclass(frozen=True)
class Sighting:
    """One image of a drive: the camera, the frame number and the view."""

    camera: int
    frame: int
    yaw: float
    elevation: float
    resolution: float


def camera_views(
    rngs: list[np.random.Generator], order: np.ndarray, layout: str
) -> list[CameraView]:
    """One view per camera, camera ``c`` drawing from ``rngs[c]``; ``order``, a permutation of
    :data:`VIEW_AXES_DEG`'s indices, spreads the axis pairs over the cameras (VeRi layout)."""
    views = []
    for camera, rng in enumerate(rngs):
        position = (float(rng.uniform(0, SITE_METRES)), float(rng.uniform(0, SITE_METRES)))
        elevation = math.radians(rng.uniform(6.0, 24.0))
        jitter = rng.uniform(-12.0, 12.0)
        if layout == "vehicleid":
            axis = jitter * 0.8
        else:
            axis = VIEW_AXES_DEG[int(order[camera % len(order)])] + jitter
            axis += 180.0 * int(rng.integers(2))  # which way is "one way" for this camera
        views.append(CameraView(position, math.radians(axis), elevation))
    return views


def drive(
    rng: np.random.Generator, views: list[CameraView], preset: VehiclePreset
) -> list[Sighting]:
    """A vehicle's drive: distinct cameras in the order it passes them, a few frames each.

    Transit times follow the distances between cameras at the vehicle's speed, so frame numbers
    are consistent in time across the network.
    """
    count = int(rng.integers(preset.passes[0], preset.passes[1] + 1))
    cameras = [int(c) for c in rng.choice(len(views), count, replace=False)]
    heading = rng.uniform(0, 2 * np.pi)
    along = np.array([math.cos(heading), math.sin(heading)])
    cameras.sort(key=lambda c: float(np.asarray(views[c].position) @ along))
    speed = rng.uniform(8.0, 16.0)
    time_s = rng.uniform(0, RECORDING_HOURS * 3600)
    sightings: list[Sighting] = []
    previous: CameraView | None = None
    for camera in cameras:
        view = views[camera]
        if previous is not None:
            distance = math.dist(previous.position, view.position)
            time_s += distance / speed * rng.uniform(1.0, 1.5)
        previous = view
        # Which way it drives past this camera: front or rear of the camera's axis pair.
        yaw = view.axis_yaw + math.pi * int(rng.integers(2)) + rng.uniform(-0.15, 0.15)
        frame = int(round(time_s * FPS))
        step = int(rng.integers(3, 13))
        for shot in range(
            int(rng.integers(preset.images_per_pass[0], preset.images_per_pass[1] + 1))
        ):
            sightings.append(
                Sighting(
                    camera,
                    frame + shot * step,
                    float(yaw + rng.normal(0.0, 0.05)),
                    float(view.elevation + rng.uniform(-0.03, 0.03)),
                    float(rng.uniform(0.85, 1.0)),
                )
            )
    return sightings


def _road_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Tarmac: a grey with a tint, blotches at two scales and a few stains. [h, w, 3] float32."""
    height, width = shape
    level = rng.uniform(68.0, 138.0)
    base = level + rng.uniform(-7.0, 7.0, 3)
    coarse = rng.normal(0.0, 1.0, (height // 24 + 2, width // 24 + 2)).astype(np.float32)
    coarse_image = Image.fromarray(coarse, mode="F").resize((width, height), Image.BILINEAR)
    texture = base + np.asarray(coarse_image)[..., None] * rng.uniform(3.0, 10.0)
    texture = texture + rng.normal(0.0, rng.uniform(2.0, 7.0), (height, width, 1))
    stains = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(stains)
    for _ in range(int(rng.integers(0, 6))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(4, width / 6), rng.uniform(3, height / 10)
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=int(rng.integers(20, 70)))
    texture = texture * (1 - np.asarray(stains, np.float32)[..., None] / 255)
    return np.clip(texture, 0, 255).astype(np.float32)


def vehicle_camera(rng: np.random.Generator, size: tuple[int, int]) -> VehicleCamera:
    """Draws one camera's road, light and imaging chain for images of ``size`` (H, W)."""
    canvas = (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE)
    texture = _road_texture(rng, (int(canvas[0] * 1.4), int(canvas[1] * 1.4)))
    brightness = rng.uniform(0.68, 1.25)
    cast = 1.0 + rng.uniform(-0.08, 0.08, 3)
    look = CameraLook(
        background=texture,
        gain=(brightness * cast).astype(np.float32),
        contrast=float(rng.uniform(0.8, 1.15)),
        blur_sigma=float(rng.uniform(0.0, 0.9)),
        noise_std=float(rng.uniform(0.0, 7.0)),
        jpeg_quality=int(rng.integers(55, 96)),
        resolution=float(rng.uniform(0.6, 1.0)),
        image_colour_cast=0.03,
    )
    yellow = rng.random() < 0.25
    lane = np.array([220.0, 180.0, 40.0] if yellow else [228.0, 228.0, 222.0])
    band = None
    if rng.random() < 0.6:
        colour, _ = TARMAC_BANDS[int(rng.integers(len(TARMAC_BANDS)))]
        band = (float(rng.uniform(0.05, 0.22)), colour * rng.uniform(0.8, 1.1))
    return VehicleCamera(
        look=look,
        sun_azimuth=float(rng.uniform(-np.pi, np.pi)),
        sun_elevation=math.radians(rng.uniform(25.0, 70.0)),
        lane_colour=lane * rng.uniform(0.7, 1.0),
        dashed=bool(rng.random() < 0.6),
        band=band,
    )
