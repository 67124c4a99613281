"""Reading a generated SynthPerson dataset (:mod:`reidgen.synthperson`) back: samples with
timestamps, and the per-image structure maps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from reidgen.data.datasets.layout import MARKET_NAMES, SPLIT_FOLDERS, index_market_layout
from reidgen.data.sample import Sample, Splits
from reidgen.procedural import read_manifest
from reidgen.synthperson.render import STRUCTURE_YAWS_DEG


def index_synthperson(root: str | Path, dataset: str | None = None) -> Splits:
    """Indexes a generated dataset folder; timestamps come from the manifest's clock."""
    root = Path(root)
    manifest = read_manifest(root, "SynthPerson")
    splits = index_market_layout(
        root,
        dataset or f"synthperson_{manifest['domain']['name']}",
        names=MARKET_NAMES,
        num_cameras=manifest["num_cameras"],
        fps=manifest["fps"],
        sequence_frames=manifest["sequence_frames"],
    )
    counts = manifest["counts"]
    expected = {
        split: {
            "identities": counts[folder]["identities"],
            # Junk is dropped at index time; distractors stay.
            "images": counts[folder]["images"] - counts[folder]["junk"],
            "cameras": counts[folder]["cameras"],
        }
        for split, folder in SPLIT_FOLDERS.items()
    }
    variant = f"SynthPerson {manifest['domain']['name']}/{manifest['preset']['name']}"
    return replace(splits, variant=variant, expected=expected)


def structure_path(sample: Sample) -> Path:
    """Where a sample's structure strip lives (see :mod:`reidgen.synthperson.generate`)."""
    image = Path(sample.path)
    return image.parent.parent / "structure" / image.parent.name / f"{image.stem}.png"


def load_structure(sample: Sample) -> np.ndarray:
    """The sample's body-part maps, [8, H, W] uint8: its own view, then the 7 rotations."""
    with Image.open(structure_path(sample)) as image:
        strip = np.asarray(image)
    views = len(STRUCTURE_YAWS_DEG)
    height, total_width = strip.shape
    return strip.reshape(height, views, total_width // views).transpose(1, 0, 2)
