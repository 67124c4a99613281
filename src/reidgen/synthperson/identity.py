"""Identities: the persistent look of a person, sampled from a domain's distributions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from reidgen.synthperson.style import RGB, DomainStyle


@dataclass(frozen=True)
class Body:
    """Body proportions as fractions of the body height (feet at 0, crown at 1)."""

    shoulder_width: float
    hip_width: float
    torso_depth: float
    head_radius: float
    limb_width: float
    leg_length: float  # hip height
    stride: float  # walking swing amplitude in radians


@dataclass(frozen=True)
class Identity:
    """Everything that stays the same across all images of one person."""

    pid: int
    body: Body
    skin: RGB
    hair_style: str  # none / short / long
    hair: RGB
    upper: RGB
    upper_pattern: str  # solid / stripes / checks / print
    upper_secondary: RGB  # stripe / check / print colour
    pattern_period: float  # stripe / check period as a fraction of the body height
    long_sleeves: bool
    lower: RGB
    lower_type: str  # trousers / shorts / skirt
    shoes: RGB
    backpack: RGB | None
    bag: RGB | None
    hat: RGB | None
    walking_speed: float  # metres per second
    near_duplicate_of: int | None = None


# Attributes that a near-duplicate may change; each is redrawn from the domain's distribution.
MUTABLE_ATTRIBUTES = ("upper", "lower", "shoes", "hair", "backpack", "bag", "hat", "upper_pattern")


def _choice(rng: np.random.Generator, probs: dict[str, float]) -> str:
    names = sorted(probs)
    weights = np.array([probs[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _jitter(rng: np.random.Generator, colour: RGB, amount: float) -> RGB:
    values = np.clip(np.asarray(colour, dtype=np.float64) + rng.normal(0.0, amount, 3), 0, 255)
    return (int(values[0]), int(values[1]), int(values[2]))


def _garment_colour(rng: np.random.Generator, style: DomainStyle) -> RGB:
    weights = np.array([w for _, w in style.garment_palette], dtype=np.float64)
    base = style.garment_palette[int(rng.choice(len(weights), p=weights / weights.sum()))][0]
    return _jitter(rng, base, style.palette_jitter)


def _other_colour(rng: np.random.Generator, style: DomainStyle, original: RGB) -> RGB:
    """A garment colour that a person would tell apart from ``original``."""
    for _ in range(50):
        colour = _garment_colour(rng, style)
        if np.linalg.norm(np.subtract(colour, original)) > 60:
            return colour
    return tuple(255 - c for c in original)  # type: ignore[return-value]


def _maybe(rng: np.random.Generator, prob: float, style: DomainStyle) -> RGB | None:
    return _garment_colour(rng, style) if rng.random() < prob else None


def sample_identity(rng: np.random.Generator, style: DomainStyle, pid: int) -> Identity:
    """Draws a fresh identity from the domain's distributions."""
    shoulder = rng.uniform(0.21, 0.29)
    body = Body(
        shoulder_width=shoulder,
        hip_width=shoulder * rng.uniform(0.72, 0.95),
        torso_depth=shoulder * rng.uniform(0.5, 0.7),
        head_radius=rng.uniform(0.055, 0.068),
        limb_width=rng.uniform(0.045, 0.062),
        leg_length=rng.uniform(0.46, 0.52),
        stride=rng.uniform(0.25, 0.45),
    )
    skin_index = int(rng.integers(len(style.skin_tones)))
    hair_index = int(rng.integers(len(style.hair_colours)))
    return Identity(
        pid=pid,
        body=body,
        skin=_jitter(rng, style.skin_tones[skin_index], 6.0),
        hair_style=_choice(rng, style.hair_probs),
        hair=_jitter(rng, style.hair_colours[hair_index], 6.0),
        upper=_garment_colour(rng, style),
        upper_pattern=_choice(rng, style.pattern_probs),
        upper_secondary=_garment_colour(rng, style),
        pattern_period=rng.uniform(0.035, 0.07),
        long_sleeves=bool(rng.random() < style.long_sleeve_prob),
        lower=_garment_colour(rng, style),
        lower_type=_choice(rng, style.lower_probs),
        shoes=_garment_colour(rng, style),
        backpack=_maybe(rng, style.backpack_prob, style),
        bag=_maybe(rng, style.bag_prob, style),
        hat=_maybe(rng, style.hat_prob, style),
        walking_speed=rng.uniform(*style.walking_speed_mps),
    )


def near_duplicate(
    rng: np.random.Generator, style: DomainStyle, original: Identity, pid: int
) -> Identity:
    """A different person who looks like ``original`` except for one or two attributes.

    The body is redrawn lightly (people with the same clothes are still different people), so the
    task becomes fine-grained: the model must attend to the attribute that differs.
    """
    fresh = sample_identity(rng, style, pid)
    changed = rng.choice(len(MUTABLE_ATTRIBUTES), size=int(rng.integers(1, 3)), replace=False)
    updates: dict[str, object] = {"pid": pid, "near_duplicate_of": original.pid}
    for index in sorted(int(i) for i in changed):
        name = MUTABLE_ATTRIBUTES[index]
        current = getattr(original, name)
        if name in ("backpack", "bag", "hat"):
            # Toggling presence is the change people notice; a colour swap alone may be invisible.
            value = None if current is not None else _garment_colour(rng, style)
        elif name == "upper_pattern":
            others = sorted(set(style.pattern_probs) - {current})
            value = others[int(rng.integers(len(others)))] if others else current
        elif name == "hair":
            far = [c for c in style.hair_colours if np.linalg.norm(np.subtract(c, current)) > 40]
            value = _jitter(rng, far[int(rng.integers(len(far)))], 6.0) if far else current
        else:
            value = _other_colour(rng, style, current)
        updates[name] = value
    body = dataclasses.replace(
        original.body,
        shoulder_width=original.body.shoulder_width * rng.uniform(0.95, 1.05),
        leg_length=original.body.leg_length * rng.uniform(0.98, 1.02),
    )
    updates["body"] = body
    updates["walking_speed"] = fresh.walking_speed
    return dataclasses.replace(original, **updates)


def sample_identities(
    rng: np.random.Generator, style: DomainStyle, pids: list[int]
) -> list[Identity]:
    """Identities for ``pids`` in order; a ``near_duplicate_fraction`` copy an earlier one."""
    identities: list[Identity] = []
    for pid in pids:
        if identities and rng.random() < style.near_duplicate_fraction:
            source = identities[int(rng.integers(len(identities)))]
            identities.append(near_duplicate(rng, style, source, pid))
        else:
            identities.append(sample_identity(rng, style, pid))
    return identities
