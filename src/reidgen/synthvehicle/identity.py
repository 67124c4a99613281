"""Vehicle identities: a model (type and shape), a body colour, and the details that tell two
vehicles of the same model and colour apart (roof items, stickers, rims, window tint).

Shapes are side profiles: polygons in ``(fx, fz)``, fractions of the vehicle's length from the
rear and of its height from the ground, extruded across its width by
:mod:`reidgen.synthvehicle.render`. Sizes are in metres.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reidgen.synthperson.identity import _choice

RGB = tuple[int, int, int]
Point = tuple[float, float]


@dataclass(frozen=True)
class VehicleType:
    """One silhouette family and its size ranges.

    ``profile`` runs around the side outline from the rear bottom over the roof to the front
    bottom; ``glass`` lists the profile edges (index ``i`` joins points ``i`` and ``i + 1``) that
    are windows (windscreen, rear window); ``front`` and ``rear`` the edges that carry lights
    and a plate. ``windows`` are the side windows, ``pillars`` the x fractions of the pillars
    between them, ``wheels`` the x fractions of the axles.
    """

    name: str
    weight: float  # share of traffic
    length: tuple[float, float]
    width: tuple[float, float]
    height: tuple[float, float]
    wheel_radius: float
    profile: tuple[Point, ...]
    glass: tuple[int, ...]
    front: int
    rear: int
    windows: tuple[tuple[Point, ...], ...]
    pillars: tuple[float, ...]
    wheels: tuple[float, ...]
    beltline: float  # fz of the window bottoms; the cabin narrows above it
    tumblehome: float  # how much narrower the roof is than the body, as a fraction
    decals: tuple[float, float] = (0.22, 0.62)  # fz band of the side decals (below windows)
    roof_items: bool = True  # cars carry racks and boxes; buses and lorries do not


# Ordered as real traffic (VeRi-776's types: sedan, SUV, hatchback, MPV / van, pickup, bus,
# truck), sedans first.
VEHICLE_TYPES: tuple[VehicleType, ...] = (
    VehicleType(
        "sedan", 0.34, (4.4, 5.0), (1.75, 1.9), (1.40, 1.50), 0.33,
        ((0, 0.14), (0, 0.6), (0.04, 0.66), (0.21, 0.68), (0.31, 1.0), (0.62, 1.0),
         (0.75, 0.66), (0.97, 0.6), (1.0, 0.5), (1.0, 0.14)),
        glass=(3, 5), front=8, rear=0,
        windows=(((0.23, 0.7), (0.32, 0.96), (0.46, 0.96), (0.46, 0.7)),
                 ((0.48, 0.7), (0.48, 0.96), (0.61, 0.96), (0.725, 0.7))),
        pillars=(0.47,), wheels=(0.19, 0.8), beltline=0.68, tumblehome=0.14,
    ),
    VehicleType(
        "suv", 0.2, (4.4, 4.9), (1.8, 1.95), (1.65, 1.85), 0.37,
        ((0, 0.17), (0, 0.68), (0.02, 0.95), (0.05, 1.0), (0.68, 1.0), (0.8, 0.68),
         (0.97, 0.63), (1.0, 0.55), (1.0, 0.17)),
        glass=(1, 4), front=7, rear=0,
        windows=(((0.05, 0.7), (0.07, 0.95), (0.25, 0.95), (0.25, 0.7)),
                 ((0.27, 0.7), (0.27, 0.95), (0.47, 0.95), (0.47, 0.7)),
                 ((0.49, 0.7), (0.49, 0.95), (0.67, 0.95), (0.78, 0.7))),
        pillars=(0.26, 0.48), wheels=(0.18, 0.79), beltline=0.69, tumblehome=0.1,
        decals=(0.24, 0.65),
    ),
    VehicleType(
        "hatchback", 0.16, (3.8, 4.3), (1.68, 1.8), (1.42, 1.55), 0.31,
        ((0, 0.14), (0, 0.62), (0.06, 0.94), (0.1, 1.0), (0.55, 1.0), (0.7, 0.64),
         (0.96, 0.57), (1.0, 0.48), (1.0, 0.14)),
        glass=(1, 4), front=7, rear=0,
        windows=(((0.09, 0.67), (0.12, 0.96), (0.33, 0.96), (0.33, 0.67)),
                 ((0.35, 0.67), (0.35, 0.96), (0.54, 0.96), (0.68, 0.67))),
        pillars=(0.34,), wheels=(0.17, 0.81), beltline=0.66, tumblehome=0.14,
        decals=(0.22, 0.6),
    ),
    VehicleType(
        "van", 0.12, (4.8, 5.4), (1.9, 2.0), (1.9, 2.2), 0.35,
        ((0, 0.12), (0, 0.58), (0, 0.96), (0.02, 1.0), (0.8, 1.0), (0.9, 0.62),
         (0.99, 0.5), (1.0, 0.42), (1.0, 0.12)),
        glass=(1, 4), front=7, rear=0,
        windows=(((0.72, 0.62), (0.72, 0.95), (0.795, 0.95), (0.875, 0.62)),
                 ((0.46, 0.62), (0.46, 0.95), (0.68, 0.95), (0.68, 0.62))),
        pillars=(0.7,), wheels=(0.17, 0.8), beltline=0.6, tumblehome=0.03,
        decals=(0.2, 0.58),
    ),
    VehicleType(
        "pickup", 0.07, (5.0, 5.5), (1.85, 2.0), (1.7, 1.85), 0.38,
        ((0, 0.17), (0, 0.56), (0.4, 0.58), (0.42, 0.62), (0.43, 1.0), (0.68, 1.0),
         (0.78, 0.66), (0.97, 0.6), (1.0, 0.52), (1.0, 0.17)),
        glass=(3, 5), front=8, rear=0,
        windows=(((0.445, 0.66), (0.445, 0.96), (0.67, 0.96), (0.765, 0.67)),),
        pillars=(), wheels=(0.16, 0.78), beltline=0.62, tumblehome=0.08,
        decals=(0.24, 0.54),
    ),
    VehicleType(
        "bus", 0.05, (10.0, 12.0), (2.45, 2.55), (3.0, 3.3), 0.5,
        ((0, 0.1), (0, 0.6), (0, 0.92), (0.01, 1.0), (0.99, 1.0), (1.0, 0.94), (1.0, 0.42),
         (1.0, 0.1)),
        glass=(1, 5), front=6, rear=0,
        windows=tuple(
            ((0.03 + 0.12 * i, 0.56), (0.03 + 0.12 * i, 0.9), (0.14 + 0.12 * i, 0.9),
             (0.14 + 0.12 * i, 0.56))
            for i in range(8)
        ),
        pillars=(), wheels=(0.2, 0.82), beltline=0.55, tumblehome=0.02,
        decals=(0.14, 0.52), roof_items=False,
    ),
    VehicleType(
        "truck", 0.06, (7.0, 8.5), (2.3, 2.5), (3.0, 3.4), 0.5,
        ((0, 0.12), (0, 1.0), (0.74, 1.0), (0.75, 0.78), (0.93, 0.78), (0.98, 0.48),
         (1.0, 0.44), (1.0, 0.12)),
        glass=(4,), front=6, rear=0,
        windows=(((0.8, 0.5), (0.8, 0.76), (0.925, 0.76), (0.965, 0.5)),),
        pillars=(), wheels=(0.2, 0.85), beltline=0.5, tumblehome=0.02,
        decals=(0.18, 0.9), roof_items=False,
    ),
)  # fmt: skip
TYPES_BY_NAME = {t.name: t for t in VEHICLE_TYPES}

# Car colours as in traffic (worldwide paint statistics): white, black, silver and grey make
# three quarters; the rest share a few saturated colours.
BODY_COLOURS: tuple[tuple[str, RGB, float], ...] = (
    ("white", (235, 236, 238), 0.25),
    ("black", (28, 29, 32), 0.19),
    ("silver", (178, 182, 188), 0.14),
    ("grey", (110, 113, 118), 0.13),
    ("red", (170, 28, 30), 0.08),
    ("blue", (30, 70, 160), 0.07),
    ("dark blue", (22, 32, 70), 0.03),
    ("beige", (196, 178, 140), 0.03),
    ("brown", (96, 62, 40), 0.02),
    ("green", (30, 100, 55), 0.02),
    ("yellow", (230, 190, 30), 0.02),
    ("orange", (225, 110, 25), 0.01),
    ("sky blue", (110, 170, 215), 0.01),
)
# Decal colours: vivid, so that a sticker shows on any paint.
STICKER_COLOURS: tuple[RGB, ...] = (
    (240, 240, 240), (20, 20, 20), (220, 30, 40), (250, 200, 20), (30, 150, 230),
    (40, 180, 70), (250, 120, 20), (200, 60, 190), (0, 200, 200),
)  # fmt: skip
ROOF_ITEMS = {"none": 0.58, "rack": 0.16, "box": 0.12, "light_bar": 0.07, "sign": 0.07}
RIM_COLOURS: tuple[RGB, ...] = ((190, 192, 196), (60, 62, 66), (30, 30, 32), (150, 130, 90))
PLATE_COLOURS: tuple[RGB, ...] = ((30, 60, 170), (230, 190, 30), (235, 235, 235))
# Sticker places: the side panels, the rear (panel or glass), the windscreen's corner (the
# annual inspection stickers that VeRi's fine-grained matches hinge on).
STICKER_FACES = {"left": 0.25, "right": 0.25, "both": 0.1, "rear": 0.22, "windscreen": 0.18}


@dataclass(frozen=True)
class Sticker:
    """A decal. On ``left`` / ``right`` / ``both`` sides, ``(u0, u1, v0, v1)`` are profile
    fractions (x from the rear, z from the ground); on ``rear`` and ``windscreen`` faces, ``u`` runs
    along the face's profile edge and ``v`` across the width (-1 right to 1 left)."""

    face: str
    u0: float
    u1: float
    v0: float
    v1: float
    colour: RGB


