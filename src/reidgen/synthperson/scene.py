"""One detection crop: the person placed in a camera's scene with the per-image nuisances.

Nuisances drawn here, per image: bounding-box misalignment (loose boxes, cut heads or feet),
partial occlusion by an object or by other people, background position, brightness jitter (and,
where the domain asks for it, a colour cast), blur and noise strength. Per-camera ones (scene,
colour cast, contrast, JPEG quality, downward view, resolution factor) come from
:class:`~reidgen.synthperson.render.CameraLook`.

Other people: one passer-by stands beside the person, behind or in front; a domain with a
``crowd`` of more than one spreads them in depth instead: farther ones smaller and higher in the
crop (cameras look down), nearer ones larger, lower and to the side, in front of the person.
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
    rng: np.random.Generator,
    job: RenderJob,
    style: DomainStyle,
    canvas: tuple[int, int],
    tilt: float,
) -> Placement:
    height, width = canvas
    person_height = job.scale * height
    if job.kind == JUNK:
        # Far too tight a box: only the head and shoulders, or only the legs, are in it.
        person_height = height * rng.uniform(1.6, 2.4)
        top_visible = rng.random() < 0.5
        feet = person_height if top_visible else height * rng.uniform(0.9, 1.0)
        return Placement(width / 2 + rng.normal(0, 0.1) * width, feet, person_height, tilt)
    dx = rng.normal(0.0, style.misalignment) * width
    dy = rng.normal(0.0, style.misalignment) * height
    if rng.random() < style.misalignment * 2:
        # A detector box that cuts the head or the feet.
        dy += rng.choice((-1.0, 1.0)) * rng.uniform(0.08, 0.18) * height
    return Placement(width / 2 + dx, (height + person_height) / 2 + dy, person_height, tilt)


def _passer_by(
    rng: np.random.Generator, subject: Placement, canvas: tuple[int, int], crowded: bool
) -> Placement:
    """Where another person stands, relative to the subject's placement on a canvas (H, W)."""
    height, width = canvas
    if not crowded:
        side = rng.choice((-1.0, 1.0))
        return Placement(
            subject.centre_x + side * width * rng.uniform(0.45, 0.8),
            subject.feet_y + rng.normal(0, 0.05) * height,
            subject.height * rng.uniform(0.9, 1.1),
            subject.tilt,
        )
    # Relative size stands for depth: nearer people are larger and, seen from above, lower.
    nearer = rng.uniform(0.6, 1.25)
    # People in front stand to the side (the box is the subject's detection); behind, anywhere.
    offset = rng.uniform(0.4, 0.85) if nearer > 1 else rng.uniform(0.0, 0.8)
    return Placement(
        subject.centre_x + rng.choice((-1.0, 1.0)) * offset * width,
        subject.feet_y + (nearer - 1.0) * height * rng.uniform(0.5, 1.0),
        subject.height * nearer,
        subject.tilt,
    )


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
    placement = _placement(rng, job, style, canvas_size, look.tilt)
    if job.kind == DISTRACTOR and rng.random() < 0.6:
        # A bad detection of a passer-by who is not among the identities: mostly cut off.
        subject = sample_identity(rng, style, pid=0)
        placement = Placement(
            canvas_size[1] * rng.uniform(0.1, 0.9),
            canvas_size[0] * rng.uniform(0.6, 2.0),
            canvas_size[0] * rng.uniform(1.0, 2.2),
            look.tilt,
        )

    # Other people as (height, (rgb, mask)) layers; painted far (small) to near (large).
    behind: list[tuple[float, tuple[np.ndarray, np.ndarray]]] = []
    in_front: list[tuple[float, tuple[np.ndarray, np.ndarray]]] = []
    if job.kind == PERSON and rng.random() < style.other_person_prob:
        low, high = style.crowd
        crowded = high > 1
        # No draw for the default single passer-by: studio and street keep their draws.
        count = int(rng.integers(low, high + 1)) if crowded else 1
        for _ in range(count):
            other = sample_identity(rng, style, pid=0)
            other_placement = _passer_by(rng, placement, canvas_size, crowded)
            layer = paint_figure(
                other,
                rng.uniform(-math.pi, math.pi),
                rng.uniform(0, 2 * math.pi),
                other_placement,
                canvas_size,
            )
            # In a crowd, the nearer (larger) people are in front; a lone one is either, by chance.
            front = other_placement.height > placement.height if crowded else rng.random() >= 0.5
            (in_front if front else behind).append((other_placement.height, layer))
    for _, (rgb, mask) in sorted(behind, key=lambda item: item[0]):
        np.copyto(canvas, rgb, where=mask[..., None])

    if subject is not None:
        rgb, mask = paint_figure(subject, job.yaw, job.phase, placement, canvas_size)
        np.copyto(canvas, rgb, where=mask[..., None])
        strip = structure_maps(subject, job.yaw, job.phase, placement.scaled(1 / SUPERSAMPLE), size)
    else:
        strip = np.zeros((size[0], size[1] * len(STRUCTURE_YAWS_DEG)), dtype=np.uint8)
    for _, (rgb, mask) in sorted(in_front, key=lambda item: item[0]):
        np.copyto(canvas, rgb, where=mask[..., None])
    if job.kind == PERSON and rng.random() < style.occlusion_prob:
        _occlude(rng, canvas, style)
    return finish(rng, canvas, look, size, job.resolution * look.resolution), strip
