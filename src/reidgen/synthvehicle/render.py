"""Pixels: a vehicle built as flat 3-D faces, seen by a camera, painted over a road.

A vehicle is its side profile extruded across its width (the cabin narrower than the body, the
"tumblehome"), wheels as 12-sided prisms, and boxes on the roof. A view is an orthographic
projection after turning the vehicle by ``yaw`` (0: seen from the front, pi/2: its left side,
pi: its rear) and looking down by ``elevation``; faces turned away are dropped (back-face
culling) and the rest painted far to near. Details live on the faces they are fixed to, so they
show exactly where they physically are: a rear sticker only when the rear faces the camera, a
windscreen sticker only from the front, a side decal only from that side; roof items stand
above everything and show from every view.

The image is drawn at twice the output size and averaged down (anti-aliasing), then goes through
SynthPerson's camera chain (:func:`reidgen.synthperson.render.finish`: tone, colour cast,
resolution loss, blur, noise). Per camera (:func:`vehicle_camera`): the road (tarmac colour and
texture, a roadside band, lane markings), the sun's direction, the viewing axis and height,
and the imaging chain. Per image: the crop around the vehicle (scale, offset) and the texture's
position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reidgen.synthperson.render import SUPERSAMPLE, CameraLook, finish
from reidgen.synthvehicle.identity import Sticker, Vehicle

TYRE = np.array([22.0, 22.0, 24.0])
ARCH = np.array([14.0, 14.0, 16.0])
GRILLE = np.array([38.0, 39.0, 42.0])
HEADLIGHT = np.array([236.0, 236.0, 220.0])
TAIL_LIGHT = np.array([185.0, 22.0, 28.0])
LIGHT_BAR = (np.array([210.0, 30.0, 30.0]), np.array([30.0, 70.0, 220.0]))
SIGN = np.array([245.0, 200.0, 35.0])
# Rear lights, plate and stickers are placed in fractions of this height above the rear face's
# bottom, so that a lorry's lights sit low on its tall doors as on a car's short tailgate.
REAR_REFERENCE_M = 0.9
WHEEL_SIDES = 12


@dataclass
class Face:
    """A flat polygon of the vehicle and the details painted on it (same plane, same light)."""

    points: np.ndarray  # [n, 3] metres; x forward, y left, z up
    colour: np.ndarray  # [3] before lighting
    normal: np.ndarray  # [3] unit, outward
    glass: bool = False
    details: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (points, colour)


@dataclass
class VehicleMesh:
    """Drawn in this order: tyres (under everything), body faces far to near, roof items."""

    treads: list[Face]
    body: list[Face]
    roof: list[Face]
    length: float
    width: float


@dataclass(frozen=True)
class VehicleCamera:
    """One camera: its imaging chain (SynthPerson's :class:`CameraLook`, whose ``background``
    is the tarmac texture) and its road and light. Where it looks from is the plan's business
    (:class:`~reidgen.synthvehicle.network.CameraView`)."""

    look: CameraLook
    sun_azimuth: float  # radians, relative to the camera's line of sight (0: sun behind it)
    sun_elevation: float  # radians
    lane_colour: np.ndarray  # [3]
    dashed: bool
    band: tuple[float, np.ndarray] | None  # roadside at the image top: (height fraction, colour)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


class _Body:
    """The extruded profile of one vehicle, in metres, with helpers that place points on it."""

    def __init__(self, vehicle: Vehicle) -> None:
        kind = vehicle.vehicle_type
        self.kind = kind
        self.vehicle = vehicle
        self.shift_from = kind.beltline - 0.01  # points from here up belong to the cabin
        self.fx = np.array([self._fx(x, z) for x, z in kind.profile])
        self.fz = np.array([z for _, z in kind.profile])

    def _fx(self, fx: float, fz: float) -> float:
        return fx + self.vehicle.cabin_shift if fz >= self.shift_from and 0 < fx < 1 else fx

    def half_width(self, fz: float | np.ndarray) -> float | np.ndarray:
        above = np.clip((fz - self.kind.beltline) / (1 - self.kind.beltline), 0, 1)
        return self.vehicle.width / 2 * (1 - self.kind.tumblehome * above)

    def side_point(self, fx: float, fz: float, side: float, lift: float = 0.0) -> np.ndarray:
        """The point at profile fractions ``(fx, fz)`` on the left (``side`` 1) or right (-1)
        flank, ``lift`` metres out of the surface."""
        return np.array(
            [
                (fx - 0.5) * self.vehicle.length,
                side * (self.half_width(fz) + lift),
                fz * self.vehicle.height,
            ]
        )

    def vertex(self, index: int, v: float) -> np.ndarray:
        return self.side_point(self.fx[index], self.fz[index], v)

    def edge_point(self, edge: int, u: float, v: float) -> np.ndarray:
        """A point on profile edge ``edge``: ``u`` along it (0 at its first point), ``v`` across
        (-1 right flank, 1 left flank)."""
        start, end = self.vertex(edge, v), self.vertex(edge + 1, v)
        return start + (end - start) * u

    def edge_patch(self, edge: int, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
        return np.array(
            [
                self.edge_point(edge, u0, v0),
                self.edge_point(edge, u0, v1),
                self.edge_point(edge, u1, v1),
                self.edge_point(edge, u1, v0),
            ]
        )

    def edge_length(self, edge: int) -> float:
        return float(np.linalg.norm(self.vertex(edge + 1, 0.0) - self.vertex(edge, 0.0)))


def _box(low: np.ndarray, high: np.ndarray, colour: np.ndarray) -> list[Face]:
    """The five faces of an axis-aligned box that can face a camera above the ground."""
    (x0, y0, z0), (x1, y1, z1) = low, high
    corners = {
        (1, 0, 0): [(x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)],
        (-1, 0, 0): [(x0, y0, z0), (x0, y1, z0), (x0, y1, z1), (x0, y0, z1)],
        (0, 1, 0): [(x0, y1, z0), (x1, y1, z0), (x1, y1, z1), (x0, y1, z1)],
        (0, -1, 0): [(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)],
        (0, 0, 1): [(x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)],
    }
    return [
        Face(np.array(points, dtype=np.float64), colour, np.array(normal, dtype=np.float64))
        for normal, points in corners.items()
    ]


def _circle(centre: np.ndarray, radius: float, sides: int = WHEEL_SIDES) -> np.ndarray:
    """A polygon in the x-z plane at ``centre``'s y."""
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    return np.stack(
        [
            centre[0] + radius * np.cos(angles),
            np.full(sides, centre[1]),
            centre[2] + radius * np.sin(angles),
        ],
        axis=1,
    )


