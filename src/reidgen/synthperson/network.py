"""The camera network and the walks people take through it: every image's when, where and how.

Cameras stand on a site; neighbouring cameras are linked by walkways. Each identity walks a route
along the links at its own speed, so the time between two sightings is the walking distance over the
speed, plus noise. That gives temporal methods (TLift) a real signal: transit times between camera
pairs cluster around the pair's distance. The direction a person walks, seen from the camera's
optical axis, gives the viewpoint (front, back or side), so each camera has its own viewpoint bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reidgen.synthperson.presets import Preset
from reidgen.synthperson.style import DomainStyle

SEQUENCE_SECONDS = 3600.0  # one recording sequence (the `sN` of a Market name) per hour


@dataclass(frozen=True)
class CameraNetwork:
    """Camera positions on the site (metres), optical axes (radians) and walkway links."""

    positions: np.ndarray  # [C, 2]
    axes: np.ndarray  # [C]
    neighbours: tuple[tuple[int, ...], ...]

    @property
    def num_cameras(self) -> int:
        return len(self.positions)

    def distance(self, a: int, b: int) -> float:
        return float(np.linalg.norm(self.positions[a] - self.positions[b]))


def build_network(rng: np.random.Generator, style: DomainStyle) -> CameraNetwork:
    """Places ``style.num_cameras`` cameras and links each to its nearest neighbours (connected)."""
    count = style.num_cameras
    if count < 2:
        raise ValueError(f"a SynthPerson domain needs at least 2 cameras, got {count}")
    positions = rng.uniform(0.0, style.site_size_m, size=(count, 2))
    axes = rng.uniform(-math.pi, math.pi, size=count)
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    links: set[tuple[int, int]] = set()
    for camera in range(count):
        for other in np.argsort(distances[camera])[1:3]:
            links.add((min(camera, int(other)), max(camera, int(other))))
    # A chain in order of x keeps the graph connected whatever the nearest-neighbour links give.
    order = np.argsort(positions[:, 0])
    for a, b in zip(order[:-1], order[1:], strict=True):
        links.add((min(int(a), int(b)), max(int(a), int(b))))
    neighbours = tuple(
        tuple(sorted({b for a, b in links if a == c} | {a for a, b in links if b == c}))
        for c in range(count)
    )
    return CameraNetwork(positions=positions, axes=axes, neighbours=neighbours)


@dataclass(frozen=True)
class Sighting:
    """One image of one person: where, when and how the camera saw them."""

    identity: int  # index into the identity table
    camera: int
    time_s: float
    yaw: float  # person's heading relative to the camera: 0 faces the camera, pi shows the back
    phase: float  # walking cycle phase in radians
    scale: float  # person height as a fraction of the box height
    resolution: float  # fraction of the output resolution that the camera resolves at that distance
    visit: int  # counts visits of one identity; images of one visit form a tracklet


def walk(
    rng: np.random.Generator,
    network: CameraNetwork,
    style: DomainStyle,
    preset: Preset,
    identity: int,
    speed: float,
) -> list[Sighting]:
    """The sightings of one identity on one route through the network."""
    num_visits = int(rng.integers(preset.visits[0], preset.visits[1] + 1))
    route = [int(rng.integers(network.num_cameras))]
    while len(route) < num_visits:
        options = [c for c in network.neighbours[route[-1]] if len(route) < 2 or c != route[-2]]
        route.append(int(rng.choice(options or network.neighbours[route[-1]])))
    transits = [
        network.distance(a, b) / speed * rng.lognormal(0.0, 0.12) + rng.uniform(5.0, 20.0)
        for a, b in zip(route[:-1], route[1:], strict=True)
    ]
    duration = sum(transits)
    recording = style.recording_hours * 3600.0
    start = rng.uniform(10.0, max(recording - duration - 10.0, 20.0))
    sightings: list[Sighting] = []
    time = start
    for visit, camera in enumerate(route):
        if visit > 0:
            time += transits[visit - 1]
        heading = _heading(network, route, visit)
        yaw = heading - network.axes[camera] + math.pi
        scale = rng.uniform(*style.scale)
        resolution = rng.uniform(*style.resolution)
        dwell = rng.uniform(1.5, 5.0)
        count = int(rng.integers(preset.images_per_visit[0], preset.images_per_visit[1] + 1))
        offsets = np.sort(rng.uniform(0.0, dwell, size=count))
        phase0 = rng.uniform(0.0, 2 * math.pi)
        for offset in offsets:
            sightings.append(
                Sighting(
                    identity=identity,
                    camera=camera,
                    time_s=float(time + offset),
                    yaw=_wrap(yaw + math.radians(rng.normal(0.0, style.yaw_jitter_deg))),
                    # About one stride per second of walking.
                    phase=float((phase0 + 2 * math.pi * offset / 1.05) % (2 * math.pi)),
                    scale=float(scale),
                    resolution=float(resolution),
                    visit=visit,
                )
            )
        time += dwell
    return sightings


def _heading(network: CameraNetwork, route: list[int], visit: int) -> float:
    """Walking direction at a visit: towards the next camera, or away from the previous one."""
    if visit + 1 < len(route):
        delta = network.positions[route[visit + 1]] - network.positions[route[visit]]
    else:
        delta = network.positions[route[visit]] - network.positions[route[visit - 1]]
    return math.atan2(float(delta[1]), float(delta[0]))


def _wrap(angle: float) -> float:
    return float((angle + math.pi) % (2 * math.pi) - math.pi)


def frame_fields(time_s: float, fps: float) -> tuple[int, int]:
    """Market's ``sN`` (1-based recording sequence) and frame number within it for a time."""
    sequence_frames = int(round(SEQUENCE_SECONDS * fps))
    frame = int(round(time_s * fps))
    return frame // sequence_frames + 1, frame % sequence_frames
