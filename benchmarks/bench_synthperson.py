"""SynthPerson generation speed: images per second, against the cost of only writing the files.

Target: at least 300 images/s at 128x64 on 2 cores (the `small` preset, all cores). The reference
measured in the same run is the I/O floor: encoding and writing generated JPEG images and PNG
structure maps again (no rendering), on one core, scaled to the dataset's image count. The ratio
says how much of the generation time rendering itself costs.

    python benchmarks/bench_synthperson.py [--preset small] [--size 128x64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from reidgen.synthperson.generate import (
    SynthPersonSpec,
    generate,
    plan_dataset,
    write_structure,
)
from reidgen.synthperson.presets import get_preset
from reidgen.synthperson.style import BUILTIN_DOMAINS

TARGET_IMAGES_PER_SECOND = 300.0


def io_floor(dataset: Path, count: int, folder: Path) -> float:
    """Seconds per file pair to encode and write generated JPEG + PNG pairs again."""
    pairs = []
    for path in sorted(dataset.glob("bounding_box_train/*.jpg"))[:count]:
        structure = dataset / "structure" / "bounding_box_train" / f"{path.stem}.png"
        with Image.open(path) as image, Image.open(structure) as strip:
            pairs.append((image.convert("RGB"), np.asarray(strip)))
    start = time.perf_counter()
    for index, (image, strip) in enumerate(pairs):
        image.save(folder / f"{index}.jpg", quality=80)
        write_structure(folder / f"{index}.png", strip)
    return (time.perf_counter() - start) / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--size", default="128x64")
    parser.add_argument("--domain", default="street", choices=sorted(BUILTIN_DOMAINS))
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    spec = SynthPersonSpec(BUILTIN_DOMAINS[args.domain], get_preset(args.preset), (height, width))
    count = len(plan_dataset(spec).files)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        dataset = generate(spec, scratch, workers=os.cpu_count())
        seconds = time.perf_counter() - start
        floor_dir = Path(scratch) / "floor"
        floor_dir.mkdir()
        floor = io_floor(dataset, 1000, floor_dir) * count
    rate = count / seconds
    print(f"SynthPerson {args.domain}/{args.preset} {height}x{width}: {count} images")
    print(f"  generation, {os.cpu_count()} cores: {seconds:6.1f} s  {rate:7.0f} images/s")
    print(
        f"  I/O floor (encode + write only, 1 core): {floor:6.1f} s  {count / floor:7.0f} images/s"
    )
    print(f"  generation / I/O floor time: {seconds / floor:.2f}x")
    verdict = "meets" if rate >= TARGET_IMAGES_PER_SECOND else "MISSES"
    print(
        f"  target {TARGET_IMAGES_PER_SECOND:.0f} images/s: {verdict} "
        f"({rate / TARGET_IMAGES_PER_SECOND:.2f}x)"
    )


if __name__ == "__main__":
    main()