@dataclass(frozen=True)
class Vehicle:
    """One vehicle's persistent look. The model's fields (type, sizes, cabin position) and
    ``colour`` are what a near-duplicate copies; the rest is what tells it apart."""

    vid: int
    type_name: str
    length: float
    width: float
    height: float
    cabin_shift: float  # the cabin's (windows and roof) fore-aft offset, fraction of length
    colour_name: str
    colour: RGB
    roof: str
    roof_colour: RGB
    stickers: tuple[Sticker, ...]
    rim_colour: RGB
    glass_colour: RGB  # window tint
    plate_colour: RGB
    near_duplicate_of: int | None = None

    @property
    def vehicle_type(self) -> VehicleType:
        return TYPES_BY_NAME[self.type_name]

    def details(self) -> tuple[object, ...]:
        """What a near-duplicate must differ in (at least one of these)."""
        return (self.roof, self.stickers)

    def summary(self) -> dict[str, object]:
        """The manifest's record: type, colour and details, readable."""
        return {
            "type": self.type_name,
            "colour": self.colour_name,
            "roof": self.roof,
            "stickers": [s.face for s in self.stickers],
            "near_duplicate_of": self.near_duplicate_of,
        }


def _pick(rng: np.random.Generator, options: tuple[RGB, ...]) -> RGB:
    return options[int(rng.integers(len(options)))]


