"""A 2.5-D walking figure: 3-D body-part primitives, turned about the vertical axis, projected.

Each part is a capsule, ellipse or polygon placed in body coordinates (x: the person's left,
y: up from the feet, z: forward, all in units of body height). A yaw turns the body about the
vertical axis; the projection keeps the horizontal screen coordinate and a depth, and parts are
drawn far to near. That is enough for viewpoint to matter the way it does in real crops: a backpack
fills the back view and shows only its straps from the front, a chest print is seen only from the
front, the far arm hides behind the torso in a side view, and legs swing visibly only from the side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from reidgen.synthperson.identity import Identity

# Materials decide colours (index into a colour table); shade levels darken far-side parts.
MATERIAL_NAMES = (
    "background",
    "skin",
    "hair",
    "hat",
    "upper",
    "lower",
    "shoes",
    "backpack",
    "bag",
    "print",
    "strap",
)
BACKGROUND, SKIN, HAIR, HAT, UPPER, LOWER, SHOES, BACKPACK, BAG, PRINT, STRAP = range(11)
SHADE_FACTORS = (1.0, 0.82, 0.68, 0.55)

# Body parts of the structure maps (identity-neutral: no clothes, hair or carried objects).
PART_NAMES = (
    "background",
    "head",
    "torso",
    "left_upper_arm",
    "left_lower_arm",
    "right_upper_arm",
    "right_lower_arm",
    "left_upper_leg",
    "left_lower_leg",
    "right_upper_leg",
    "right_lower_leg",
)
HEAD, TORSO = 1, 2
ARM_PARTS = {1: (3, 4), -1: (5, 6)}  # side -> (upper, lower); side +1 is the person's left
LEG_PARTS = {1: (7, 8), -1: (9, 10)}


class Primitive(NamedTuple):
    """One shape in screen-body units: u to the right, y up, both in body heights.

    ``shape`` is ``"poly"`` (``points``), ``"ellipse"`` (``points`` = centre and half sizes) or
    ``"chord"`` (an ellipse cut by a chord: centre, half sizes, start and end angle in degrees,
    clockwise from the right, as PIL draws them).
    """

    depth: float
    shape: str
    points: tuple[float, ...]
    material: int
    part: int
    shade: int


@dataclass(frozen=True)
class _View:
    cos: float
    sin: float

    def project(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """Body point -> (screen u, y, depth towards the camera)."""
        return x * self.cos + z * self.sin, y, -x * self.sin + z * self.cos

    def half_width(self, half_x: float, half_z: float) -> float:
        """Projected half width of an ellipse cross-section with these half axes."""
        return math.hypot(half_x * self.cos, half_z * self.sin)


def _capsule(
    view: _View, start: tuple[float, float, float], end: tuple[float, float, float], radius: float
) -> tuple[float, tuple[float, ...]]:
    u0, y0, d0 = view.project(*start)
    u1, y1, d1 = view.project(*end)
    return (d0 + d1) / 2, (u0, y0, u1, y1, radius)


def _shade(depth: float) -> int:
    return 1 if depth < -0.02 else 0


def build_figure(
    identity: Identity, yaw: float, phase: float, accessories: bool = True, tilt: float = 0.0
) -> list[Primitive]:
    """Primitives of ``identity`` walking at ``phase`` and turned by ``yaw``, sorted far to near.

    ``yaw`` 0 faces the camera, pi shows the back. With ``accessories=False`` only the body is
    built (no clothes-only shapes, hair or carried objects): the structure maps use that. ``tilt``
    (a camera looking down, see :class:`~reidgen.synthperson.render.Placement`) shows more of the
    top of the head: hair covers more of it, the face less.
    """
    body = identity.body
    view = _View(math.cos(yaw), math.sin(yaw))
    prims: list[Primitive] = []

    def add(depth: float, shape: str, points: tuple[float, ...], material: int, part: int) -> None:
        if accessories or part:
            prims.append(Primitive(depth, shape, points, material, part, _shade(depth)))

    hip_y = body.leg_length
    knee_y = hip_y * 0.52
    ankle_y = 0.035
    shoulder_y = 0.8
    head_r = body.head_radius
    head_y = 1.0 - head_r * 1.12
    limb = body.limb_width
    swing = math.sin(phase)

    # Legs: thigh and shin capsules, the shoe an ellipse pointing forward.
    thigh_depths = []
    for side in (1, -1):
        upper_part, lower_part = LEG_PARTS[side]
        beta = side * body.stride * swing
        bend = 0.5 * body.stride * max(0.0, -side * swing)
        x = side * body.hip_width * 0.28
        thigh = hip_y - knee_y
        shin = knee_y - ankle_y
        hip = (x, hip_y, 0.0)
        knee = (x, hip_y - thigh * math.cos(beta), thigh * math.sin(beta))
        gamma = beta - bend
        ankle = (x, knee[1] - shin * math.cos(gamma), knee[2] + shin * math.sin(gamma))
        thigh_material = SKIN if identity.lower_type == "skirt" else LOWER
        shin_material = LOWER if identity.lower_type == "trousers" else SKIN
        depth, pts = _capsule(view, hip, knee, limb * 0.62)
        thigh_depths.append(depth)
        add(depth, "capsule", pts, thigh_material, upper_part)
        depth, pts = _capsule(view, knee, ankle, limb * 0.5)
        add(depth, "capsule", pts, shin_material, lower_part)
        foot_u, foot_y, foot_d = view.project(ankle[0], ankle[1] - 0.012, ankle[2] + 0.03)
        add(
            foot_d + 0.001,
            "ellipse",
            (foot_u, foot_y, view.half_width(limb * 0.55, 0.055), 0.024),
            SHOES,
            lower_part,
        )

    # Torso: a trapezoid with rounded shoulders; the pelvis in the lower garment.
    shoulder_half = view.half_width(body.shoulder_width / 2, body.torso_depth / 2)
    hip_half = view.half_width(body.hip_width / 2, body.torso_depth * 0.45)
    torso = (
        -hip_half,
        hip_y - 0.02,
        hip_half,
        hip_y - 0.02,
        shoulder_half,
        shoulder_y - 0.02,
        shoulder_half * 0.75,
        shoulder_y + 0.025,
        -shoulder_half * 0.75,
        shoulder_y + 0.025,
        -shoulder_half,
        shoulder_y - 0.02,
    )
    add(0.0, "poly", torso, UPPER, TORSO)
    pelvis = (
        -hip_half * 1.02,
        hip_y + 0.05,
        hip_half * 1.02,
        hip_y + 0.05,
        hip_half * 1.02,
        hip_y - 0.07,
        -hip_half * 1.02,
        hip_y - 0.07,
    )
    add(0.001, "poly", pelvis, LOWER, TORSO)
    if identity.lower_type == "skirt":
        flare = hip_half * 1.5 + 0.03 * abs(swing)
        skirt = (
            -hip_half * 1.05,
            hip_y + 0.05,
            hip_half * 1.05,
            hip_y + 0.05,
            flare,
            knee_y + 0.02,
            -flare,
            knee_y + 0.02,
        )
        add(max(thigh_depths) + 0.01, "poly", skirt, LOWER, 0)

    # Arms swing against the leg of the same side; the forearm bends forward a little.
    for side in (1, -1):
        upper_part, lower_part = ARM_PARTS[side]
        alpha = -side * body.stride * 0.8 * swing
        x = side * (body.shoulder_width / 2 + limb * 0.25)
        shoulder = (x, shoulder_y - 0.01, 0.0)
        elbow = (x, shoulder[1] - 0.16 * math.cos(alpha), 0.16 * math.sin(alpha))
        fore = alpha + 0.25
        hand = (x, elbow[1] - 0.15 * math.cos(fore), elbow[2] + 0.15 * math.sin(fore))
        depth, pts = _capsule(view, shoulder, elbow, limb * 0.5)
        add(depth, "capsule", pts, UPPER, upper_part)
        depth, pts = _capsule(view, elbow, hand, limb * 0.42)
        add(depth, "capsule", pts, UPPER if identity.long_sleeves else SKIN, lower_part)
        hand_u, hand_y, hand_d = view.project(*hand)
        add(hand_d + 0.001, "ellipse", (hand_u, hand_y, limb * 0.45, limb * 0.5), SKIN, lower_part)

    # Neck and head; the head is nearly round, a little longer front to back.
    add(-0.001, "capsule", (0.0, shoulder_y, 0.0, head_y - head_r * 0.6, head_r * 0.45), SKIN, HEAD)
    head_half = view.half_width(head_r * 0.85, head_r)
    forward_u = view.sin * head_r * 0.12
    add(0.002, "ellipse", (forward_u, head_y, head_half, head_r * 1.12), SKIN, HEAD)

    away = (1.0 - view.cos) / 2  # 0 facing the camera, 1 showing the back
    if identity.hair_style == "long":
        u, y, depth = view.project(0.0, head_y - head_r * 1.3, -head_r * 0.7)
        add(depth, "ellipse", (u, y, head_half * 1.05, head_r * 1.7), HAIR, 0)
    if identity.hair_style in ("short", "long"):
        spread = min(70 + 95 * away + 70 * tilt, 180)
        add(
            0.003,
            "chord",
            (
                forward_u - view.sin * head_r * 0.2,
                head_y - head_r * 0.04,
                head_half * 1.08,
                head_r * 1.16,
                270 - spread,
                270 + spread,
            ),
            HAIR,
            0,
        )
    if identity.hat is not None:
        add(
            0.004,
            "chord",
            (forward_u, head_y - head_r * 0.08, head_half * 1.14, head_r * 1.2, 195, 345),
            HAT,
            0,
        )
        add(
            0.004,
            "ellipse",
            (
                forward_u + view.sin * head_r * 0.5,
                head_y + head_r * 0.32,
                head_half * 1.25,
                head_r * 0.16,
            ),
            HAT,
            0,
        )

    # Carried objects and what shows of them from the front.
    front = body.torso_depth / 2
    if identity.backpack is not None:
        half_x, half_z, centre_z = body.shoulder_width * 0.4, 0.05, -(front + 0.05)
        corners = [
            view.project(sx * half_x, 0.0, centre_z + sz * half_z)
            for sx in (-1, 1)
            for sz in (-1, 1)
        ]
        left, right = min(c[0] for c in corners), max(c[0] for c in corners)
        top, bottom = shoulder_y + 0.01, shoulder_y - 0.27
        depth = view.project(0.0, 0.0, centre_z)[2]
        add(depth, "poly", (left, top, right, top, right, bottom, left, bottom), BACKPACK, 0)
        for sx in (-1, 1):
            u0, _, d0 = view.project(sx * body.shoulder_width * 0.22, 0.0, front + 0.004)
            strap = (
                u0 - 0.008,
                shoulder_y + 0.02,
                u0 + 0.008,
                shoulder_y + 0.02,
                u0 + 0.008,
                shoulder_y - 0.2,
                u0 - 0.008,
                shoulder_y - 0.2,
            )
            add(d0, "poly", strap, STRAP, 0)
    if identity.bag is not None:
        u, _, depth = view.project(body.shoulder_width / 2 + 0.045, 0.0, 0.02)
        half = view.half_width(0.025, 0.08)
        add(
            depth,
            "poly",
            (
                u - half,
                hip_y + 0.09,
                u + half,
                hip_y + 0.09,
                u + half,
                hip_y - 0.05,
                u - half,
                hip_y - 0.05,
            ),
            BAG,
            0,
        )
        u0, _, d0 = view.project(-body.shoulder_width * 0.3, 0.0, front + 0.005)
        u1, _, _ = view.project(body.shoulder_width * 0.4, 0.0, front + 0.005)
        strap = (
            u0 - 0.008,
            shoulder_y + 0.02,
            u0 + 0.008,
            shoulder_y + 0.02,
            u1 + 0.008,
            hip_y + 0.05,
            u1 - 0.008,
            hip_y + 0.05,
        )
        add(d0, "poly", strap, STRAP, 0)
    if identity.upper_pattern == "print":
        u, y, depth = view.project(0.0, shoulder_y - 0.11, front + 0.003)
        half = 0.05 * max(view.cos, 0.0)
        if half > 0.01:
            add(depth, "ellipse", (u, y, half, 0.045), PRINT, 0)

    prims.sort(key=lambda p: p.depth)
    return prims
