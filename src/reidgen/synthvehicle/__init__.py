"""SynthVehicle: the embedded procedural vehicle re-identification dataset.

Generated on first use, never downloaded; ``python -m reidgen.synthvehicle`` is its command
line. See :mod:`reidgen.synthvehicle.generate` for the on-disk layouts (VeRi-776's and
VehicleID's, so their indexers read it) and ``docs/synthvehicle.md`` for what it contains.
"""

from reidgen.synthvehicle.generate import LAYOUTS, SynthVehicleSpec, ensure_synthvehicle
from reidgen.synthvehicle.presets import PRESETS, VehiclePreset

__all__ = ["LAYOUTS", "PRESETS", "SynthVehicleSpec", "VehiclePreset", "ensure_synthvehicle"]