def _sticker_points(body: _Body, sticker: Sticker, side: float) -> np.ndarray:
    lift = 0.01
    return np.array(
        [
            body.side_point(body._fx(sticker.u0, sticker.v0), sticker.v0, side, lift),
            body.side_point(body._fx(sticker.u1, sticker.v0), sticker.v0, side, lift),
            body.side_point(body._fx(sticker.u1, sticker.v1), sticker.v1, side, lift),
            body.side_point(body._fx(sticker.u0, sticker.v1), sticker.v1, side, lift),
        ]
    )


def _rear_details(body: _Body, vehicle: Vehicle) -> list[tuple[np.ndarray, np.ndarray]]:
    edge = body.kind.rear
    scale = min(1.0, REAR_REFERENCE_M / body.edge_length(edge))
    details = [
        (body.edge_patch(edge, 0.62 * scale, 0.9 * scale, v0, v1), TAIL_LIGHT)
        for v0, v1 in ((-0.95, -0.62), (0.62, 0.95))
    ]
    details.append(
        (body.edge_patch(edge, 0.25 * scale, 0.45 * scale, -0.26, 0.26), _plate(vehicle))
    )
    for sticker in vehicle.stickers:
        if sticker.face == "rear":
            patch = body.edge_patch(
                edge, sticker.u0 * scale, sticker.u1 * scale, sticker.v0, sticker.v1
            )
            details.append((patch, np.array(sticker.colour, dtype=np.float64)))
    return details


def _plate(vehicle: Vehicle) -> np.ndarray:
    return np.array(vehicle.plate_colour, dtype=np.float64)


