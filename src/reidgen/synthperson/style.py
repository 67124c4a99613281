"""Domain styles: the distributions a SynthPerson domain draws identities, cameras and scenes from.

A domain is everything that differs between two camera networks: what people wear, what the scenes
look like, how the cameras see. Two domains with different styles give a real domain gap; the same
identity generator runs in both. Built-in domains are in :data:`BUILTIN_DOMAINS`; more can be added
from a YAML/JSON file (:func:`load_domain_style`) whose keys are the fields of :class:`DomainStyle`.

The built-in domains:

* ``studio``: the synthetic-engine look (vivid clothes, plain lit scenes, sharp images);
* ``street``: a campus in summer (dark and neutral clothes, facades, casts, blur, JPEG);
* ``mall``: an indoor shopping mall seen by CCTV cameras mounted high: artificial light of one
  colour per camera (``light_tints``), a downward view (``camera_tilt``: larger heads, shorter
  legs, more hair than face, more floor), low resolution and blur, crowds (``crowd``: up to two
  passers-by in one crop, in front of the person in 30% of the crops), winter colours;
* ``randomized``: domain randomization as RandPerson, UnrealPerson and ClonedPerson do it. Every
  camera draws its scene kind (``background`` or one of ``alt_backgrounds``), light colour,
  brightness, colour cast, contrast, downward view, sharpness (``camera_resolution`` times each
  image's own), blur, noise and JPEG quality from ranges that contain the three other domains'
  ranges; every image adds its own colour cast (``image_colour_cast``); every identity draws its
  clothes from the union of the built-in palettes with wide jitter. Its eight cameras thus differ
  from each other far more than the cameras of one built-in domain do.

Fields added after ``studio`` and ``street`` were published (:data:`LATER_FIELDS`) default to
"off" and are left out of :meth:`DomainStyle.to_dict` while at their default: the dictionary
names a dataset's folder and seeds the random draws of a domain file
(``SynthPersonSpec.domain_key``; built-in domains draw with fixed keys, ``draw_key``), so studio
and any domain file that does not use them keep their folders and bytes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RGB = tuple[int, int, int]
Gains = tuple[float, float, float]

# Scene kinds that render.build_background draws.
SCENE_KINDS = ("studio", "street", "mall")
# The draw keys of the built-in domains (SynthPersonSpec.draw_key), their domain_key when each was
# published. Fixed, so that retuning a built-in domain's distributions keeps its random draws
# (identities, routes, cameras, scenes): the change is measured as itself, not as itself plus a new
# draw of a 6-camera network, which alone moves cross-domain mAP by a factor of four
# (docs/synthperson_calibration.md). Its keys are the names of BUILTIN_DOMAINS, built below.
BUILTIN_DRAW_KEYS = {
    "studio": 0xF7CE4C91,
    "street": 0x4EA6E1C5,
    "mall": 0x9FB5C089,
    "randomized": 0x48B0C2DF,
}


@dataclass(frozen=True)
class DomainStyle:
    """Everything a domain draws from. Ranges are ``(low, high)``, sampled uniformly.

    Clothing colours come from ``garment_palette``: each entry a base colour and a weight; a sampled
    colour is the base colour jittered by ``palette_jitter`` (0..255 units per channel), so a small
    jitter makes many people share a colour, as on real streets.

    The fields from ``alt_backgrounds`` on (:data:`LATER_FIELDS`) are off by default; see the
    module docstring for why they are left out of :meth:`to_dict` then.

    :raises ValueError: a scene kind that is not one of :data:`SCENE_KINDS`, or a ``crowd`` range
        that does not start at 1 or more.
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
    # "studio" (plain walls and floor), "street" (facades, pavement, clutter) or "mall" (glossy
    # tiles, shop fronts, a ceiling light band).
    background: str
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
    # Per camera: scene kinds drawn instead of `background`; each camera draws uniformly one of
    # `background` and these.
    alt_backgrounds: tuple[str, ...] = ()
    # Per camera: the colour of its light source, RGB gains drawn uniformly from these (warm
    # tungsten, cool fluorescent, ...) and multiplied into the camera's colour cast.
    light_tints: tuple[Gains, ...] = ()
    # Per camera: how far it looks down on people, 0 = eye level. A figure's crown is magnified
    # 1 + tilt times as much as its feet (the head is nearer a high camera) and the figure is
    # widened by 1 + tilt / 4 (its height is foreshortened): larger heads, shorter legs, more hair
    # than face, more floor in the scene (render.Placement).
    camera_tilt: tuple[float, float] = (0.0, 0.0)
    # Per camera: a factor on every image's `resolution` (its lens and sensor).
    camera_resolution: tuple[float, float] = (1.0, 1.0)
    # Per image: how many passers-by are in the crop when `other_person_prob` fires; more than
    # one spreads them in depth, behind the person and in front.
    crowd: tuple[int, int] = (1, 1)
    # Per image: max per-channel gain deviation on top of the camera's colour cast.
    image_colour_cast: float = 0.0
    # Per network: cameras spread evenly over the brightness and contrast ranges (each camera one
    # slice of each range, in a random order) instead of drawing them independently. A network of
    # a few cameras then always spans the ranges, so how hard a domain is does not hinge on how
    # many of its cameras happen to be dark or flat (docs/synthperson_calibration.md).
    spread_cameras: bool = False
    # The built-in domain whose random draws this one reuses (identities, routes, cameras, scenes:
    # the same random numbers through this domain's distributions). Variants of one domain that
    # differ in one group of settings then differ by that group only, not also by a new draw.
    draws_of: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kinds = (self.background, *self.alt_backgrounds)
        unknown = sorted(set(kinds) - set(SCENE_KINDS))
        if unknown:
            raise ValueError(
                f"SynthPerson domain {self.name!r}: unknown scene kind(s) {unknown}; "
                f"expected {', '.join(SCENE_KINDS)}"
            )
        if self.draws_of and self.draws_of not in BUILTIN_DRAW_KEYS:
            raise ValueError(
                f"SynthPerson domain {self.name!r}: draws_of must name a built-in domain "
                f"({', '.join(BUILTIN_DRAW_KEYS)}), got {self.draws_of!r}"
            )
        if not 1 <= self.crowd[0] <= self.crowd[1]:
            raise ValueError(
                f"SynthPerson domain {self.name!r}: crowd must be (low, high) with "
                f"1 <= low <= high, got {self.crowd}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (tuples become lists), without the :data:`LATER_FIELDS` that
        are at their default."""
        values = json.loads(json.dumps(dataclasses.asdict(self)))
        for f in dataclasses.fields(self):
            if f.name in LATER_FIELDS and getattr(self, f.name) == f.default:
                del values[f.name]
        return values


# Added after studio and street were published: left out of to_dict() while at their default.
LATER_FIELDS = (
    "alt_backgrounds",
    "light_tints",
    "camera_tilt",
    "camera_resolution",
    "crowd",
    "image_colour_cast",
    "spread_cameras",
    "draws_of",
)


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

# Street's own clothing colours, dark and neutral (all of street's palette until the calibration).
_STREET_COLOURS = _palette(
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
)
# Studio's colours that are not black, white or grey: the bright summer clothes a campus also sees.
_SUMMER_COLOURS = tuple(
    (colour, 2.5) for colour, _ in STUDIO.garment_palette if len(set(colour)) > 1
)
# Street's facade and pavement colours; the darkest three are left out of street since the
# calibration (randomized keeps them all).
_STREET_FACADES = tuple(
    _hex(c) for c in ("8a8a80", "a39a86", "6f7a70", "9aa3a8", "b0a090", "7d6e63", "596066")
)

STREET = DomainStyle(
    name="street",
    num_cameras=6,
    # A campus in summer (Market-1501 look): street's own dark and neutral clothes and, about 60%
    # of garments, bright colours shared with studio. The calibration of the studio -> street gap
    # (docs/synthperson_calibration.md): with street's colours alone, at jitter 14, a model
    # trained on studio scored 3 mAP here.
    garment_palette=_STREET_COLOURS + _SUMMER_COLOURS,
    palette_jitter=30.0,
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
    background_colours=tuple(c for c in _STREET_FACADES if sum(c) > 350),
    # Cameras spread over brightness and contrast (spread_cameras): every network has its darkest
    # and its flattest camera, whose ends the calibration raised from 0.8 (cast from 0.1).
    brightness=(0.9, 1.15),
    colour_cast=0.06,
    contrast=(0.85, 1.05),
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
    spread_cameras=True,
)

# Light sources of one camera: RGB gains.
_WARM_TUNGSTEN = (1.12, 1.0, 0.8)
_WARM_WHITE = (1.06, 1.0, 0.9)
_NEUTRAL = (1.0, 1.0, 1.0)
_COOL_FLUORESCENT = (0.9, 1.0, 1.1)
_GREEN_FLUORESCENT = (0.93, 1.07, 0.92)

# Mall's winter clothing colours at the weights it was published with (mostly black, charcoal and
# navy coats); `randomized` dresses from these, so its images stay those of the reported runs.
_MALL_WINTER_COLOURS = _palette(
    ("1c1c1c", 5),
    ("2b2b33", 3),
    ("4a4a4a", 2),
    ("8c8c8c", 1.5),
    ("e6e2da", 1.5),
    ("1f2a44", 3),
    ("3d5a80", 1.5),
    ("c19a6b", 2.5),
    ("8b5a2b", 1.5),
    ("5c4033", 1.5),
    ("6b1f2a", 1.5),
    ("b22222", 1),
    ("556b2f", 1.5),
    ("2f4f4f", 1),
    ("d4a017", 0.8),
    ("7a9cc6", 0.6),
    ("c77dab", 0.5),
    ("e07b39", 0.4),
)

MALL = DomainStyle(
    name="mall",
    num_cameras=5,
    # Indoors in winter (coats): mall's winter colours, but the near-blacks and navies that made
    # every third person a dark silhouette weigh half of what they were published with, and the
    # few bright coats more (docs/synthperson_calibration.md, section 4).
    garment_palette=_palette(
        ("1c1c1c", 2.5),
        ("2b2b33", 1.5),
        ("4a4a4a", 1.5),
        ("8c8c8c", 1.5),
        ("e6e2da", 1.5),
        ("1f2a44", 1.5),
        ("3d5a80", 1.5),
        ("c19a6b", 2.5),
        ("8b5a2b", 1.5),
        ("5c4033", 1.5),
        ("6b1f2a", 1.5),
        ("b22222", 1.5),
        ("556b2f", 1.5),
        ("2f4f4f", 1),
        ("d4a017", 1.2),
        ("7a9cc6", 1.2),
        ("c77dab", 1),
        ("e07b39", 1),
    ),
    palette_jitter=38.0,
    skin_tones=_SKIN,
    hair_colours=_HAIR,
    pattern_probs={"solid": 0.7, "stripes": 0.1, "checks": 0.1, "print": 0.1},
    lower_probs={"trousers": 0.8, "shorts": 0.05, "skirt": 0.15},
    hair_probs={"none": 0.05, "short": 0.6, "long": 0.35},
    long_sleeve_prob=0.9,
    backpack_prob=0.2,
    bag_prob=0.45,  # shopping bags
    hat_prob=0.25,  # woolly hats
    near_duplicate_fraction=0.3,
    background="mall",
    background_colours=tuple(
        _hex(c) for c in ("e8e0cc", "d0d0cc", "f0ead8", "c8b89a", "b8c0c8", "ddd5c8")
    ),
    # Bright, flat artificial light; CCTV: low resolution, blur, noise and heavy JPEG; crowds (up
    # to two people in front of 30% of the crops; street: one in 15%). As published (resolution
    # 0.35-0.55, people in front of 65% of the crops, up to four) a model trained on mall itself
    # reached 8.7 mAP there: too hard to tell methods apart (docs/synthperson_calibration.md,
    # section 4).
    brightness=(0.9, 1.1),
    colour_cast=0.05,
    contrast=(0.8, 1.0),
    blur_sigma=(0.3, 0.7),
    noise_std=(2.0, 5.0),
    jpeg_quality=(55, 85),
    resolution=(0.5, 0.75),
    occlusion_prob=0.12,
    other_person_prob=0.3,
    misalignment=0.1,
    scale=(0.8, 0.95),
    yaw_jitter_deg=30.0,
    site_size_m=150.0,
    walking_speed_mps=(0.7, 1.3),  # shoppers stroll
    recording_hours=3.0,
    fps=25.0,
    light_tints=(_WARM_TUNGSTEN, _WARM_WHITE, _NEUTRAL, _COOL_FLUORESCENT, _GREEN_FLUORESCENT),
    camera_tilt=(0.5, 1.1),
    crowd=(1, 2),
)


def _union_palette(
    *palettes: tuple[tuple[RGB, float], ...],
) -> tuple[tuple[RGB, float], ...]:
    """Every entry of ``palettes``, weights scaled so that each palette weighs 1 in all."""
    entries: list[tuple[RGB, float]] = []
    for palette in palettes:
        total = sum(weight for _, weight in palette)
        entries += [(colour, weight / total) for colour, weight in palette]
    return tuple(entries)


RANDOMIZED = DomainStyle(
    name="randomized",
    num_cameras=8,
    # Street's own colours (its summer colours are studio's).
    garment_palette=_union_palette(STUDIO.garment_palette, _STREET_COLOURS, _MALL_WINTER_COLOURS),
    palette_jitter=45.0,
    skin_tones=_SKIN,
    hair_colours=_HAIR,
    pattern_probs={"solid": 0.6, "stripes": 0.13, "checks": 0.1, "print": 0.17},
    lower_probs={"trousers": 0.6, "shorts": 0.22, "skirt": 0.18},
    hair_probs={"none": 0.07, "short": 0.6, "long": 0.33},
    long_sleeve_prob=0.55,
    backpack_prob=0.3,
    bag_prob=0.3,
    hat_prob=0.17,
    near_duplicate_fraction=0.3,
    background="studio",
    background_colours=tuple(
        dict.fromkeys(STUDIO.background_colours + _STREET_FACADES + MALL.background_colours)
    ),
    # Every range contains those of studio, street and mall.
    brightness=(0.6, 1.25),
    colour_cast=0.12,
    contrast=(0.65, 1.2),
    blur_sigma=(0.0, 1.0),
    noise_std=(0.0, 7.0),
    jpeg_quality=(35, 95),
    resolution=(0.7, 1.0),
    occlusion_prob=0.15,
    other_person_prob=0.3,
    misalignment=0.1,
    scale=(0.78, 0.96),
    yaw_jitter_deg=25.0,
    site_size_m=400.0,
    walking_speed_mps=(0.8, 1.6),
    recording_hours=2.0,
    fps=25.0,
    alt_backgrounds=("street", "mall"),
    # Mall's lights, outdoor daylight and a sodium street lamp.
    light_tints=(
        _WARM_TUNGSTEN,
        _WARM_WHITE,
        _NEUTRAL,
        _COOL_FLUORESCENT,
        _GREEN_FLUORESCENT,
        (0.9, 0.98, 1.12),
        (1.18, 0.96, 0.7),
    ),
    camera_tilt=(0.0, 1.1),
    camera_resolution=(0.45, 1.0),
    crowd=(1, 4),
    image_colour_cast=0.05,
)

BUILTIN_DOMAINS: dict[str, DomainStyle] = {
    style.name: style for style in (STUDIO, STREET, MALL, RANDOMIZED)
}

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
    if "light_tints" in values:
        values["light_tints"] = tuple(
            (float(r), float(g), float(b)) for r, g, b in values["light_tints"]
        )
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
