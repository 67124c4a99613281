"""Dataset sizes: how many identities, camera visits and images a SynthPerson dataset has."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Sizes of one generated dataset; ``(low, high)`` ranges are inclusive."""

    name: str
    num_train_ids: int
    num_test_ids: int
    visits: tuple[int, int]  # cameras an identity walks past (a route through the network)
    images_per_visit: tuple[int, int]  # detections kept from one pass in front of a camera
    distractor_fraction: float  # pid 0000 gallery images, as a fraction of true gallery images
    junk_fraction: float  # pid -1 gallery images (ignored by the protocol), likewise

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", 12, 12, (2, 3), (2, 3), 0.1, 0.05),
    "small": Preset("small", 300, 300, (2, 4), (2, 4), 0.1, 0.05),
    "full": Preset("full", 750, 750, (3, 5), (3, 5), 0.15, 0.1),
    # Many training identities, few test ones: training sets for domain randomization, which
    # gains from identity count as RandPerson's 8,000 do.
    "wide": Preset("wide", 2000, 300, (2, 4), (2, 4), 0.1, 0.05),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown SynthPerson preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]