def _front_details(body: _Body, vehicle: Vehicle) -> list[tuple[np.ndarray, np.ndarray]]:
    edge = body.kind.front  # runs downwards: u = 0 at the top of the nose
    return [
        (body.edge_patch(edge, 0.12, 0.5, -0.5, 0.5), GRILLE),
        (body.edge_patch(edge, 0.06, 0.34, -0.93, -0.6), HEADLIGHT),
        (body.edge_patch(edge, 0.06, 0.34, 0.6, 0.93), HEADLIGHT),
        (body.edge_patch(edge, 0.58, 0.8, -0.24, 0.24), _plate(vehicle)),
    ]


def _side_details(
    body: _Body, vehicle: Vehicle, side: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    kind = body.kind
    glass = np.array(vehicle.glass_colour, dtype=np.float64) * 0.9
    details = [
        (np.array([body.side_point(body._fx(x, z), z, side, 0.005) for x, z in window]), glass)
        for window in kind.windows
    ]
    stickers = [s for s in vehicle.stickers if s.face in ("both", "left" if side > 0 else "right")]
    details += [(_sticker_points(body, s, side), np.array(s.colour, float)) for s in stickers]
    radius = kind.wheel_radius
    rim = np.array(vehicle.rim_colour, dtype=np.float64)
    for fx in kind.wheels:
        centre = body.side_point(fx, 0.0, side, 0.02)
        centre[2] = radius
        arch = _circle(centre, radius * 1.12, 16)
        details.append((arch[arch[:, 2] >= radius - 1e-9], ARCH))  # upper half: the wheel arch
        details.append((_circle(centre, radius), TYRE))
        details.append((_circle(centre, radius * 0.62), rim))
        details.append((_circle(centre, radius * 0.18, 8), TYRE * 2))
    return details


def _roof(body: _Body, vehicle: Vehicle) -> list[Face]:
    """The roof item's boxes, standing on the top edge of the profile."""
    top = [i for i, z in enumerate(body.fz) if z >= 0.999]
    x0, x1 = ((body.fx[top[0]] - 0.5) * vehicle.length, (body.fx[top[-1]] - 0.5) * vehicle.length)
    z = vehicle.height
    half = float(body.half_width(1.0))
    colour = np.array(vehicle.roof_colour, dtype=np.float64)
    faces: list[Face] = []
    if vehicle.roof in ("rack", "box"):
        for side in (-1, 1):
            faces += _box(
                np.array([x0 + 0.08, side * half * 0.92 - 0.03, z]),
                np.array([x1 - 0.08, side * half * 0.92 + 0.03, z + 0.07]),
                colour,
            )
        for bar in (x0 + 0.3, x1 - 0.3):
            faces += _box(
                np.array([bar - 0.03, -half * 0.95, z + 0.05]),
                np.array([bar + 0.03, half * 0.95, z + 0.1]),
                colour,
            )
    if vehicle.roof == "box":
        centre, span = (x0 + x1) / 2, max(0.9, 0.8 * (x1 - x0))
        faces += _box(
            np.array([centre - span / 2, -half * 0.62, z + 0.1]),
            np.array([centre + span / 2, half * 0.62, z + 0.45]),
            colour,
        )
    elif vehicle.roof == "light_bar":
        for side, light in zip((-1, 1), LIGHT_BAR, strict=True):
            inner, outer = sorted((0.0, side * half * 0.85))
            faces += _box(
                np.array([x1 - 0.45, inner, z]), np.array([x1 - 0.2, outer, z + 0.13]), light
            )
    elif vehicle.roof == "sign":
        centre = (x0 + x1) / 2
        faces += _box(
            np.array([centre - 0.12, -0.38, z]), np.array([centre + 0.12, 0.38, z + 0.25]), SIGN
        )
    return faces


def build_mesh(vehicle: Vehicle) -> VehicleMesh:
    """The vehicle's faces in its own frame (x forward, y left, z up, ground at z = 0)."""
    body = _Body(vehicle)
    kind = body.kind
    paint = np.array(vehicle.colour, dtype=np.float64)
    glass = np.array(vehicle.glass_colour, dtype=np.float64)
    count = len(kind.profile)
    faces: list[Face] = []
    for side in (-1.0, 1.0):
        outline = np.array([body.vertex(i, side) for i in range(count)])
        faces.append(
            Face(
                outline,
                paint,
                np.array([0.0, side, 0.0]),
                details=_side_details(body, vehicle, side),
            )
        )
    # The profile runs clockwise in (x, z), so (-dz, dx) points out of the vehicle.
    windscreen = max(kind.glass, key=lambda e: body.fx[e] + body.fx[e + 1])
    for edge in range(count - 1):
        d = np.array([body.fx[edge + 1] - body.fx[edge], body.fz[edge + 1] - body.fz[edge]])
        d = d * [vehicle.length, vehicle.height]
        if np.hypot(*d) < 1e-6:
            continue
        normal = _unit(np.array([-d[1], 0.0, d[0]]))
        face = Face(
            body.edge_patch(edge, 0, 1, -1, 1),
            glass if edge in kind.glass else paint,
            normal,
            glass=edge in kind.glass,
        )
        if edge == kind.front:
            face.details = _front_details(body, vehicle)
        elif edge == kind.rear:
            face.details = _rear_details(body, vehicle)
        elif edge == windscreen:
            face.details = [
                (body.edge_patch(edge, s.u0, s.u1, s.v0, s.v1), np.array(s.colour, float))
                for s in vehicle.stickers
                if s.face == "windscreen"
            ]
        faces.append(face)
    treads: list[Face] = []
    radius = kind.wheel_radius
    tyre_width = 0.28 if radius > 0.45 else 0.22
    for fx in kind.wheels:
        for side in (-1.0, 1.0):
            outer = body.side_point(fx, 0.0, side, 0.01)
            outer[2] = radius
            inner = outer - np.array([0.0, side * tyre_width, 0.0])
            ring_out, ring_in = _circle(outer, radius), _circle(inner, radius)
            for k in range(WHEEL_SIDES):
                j = (k + 1) % WHEEL_SIDES
                quad = np.array([ring_out[k], ring_out[j], ring_in[j], ring_in[k]])
                mid = (ring_out[k] + ring_out[j]) / 2 - outer
                treads.append(Face(quad, TYRE, _unit(np.array([mid[0], 0.0, mid[2]]))))
    return VehicleMesh(treads, faces, _roof(body, vehicle), vehicle.length, vehicle.width)


def view_axes(yaw: float, elevation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(towards the camera, screen right, screen up), unit vectors in the vehicle's frame."""
    ce, se, cy, sy = math.cos(elevation), math.sin(elevation), math.cos(yaw), math.sin(yaw)
    towards = np.array([ce * cy, ce * sy, se])
    right = np.array([-sy, cy, 0.0])
    up = np.array([-se * cy, -se * sy, ce])
    return towards, right, up


def _shade(colour: np.ndarray, normal: np.ndarray, sun: np.ndarray, glass: bool) -> tuple:
    light = 0.58 + 0.5 * max(0.0, float(normal @ sun))
    value = colour * light
    if glass:  # the sky's reflection on glass that faces up
        value = value + 70.0 * max(0.0, float(normal[2]))
    return tuple(int(c) for c in np.clip(value, 0, 255))


def crop_box(
    rng: np.random.Generator, mesh: VehicleMesh, right: np.ndarray, up: np.ndarray
) -> tuple[float, float, float, float]:
    """The detector's box on the screen plane: (left, top, width, height) in metres, ``top``
    the highest screen y. Loose or tight by a per-image margin on each side (scale and offset
    jitter); its aspect kept within [0.75, 1.6] as a detector's box, stretched to the image."""
    points = np.concatenate([f.points for f in mesh.body + mesh.roof + mesh.treads])
    xs, ys = points @ right, points @ up
    left, top, width, height = xs.min(), ys.max(), np.ptp(xs), np.ptp(ys)
    margins = rng.uniform(-0.02, 0.12, 4)
    left -= margins[0] * width
    top += margins[1] * height
    width *= 1 + margins[0] + margins[2]
    height *= 1 + margins[1] + margins[3]
    if width / height > 1.6:
        top += (width / 1.6 - height) / 2
        height = width / 1.6
    elif width / height < 0.75:
        left -= (height * 0.75 - width) / 2
        width = height * 0.75
    return float(left), float(top), float(width), float(height)


def render_vehicle(
    rng: np.random.Generator,
    mesh: VehicleMesh,
    camera: VehicleCamera,
    yaw: float,
    elevation: float,
    size: tuple[int, int],
    resolution: float,
) -> Image.Image:
    """One image ``size`` = (H, W) of ``mesh`` seen at ``yaw`` and ``elevation`` by ``camera``."""
    height, width = size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE
    towards, right, up = view_axes(yaw, elevation)
    # The sun stands still for the camera, so it turns with the view in the vehicle's frame.
    sun_yaw, cos_sun = yaw + camera.sun_azimuth, math.cos(camera.sun_elevation)
    sun = np.array(
        [cos_sun * math.cos(sun_yaw), cos_sun * math.sin(sun_yaw), math.sin(camera.sun_elevation)]
    )
    left, top, box_w, box_h = crop_box(rng, mesh, right, up)

    def screen(points: np.ndarray) -> list[tuple[float, float]]:
        xs = (points @ right - left) / box_w * width
        ys = (top - points @ up) / box_h * height
        return list(zip(xs.tolist(), ys.tolist(), strict=True))

    texture = camera.look.background
    y0 = int(rng.integers(texture.shape[0] - height + 1))
    x0 = int(rng.integers(texture.shape[1] - width + 1))
    canvas = Image.fromarray(texture[y0 : y0 + height, x0 : x0 + width].astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    _draw_lanes(rng, draw, screen, camera, mesh)
    if camera.band is not None:
        fraction, colour = camera.band
        draw.rectangle((0, 0, width, int(fraction * height)), fill=tuple(int(c) for c in colour))
    array = np.asarray(canvas, dtype=np.float32)
    # The shadow under the vehicle: its footprint, darkened and softened.
    mask = Image.new("L", (width, height), 0)
    half_l, half_w = mesh.length / 2 + 0.15, mesh.width / 2 + 0.12
    footprint = np.array(
        [[-half_l, -half_w, 0], [half_l, -half_w, 0], [half_l, half_w, 0], [-half_l, half_w, 0]]
    )
    ImageDraw.Draw(mask).polygon(screen(footprint), fill=255)
    soft = np.asarray(mask.filter(ImageFilter.BoxBlur(max(1, width // 48))), np.float32) / 255
    array *= 1 - 0.55 * soft[..., None]
    canvas = Image.fromarray(array.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)

    def paint(faces: list[Face]) -> None:
        visible = [f for f in faces if float(f.normal @ towards) > 1e-6]
        for face in sorted(visible, key=lambda f: float(f.points.mean(axis=0) @ towards)):
            draw.polygon(
                screen(face.points), fill=_shade(face.colour, face.normal, sun, face.glass)
            )
            for points, colour in face.details:
                draw.polygon(screen(points), fill=_shade(colour, face.normal, sun, False))

    paint(mesh.treads)
    paint(mesh.body)
    paint(mesh.roof)
    return finish(rng, np.asarray(canvas, dtype=np.float32), camera.look, size, resolution)


def _draw_lanes(
    rng: np.random.Generator,
    draw: ImageDraw.ImageDraw,
    screen: object,
    camera: VehicleCamera,
    mesh: VehicleMesh,
) -> None:
    """Lane lines on the ground, parallel to the vehicle (it drives in its lane)."""
    lateral = float(rng.uniform(-0.4, 0.4))
    phase = float(rng.uniform(0, 9))
    fill = tuple(int(c) for c in camera.lane_colour)
    reach = 40.0
    for offset in (-5.25, -1.75, 1.75, 5.25):
        y = lateral + offset
        spans = (
            [(x, x + 3.0) for x in np.arange(-reach + phase, reach, 9.0)]
            if camera.dashed and abs(offset) < 2
            else [(-reach, reach)]
        )
        for a, b in spans:
            quad = np.array(
                [[a, y - 0.07, 0], [b, y - 0.07, 0], [b, y + 0.07, 0], [a, y + 0.07, 0]]
            )
            draw.polygon(screen(quad), fill=fill)  # type: ignore[operator]