def _sticker(rng: np.random.Generator, vehicle_type: VehicleType) -> Sticker:
    face = _choice(rng, STICKER_FACES)
    colour = _pick(rng, STICKER_COLOURS)
    if face == "windscreen":
        # A small square in an upper corner of the windscreen.
        size = rng.uniform(0.12, 0.22)
        side = float(rng.choice([-1.0, 1.0]))
        v0 = side * rng.uniform(0.45, 0.85 - size)
        return Sticker(
            face,
            0.08,
            0.08 + size * 1.4,
            min(v0, v0 + side * size),
            max(v0, v0 + side * size),
            colour,
        )
    if face == "rear":
        width = rng.uniform(0.25, 0.5)
        centre = rng.uniform(-0.6 + width / 2, 0.6 - width / 2)
        # Between the plate and the lights (see render._rear_details).
        low = rng.uniform(0.5, 0.6)
        return Sticker(
            face, low, low + rng.uniform(0.12, 0.2), centre - width / 2, centre + width / 2, colour
        )
    # Side decals: a stripe along the flank or a patch on a door.
    bottom, top = vehicle_type.decals
    if rng.random() < 0.35:
        start = rng.uniform(0.08, 0.3)
        tall = rng.uniform(0.04, 0.08)
        low = rng.uniform(bottom, top - tall)
        return Sticker(face, start, rng.uniform(0.7, 0.9), low, low + tall, colour)
    size = rng.uniform(0.1, 0.2)
    centre = rng.uniform(0.3, 0.7)
    tall = rng.uniform(0.14, 0.24) * min(1.0, (top - bottom) / 0.4)
    low = rng.uniform(bottom, top - tall)
    return Sticker(face, centre - size / 2, centre + size / 2, low, low + tall, colour)


