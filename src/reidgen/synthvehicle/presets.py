"""Dataset sizes: how many vehicles, cameras, passes and images a SynthVehicle dataset has."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class VehiclePreset:
    """Sizes of one generated dataset; ``(low, high)`` ranges are inclusive."""

    name: str
    num_train_ids: int
    num_test_ids: int
    num_cameras: int  # c001..c0NN; VeRi-776 has 20
    passes: tuple[int, int]  # distinct cameras a vehicle drives past
    images_per_pass: tuple[int, int]  # frames kept from one pass (a short track)
    near_duplicate_fraction: float  # vehicles that copy another's model and colour

    def __post_init__(self) -> None:
        # A query is one image of a pass; the pass's other images and the vehicle's other passes
        # must leave it a gallery match from another camera (the VeRi rule junks the same camera).
        if self.passes[0] < 2 or self.images_per_pass[0] < 2:
            raise ValueError(f"preset {self.name!r}: at least 2 passes of 2 images per vehicle")
        if not 2 <= self.num_cameras <= 20 or self.passes[1] > self.num_cameras:
            raise ValueError(
                f"preset {self.name!r}: 2 to 20 cameras (VeRi names have 3 digits and VeRi has "
                f"20), and no more passes than cameras"
            )
        if self.num_test_ids < 3:
            raise ValueError(f"preset {self.name!r}: at least 3 test vehicles (3 VehicleID lists)")

    @property
    def test_sizes(self) -> tuple[int, int, int]:
        """Vehicles in the VehicleID layout's small, medium and large test lists (nested, as
        VehicleID's 800 / 1,600 / 2,400): a third, two thirds and all of the test vehicles."""
        count = self.num_test_ids
        return (count // 3, 2 * count // 3, count)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


PRESETS: dict[str, VehiclePreset] = {
    # Seconds to generate: tests and smoke runs.
    "tiny": VehiclePreset("tiny", 12, 12, 6, (3, 4), (2, 3), 0.35),
    # The default for experiments: ~5,000 images at 96x96.
    "small": VehiclePreset("small", 250, 150, 12, (3, 5), (3, 4), 0.3),
    # VeRi-776's camera count and about its number of vehicles; ~20,000 images.
    "full": VehiclePreset("full", 576, 200, 20, (4, 8), (3, 5), 0.3),
}


def get_preset(name: str) -> VehiclePreset:
    if name not in PRESETS:
        raise ValueError(f"unknown SynthVehicle preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]
