"""One detection crop: the person placed in a camera's scene with the per-image nuisances.

Nuisances drawn here, per image: bounding-box misalignment (loose boxes, cut heads or feet),
partial occlusion by an object or by another person, background position, brightness jitter, blur
and noise strength. Per-camera ones (scene, colour cast, contrast, JPEG quality) come from
:class:`~reidgen.synthperson.render.CameraLook`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from reidgen.synthperson.identity import Identity, sample_identity
from reidgen.synthperson.render import (
    STRUCTURE_YAWS_DEG,
    SUPERSAMPLE,
    CameraLook,
    Placement,
    finish,
    paint_figure,
    structure_maps,
)
from reidgen.synthperson.style import DomainStyle

PERSON, DISTRACTOR, JUNK = "person", "distractor", "junk"


@dataclass(frozen=True)
class RenderJob:
    """What to draw for one file; ``identity`` indexes the identity table (-1 for distractors)."""

    kind: str
    identity: int
    camera: int
    yaw: float
    phase: float
    scale: float
    resolution: float


def _placement(
    rng: np.random.Generator, job: RenderJob, style: DomainStyle, canvas: tuple[int, int]
) -> Placement:
    height, width = canvas
    person_height = job.scale * height
    if job.kind == JUNK:
        # Far too tight a box: only the head and shoulders, or only the legs, are in it.
        person_height = height * rng.uniform(1.6, 2.4)
        top_visible = rng.random() < 0.5
        feet = person_height if top_visible else height * rng.uniform(0.9, 1.0)
        return Placement(width / 2 + rng.normal(0, 0.1) * width, feet, person_height)
    dx = rng.normal(0.0, style.misalignment) * width
    dy = rng.normal(0.0, style.misalignment) * height
    if rng.random() < style.misalignment * 2:
        # A detector box that cuts the head or the feet.
        dy += rng.choice((-1.0, 1.0)) * rng.uniform(0.08, 0.18) * height
    return Placement(width / 2 + dx, (height + person_height) / 2 + dy, person_height)


def _occlude(rng: np.random.Generator, canvas: np.ndarray, style: DomainStyle) -> None:
    """Paints an object in front of the person: a bin, bench or car from below, or a pole."""
    height, width = canvas.shape[:2]
    colour = np.asarray(style.background_colours[int(rng.integers(len(style.background_colours)))])
    colour = np.clip(colour * rng.uniform(0.3, 1.2) + rng.normal(0, 25, 3), 0, 255)
    if rng.random() < 0.7:
        top = int(height * rng.uniform(0.62, 0.85))
        left = int(width * rng.uniform(-0.5, 0.5))
        right = left + int(width * rng.uniform(0.6, 1.4))
        canvas[top:, max(left, 0) : max(right, 0)] = colour
    else:
        centre = int(width * rng.uniform(0.15, 0.85))
        half = max(1, int(width * rng.uniform(0.04, 0.1)))
        canvas[:, max(centre - half, 0) : centre + half] = colour


def render_job(
    job: RenderJob,
    rng: np.random.Generator,
    identities: list[Identity],
    looks: list[CameraLook],
    style: DomainStyle,
    size: tuple[int, int],
) -> tuple[Image.Image, np.ndarray]:
    """Renders one file: the image (``size`` = (H, W)) and its structure strip [H, W * 8]."""
    canvas_size = (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE)
    look = looks[job.camera]
    bg_h, bg_w = look.background.shape[:2]
    top = int(rng.integers(0, bg_h - canvas_size[0] + 1))
    left = int(rng.integers(0, bg_w - canvas_size[1] + 1))
    canvas = look.background[top : top + canvas_size[0], left : left + canvas_size[1]].copy()

    subject: Identity | None = identities[job.identity] if job.identity >= 0 else None
    placement = _placement(rng, job, style, canvas_size)
    if job.kind == DISTRACTOR and rng.random() < 0.6:
        # A bad detection of a passer-by who is not among the identities: mostly cut off.
        subject = sample_identity(rng, style, pid=0)
        placement = Placement(
            canvas_size[1] * rng.uniform(0.1, 0.9),
            canvas_size[0] * rng.uniform(0.6, 2.0),
            canvas_size[0] * rng.uniform(1.0, 2.2),
        )

    others_in_front: list[tuple[np.ndarray, np.ndarray]] = []
    if job.kind == PERSON and rng.random() < style.other_person_prob:
        other = sample_identity(rng, style, pid=0)
        side = rng.choice((-1.0, 1.0))
        other_placement = Placement(
            placement.centre_x + side * canvas_size[1] * rng.uniform(0.45, 0.8),
            placement.feet_y + rng.normal(0, 0.05) * canvas_size[0],
            placement.height * rng.uniform(0.9, 1.1),
        )
        layer = paint_figure(
            other,
            rng.uniform(-math.pi, math.pi),
            rng.uniform(0, 2 * math.pi),
            other_placement,
            canvas_size,
        )
        if rng.random() < 0.5:
            np.copyto(canvas, layer[0], where=layer[1][..., None])
        else:
            others_in_front.append(layer)

    if subject is not None:
        rgb, mask = paint_figure(subject, job.yaw, job.phase, placement, canvas_size)
        np.copyto(canvas, rgb, where=mask[..., None])
        strip = structure_maps(subject, job.yaw, job.phase, placement.scaled(1 / SUPERSAMPLE), size)
    else:
        strip = np.zeros((size[0], size[1] * len(STRUCTURE_YAWS_DEG)), dtype=np.uint8)
    for rgb, mask in others_in_front:
        np.copyto(canvas, rgb, where=mask[..., None])
    if job.kind == PERSON and rng.random() < style.occlusion_prob:
        _occlude(rng, canvas, style)
    return finish(rng, canvas, look, size, job.resolution), strip
