"""Command line: ``python -m reidgen.synthvehicle --preset small [--layout vehicleid]``."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from reidgen.procedural import add_generation_arguments
from reidgen.synthvehicle.generate import LAYOUTS, MANIFEST, ensure_synthvehicle
from reidgen.synthvehicle.presets import PRESETS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m reidgen.synthvehicle",
        description="Generate (or find) a SynthVehicle dataset in VeRi-776 or VehicleID layout.",
    )
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--layout", default="veri", choices=LAYOUTS)
    parser.add_argument(
        "--size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"), help="e.g. 96 96"
    )
    add_generation_arguments(parser)
    parser.add_argument(
        "--contact-sheet", default=None, metavar="PNG", help="also copy the contact sheet here"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    start = time.perf_counter()
    root = ensure_synthvehicle(
        args.data_dir, args.preset, args.size, args.seed, args.layout, args.workers
    )
    elapsed = time.perf_counter() - start
    manifest = json.loads((root / MANIFEST).read_text())
    print(f"SynthVehicle {args.layout}/{args.preset} at {root} ({elapsed:.1f} s)")
    for name, counts in manifest["counts"].items():
        print(
            f"  {name:<16} {counts['images']:>6} images {counts['vehicles']:>5} vehicles "
            f"{counts['cameras']:>2} cameras"
        )
    groups = manifest["near_duplicate_groups"]
    print(f"  near-duplicate groups: {len(groups)} ({sum(len(g) for g in groups)} vehicles)")
    print(f"  contact sheet: {root / 'contact_sheet.png'}")
    if args.contact_sheet:
        target = Path(args.contact_sheet)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / "contact_sheet.png", target)
        print(f"  copied to {target}")


if __name__ == "__main__":
    main()
