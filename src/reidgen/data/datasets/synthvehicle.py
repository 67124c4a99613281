"""Reading a generated SynthVehicle dataset (:mod:`reidgen.synthvehicle`) back, with the real
datasets' indexers: VeRi-776's for the VeRi layout, VehicleID's for the VehicleID layout. The
published counts those indexers expect are replaced by the manifest's, so validation checks the
folder against what the generator wrote."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reidgen.data.datasets.vehicleid import index_vehicleid
from reidgen.data.datasets.veri import SPLIT_FOLDERS, index_veri776
from reidgen.data.sample import Splits
from reidgen.procedural import read_manifest


def index_synthvehicle(
    root: str | Path, dataset: str | None = None, test_size: int | None = None
) -> Splits:
    """Indexes a generated dataset folder of either layout.

    :param root: the dataset's folder (``<data_dir>/synthvehicle/<name>``).
    :param dataset: the name samples carry (default ``synth_vehicle`` / ``synth_vehicleid``).
    :param test_size: VehicleID layout only: which test list (vehicles), default the largest.
    """
    manifest = read_manifest(Path(root), "SynthVehicle")
    layout, counts = manifest["layout"], manifest["counts"]
    preset = manifest["preset"]["name"]
    if layout == "veri":
        if test_size is not None:
            raise ValueError("test_size applies to the VehicleID layout only")
        splits = index_veri776(root, dataset or "synth_vehicle")
        expected = {
            split: {
                "identities": counts[folder]["vehicles"],
                "images": counts[folder]["images"],
                "cameras": counts[folder]["cameras"],
            }
            for split, folder in SPLIT_FOLDERS.items()
        }
        variant = f"SynthVehicle {preset} ({splits.variant} layout)"
        return replace(splits, variant=variant, expected=expected)
    sizes = manifest["test_sizes"]
    size = max(sizes) if test_size is None else test_size
    if size not in sizes:
        raise ValueError(f"SynthVehicle {preset} has test lists of {sizes} vehicles, not {size}")
    splits = index_vehicleid(root, dataset or "synth_vehicleid", test_size=size)
    expected = {
        split: {"identities": counts[name]["vehicles"], "images": counts[name]["images"]}
        for split, name in (("train", "train_list"), ("gallery", f"test_list_{size}"))
    }
    variant = f"SynthVehicle {preset} (VehicleID layout, test-{size})"
    return replace(splits, variant=variant, expected=expected)