def _details(rng: np.random.Generator, vehicle_type: VehicleType) -> dict[str, object]:
    """The fields a near-duplicate redraws: roof item and stickers."""
    roof = _choice(rng, ROOF_ITEMS) if vehicle_type.roof_items else "none"
    count = int(rng.choice(4, p=[0.3, 0.4, 0.2, 0.1]))
    return {
        "roof": roof,
        "roof_colour": _pick(rng, ((25, 25, 28), (60, 60, 64), (200, 200, 205), (240, 240, 240))),
        "stickers": tuple(_sticker(rng, vehicle_type) for _ in range(count)),
    }


def sample_vehicle(rng: np.random.Generator, vid: int) -> Vehicle:
    """Draws one vehicle from the traffic distributions."""
    weights = np.array([t.weight for t in VEHICLE_TYPES])
    vehicle_type = VEHICLE_TYPES[int(rng.choice(len(VEHICLE_TYPES), p=weights / weights.sum()))]
    colour_weights = np.array([w for _, _, w in BODY_COLOURS])
    colour_name, colour, _ = BODY_COLOURS[
        int(rng.choice(len(BODY_COLOURS), p=colour_weights / colour_weights.sum()))
    ]
    return Vehicle(
        vid=vid,
        type_name=vehicle_type.name,
        length=float(rng.uniform(*vehicle_type.length)),
        width=float(rng.uniform(*vehicle_type.width)),
        height=float(rng.uniform(*vehicle_type.height)),
        cabin_shift=float(rng.uniform(-0.025, 0.025)),
        colour_name=colour_name,
        colour=colour,
        rim_colour=_pick(rng, RIM_COLOURS),
        glass_colour=tuple(int(c) for c in rng.uniform(0.15, 0.55) * np.array([90, 110, 130])),
        plate_colour=_pick(rng, PLATE_COLOURS),
        **_details(rng, vehicle_type),  # type: ignore[arg-type]
    )


def near_duplicate(rng: np.random.Generator, original: Vehicle, vid: int) -> Vehicle:
    """A vehicle of ``original``'s model and colour that differs in its roof item or stickers
    (redrawn until it does), and may have other rims or tint, as two cars off one line do."""
    for _ in range(100):
        details = _details(rng, original.vehicle_type)
        if (details["roof"], details["stickers"]) != original.details():
            break
    return dataclasses.replace(
        original,
        vid=vid,
        rim_colour=_pick(rng, RIM_COLOURS) if rng.random() < 0.3 else original.rim_colour,
        near_duplicate_of=original.vid,
        **details,  # type: ignore[arg-type]
    )


def sample_vehicles(
    rng_of: Callable[[str, int], np.random.Generator], vids: list[int], fraction: float
) -> list[Vehicle]:
    """Vehicles for ``vids`` (one split): each drawn from ``rng_of("vehicle", vid)``; a
    ``fraction`` of them, chosen with ``rng_of("near duplicates", first vid)``, copy the model and
    colour of an earlier vehicle of the same split instead, so near-duplicates compete in the
    same gallery."""
    vehicles = [sample_vehicle(rng_of("vehicle", vid), vid) for vid in vids]
    if len(vids) < 2:
        return vehicles
    choose = rng_of("near duplicates", vids[0])
    count = int(round(fraction * len(vids)))
    copies = sorted(int(i) for i in choose.choice(np.arange(1, len(vids)), count, replace=False))
    for index in copies:
        # The original is a non-copy earlier in the split, so groups stay star-shaped.
        originals = [i for i in range(index) if vehicles[i].near_duplicate_of is None]
        original = vehicles[originals[int(choose.integers(len(originals)))]]
        vehicles[index] = near_duplicate(
            rng_of("near duplicate", vids[index]), original, vids[index]
        )
    return vehicles


def near_duplicate_groups(vehicles: list[Vehicle]) -> list[list[int]]:
    """``[original vid, copy vid, ...]`` for every vehicle that has near-duplicates, sorted."""
    groups: dict[int, list[int]] = {}
    for vehicle in vehicles:
        if vehicle.near_duplicate_of is not None:
            groups.setdefault(vehicle.near_duplicate_of, [vehicle.near_duplicate_of])
            groups[vehicle.near_duplicate_of].append(vehicle.vid)
    return [sorted(group) for _, group in sorted(groups.items())]
