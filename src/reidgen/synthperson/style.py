"""Domain styles: the distributions a SynthPerson domain draws identities, cameras and scenes from.

A domain is everything that differs between two camera networks: what people wear, what the scenes
look like, how the cameras see. Two domains with different styles give a real domain gap; the same
identity generator runs in both. Built-in domains are in :data:`BUILTIN_DOMAINS`; more can be added
from a YAML/JSON file (:func:`load_domain_style`) whose keys are the fields of :class:`DomainStyle`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class DomainStyle:
    """Everything a domain draws from. Ranges are ``(low, high)``, sampled uniformly.

    Clothing colours come from ``garment_palette``: each entry a base colour and a weight; a sampled
    colour is the base colour jittered by ``palette_jitter`` (0..255 units per channel), so a small
    jitter makes many people share a colour, as on real streets.
    """

    name: str
    num_cameras: int
    garment_palette: tuple[tuple[RGB, float], ...]
    palette_jitter: float
    skin_tones: tuple[RGB, ...]
    hair_colours: tuple[RGB, ...]
    # Probabilities of identity attributes.
    pattern_probs: dict[str, float]  # solid / stripes / checks / print
    lower_probs: dict[str, float]  # trousers / shorts / skirt
    hair_probs: dict[str, float]  # none / short / long
    long_sleeve_prob: float
    backpack_prob: float
    bag_prob: float
    hat_prob: float
    near_duplicate_fraction: float
    # Scenes.
    background: str  # "studio" (plain walls and floor) or "street" (facades, pavement, clutter)
    background_colours: tuple[RGB, ...]
    # Per-camera imaging; each camera draws its own value once, images jitter around it.
    brightness: tuple[float, float]
    colour_cast: float  # max per-channel gain deviation of a camera
    contrast: tuple[float, float]
    blur_sigma: tuple[float, float]  # in output pixels at 128x64
    noise_std: tuple[float, float]  # in 0..255 units
    jpeg_quality: tuple[int, int]
    resolution: tuple[float, float]  # fraction of the output resolution the camera really resolves
    # Per-image nuisances.
    occlusion_prob: float
    other_person_prob: float
    misalignment: float  # crop jitter as a fraction of the box size
    scale: tuple[float, float]  # person height as a fraction of the box height
    yaw_jitter_deg: float
    # Time: a camera network laid out on a site, people walking between cameras.
    site_size_m: float
    walking_speed_mps: tuple[float, float]
    recording_hours: float
    fps: float = 25.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _palette(*entries: tuple[str, float]) -> tuple[tuple[RGB, float], ...]:
    return tuple((_hex(code), weight) for code, weight in entries)


def _hex(code: str) -> RGB:
    code = code.lstrip("#")
    return (int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16))


_SKIN = tuple(
    _hex(c)
    for c in ("f1c27d", "e0ac69", "c68642", "8d5524", "ffdbac", "d1a37c", "a0785a", "5c3b28")
)
_HAIR = tuple(
    _hex(c) for c in ("1b1b1b", "3b2a1e", "5a3825", "8b5a2b", "b08d57", "d8c08a", "6e6e6e")
)

STUDIO = DomainStyle(
    name="studio",
    num_cameras=4,
    # Synthetic-engine look (RandPerson / PersonX): vivid, evenly spread colours.
    garment_palette=_palette(
        ("e6194b", 1),
        ("3cb44b", 1),
        ("ffe119", 1),
        ("4363d8", 1),
        ("f58231", 1),
        ("911eb4", 1),
        ("42d4f4", 1),
        ("f032e6", 1),
        ("bfef45", 1),
        ("fabed4", 1),
        ("469990", 1),
        ("dcbeff", 1),
        ("9a6324", 1),
        ("fffac8", 1),
        ("800000", 1),
        ("aaffc3", 1),
        ("000075", 1),
        ("ffffff", 1),
        ("202020", 1),
        ("a9a9a9", 1),
    ),
    # Synthetic engines texture clothes from wide colour ranges: wide jitter around the bases.
    palette_jitter=40.0,
    skin_tones=_SKIN,
    hair_colours=_HAIR,
    pattern_probs={"solid": 0.55, "stripes": 0.15, "checks": 0.1, "print": 0.2},
    lower_probs={"trousers": 0.6, "shorts": 0.25, "skirt": 0.15},
    hair_probs={"none": 0.1, "short": 0.6, "long": 0.3},
    long_sleeve_prob=0.5,
    backpack_prob=0.3,
    bag_prob=0.2,
    hat_prob=0.15,
    near_duplicate_fraction=0.3,
    background="studio",
    background_colours=tuple(_hex(c) for c in ("d8d8d8", "c9d6df", "e8e0d0", "b8c4b0")),
    brightness=(0.95, 1.1),
    colour_cast=0.04,
    contrast=(0.95, 1.1),
    blur_sigma=(0.0, 0.4),
    noise_std=(0.0, 2.0),
    jpeg_quality=(90, 95),
    resolution=(0.9, 1.0),
    occlusion_prob=0.05,
    other_person_prob=0.05,
    misalignment=0.04,
    scale=(0.86, 0.95),
    yaw_jitter_deg=15.0,
    site_size_m=200.0,
    walking_speed_mps=(1.0, 1.6),
    recording_hours=1.0,
    fps=24.0,
)

STREET = DomainStyle(
    name="street",
    num_cameras=6,
    # A campus in summer (Market-1501 look): dark and neutral clothing dominates.
    garment_palette=_palette(
        ("1c1c1c", 5),
        ("3a3a3a", 3),
        ("6b6b6b", 2),
        ("e8e8e8", 4),
        ("26324f", 3),
        ("3d5a80", 2),
        ("5b7083", 1.5),
        ("7a1f1f", 1),
        ("b23a3a", 1),
        ("2f4f2f", 1),
        ("6b8e23", 0.7),
        ("c2b280", 1.2),
        ("8b6f47", 1),
        ("d4a017", 0.5),
        ("c77dab", 0.6),
        ("e39b6b", 0.5),
        ("4b3b5b", 0.8),
    ),
    palette_jitter=14.0,
    skin_tones=_SKIN,
    hair_colours=_HAIR,
    pattern_probs={"solid": 0.65, "stripes": 0.12, "checks": 0.08, "print": 0.15},
    lower_probs={"trousers": 0.55, "shorts": 0.3, "skirt": 0.15},
    hair_probs={"none": 0.05, "short": 0.65, "long": 0.3},
    long_sleeve_prob=0.3,
    backpack_prob=0.35,
    bag_prob=0.25,
    hat_prob=0.1,
    near_duplicate_fraction=0.35,
    background="street",
    background_colours=tuple(
        _hex(c) for c in ("8a8a80", "a39a86", "6f7a70", "9aa3a8", "b0a090", "7d6e63", "596066")
    ),
    brightness=(0.8, 1.15),
    colour_cast=0.1,
    contrast=(0.8, 1.05),
    blur_sigma=(0.2, 0.7),
    noise_std=(1.5, 5.0),
    jpeg_quality=(60, 90),
    resolution=(0.65, 0.95),
    occlusion_prob=0.2,
    other_person_prob=0.15,
    misalignment=0.1,
    scale=(0.8, 0.96),
    yaw_jitter_deg=25.0,
    site_size_m=400.0,
    walking_speed_mps=(0.9, 1.5),
    recording_hours=2.0,
    fps=25.0,
)

BUILTIN_DOMAINS: dict[str, DomainStyle] = {STUDIO.name: STUDIO, STREET.name: STREET}

_TUPLE_OF_RGB = ("skin_tones", "hair_colours", "background_colours")


def domain_style_from_dict(values: dict[str, Any]) -> DomainStyle:
    """Builds a style from plain data, e.g. a YAML file; a ``base`` key starts from a built-in one.

    Unknown keys fail loudly: a typo must never fall back to a default silently.
    """
    values = dict(values)
    base_name = values.pop("base", None)
    known = {f.name for f in dataclasses.fields(DomainStyle)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"unknown SynthPerson domain key(s) {unknown}; "
            f"expected keys of DomainStyle: {sorted(known)}"
        )
    if base_name is not None:
        if base_name not in BUILTIN_DOMAINS:
            raise ValueError(
                f"unknown base domain {base_name!r}; built-in domains: {sorted(BUILTIN_DOMAINS)}"
            )
        merged = BUILTIN_DOMAINS[base_name].to_dict()
        merged.update(values)
        values = merged
    missing = sorted(
        f.name
        for f in dataclasses.fields(DomainStyle)
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"SynthPerson domain is missing key(s) {missing} (or give `base: street`)")
    for key in _TUPLE_OF_RGB:
        values[key] = tuple(_as_rgb(c) for c in values[key])
    values["garment_palette"] = tuple((_as_rgb(c), float(w)) for c, w in values["garment_palette"])
    for f in dataclasses.fields(DomainStyle):
        if isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    return DomainStyle(**values)


def _as_rgb(colour: Any) -> RGB:
    if isinstance(colour, str):
        return _hex(colour)
    r, g, b = colour
    return (int(r), int(g), int(b))


def load_domain_style(name_or_path: str | Path) -> DomainStyle:
    """A built-in domain by name, or a domain defined in a YAML/JSON file."""
    if str(name_or_path) in BUILTIN_DOMAINS:
        return BUILTIN_DOMAINS[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"unknown SynthPerson domain {str(name_or_path)!r}: not a built-in domain "
            f"({', '.join(sorted(BUILTIN_DOMAINS))}) and not a YAML/JSON file"
        )
    values = yaml.safe_load(path.read_text())
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of DomainStyle fields, got {type(values)}")
    values.setdefault("name", path.stem)
    return domain_style_from_dict(values)
