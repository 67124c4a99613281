"""Command line: ``python -m reidgen.synthperson --domain street --preset small``."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from reidgen.procedural import add_generation_arguments
from reidgen.synthperson.generate import MANIFEST, ensure_synthperson
from reidgen.synthperson.presets import PRESETS
from reidgen.synthperson.style import BUILTIN_DOMAINS


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH such as 128x64, got {text!r}"
        ) from error
    return height, width


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m reidgen.synthperson",
        description="Generate (or find) a SynthPerson dataset in Market-1501 layout.",
    )
    parser.add_argument(
        "--domain",
        default="street",
        help=f"built-in domain ({', '.join(sorted(BUILTIN_DOMAINS))}) or a YAML/JSON domain file",
    )
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--size", type=_size, default=(128, 64), help="HEIGHTxWIDTH, e.g. 256x128")
    add_generation_arguments(parser)
    parser.add_argument(
        "--contact-sheet",
        nargs="?",
        const="",
        default=None,
        metavar="PNG",
        help="also copy the contact sheet here (default: docs/images/synthperson_<domain>.png)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    start = time.perf_counter()
    root = ensure_synthperson(
        args.data_dir, args.domain, args.preset, args.size, args.seed, args.workers
    )
    elapsed = time.perf_counter() - start
    manifest = json.loads((root / MANIFEST).read_text())
    print(f"SynthPerson {manifest['domain']['name']}/{args.preset} at {root} ({elapsed:.1f} s)")
    for folder, counts in manifest["counts"].items():
        print(
            f"  {folder:<20} {counts['images']:>6} images {counts['identities']:>5} identities "
            f"{counts['cameras']:>2} cameras {counts['distractors']:>4} distractors "
            f"{counts['junk']:>4} junk"
        )
    if args.contact_sheet is not None:
        target = Path(
            args.contact_sheet or f"docs/images/synthperson_{manifest['domain']['name']}.png"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / "contact_sheet.png", target)
        print(f"  contact sheet: {target}")


if __name__ == "__main__":
    main()
