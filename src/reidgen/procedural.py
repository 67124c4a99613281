"""What the procedural datasets (SynthPerson, SynthVehicle) share: rendering planned files in
worker processes, publishing a generated folder atomically, once, under a file lock, reading its
manifest back, command-line options and contact-sheet cells."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock
from PIL import Image, ImageDraw

from reidgen.progress import progress

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class FileRenderer(Protocol):
    """Per-process rendering state, built from picklable arguments in each worker."""

    def render(self, ordinal: int, plan: Any) -> None: ...


_WORKER: FileRenderer | None = None


def _init_worker(factory: Callable[..., FileRenderer], args: tuple[Any, ...]) -> None:
    global _WORKER
    _WORKER = factory(*args)


def _render_chunk(chunk: list[tuple[int, Any]]) -> int:
    if _WORKER is None:
        raise RuntimeError("_render_chunk runs in a worker started with _init_worker")
    for ordinal, plan in chunk:
        _WORKER.render(ordinal, plan)
    return len(chunk)


def render_in_workers(
    factory: Callable[..., FileRenderer],
    args: tuple[Any, ...],
    files: Sequence[Any],
    workers: int | None,
    parallel_min: int,
    description: str,
) -> None:
    """Calls ``factory(*args).render(ordinal, file)`` for every planned file, in this process
    when ``workers`` is 1 or there are fewer than ``parallel_min`` files (starting processes
    would cost more), else in spawned workers. ``factory`` must be importable (a module-level
    class) and render only from ``(ordinal, file)`` so the bytes do not depend on the workers.
    A progress bar named ``description`` counts the files rendered."""
    items = list(enumerate(files))
    workers = workers or os.cpu_count() or 1
    with progress(description=description, total=len(items), unit="image") as bar:
        if workers <= 1 or len(items) < parallel_min:
            renderer = factory(*args)
            for ordinal, file_plan in items:
                renderer.render(ordinal, file_plan)
                bar.update()
            return
        # Consecutive files per chunk: a renderer's per-identity caches stay useful.
        chunk_size = max(16, len(items) // (workers * 8))
        chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
        # Spawned workers: forking a parent that already runs torch threads is unsafe.
        context = get_context("spawn")
        with ProcessPoolExecutor(workers, context, _init_worker, (factory, args)) as pool:
            for rendered in pool.map(_render_chunk, chunks):
                bar.update(rendered)


def publish(
    parent: Path,
    dirname: str,
    check_existing: Callable[[Path], None],
    build: Callable[[Path], dict[str, Any]],
) -> Path:
    """Returns ``parent / dirname``, built first unless it exists (then ``check_existing``
    vets it, raising if it is not the finished dataset its name promises).

    Safe to call from several processes at once (e.g. DDP ranks): a file lock makes one build
    while the others wait. ``build(folder)`` writes everything into a temporary folder and
    returns the manifest, written last as :data:`MANIFEST`; then the folder is renamed into
    place, so an interrupted run never leaves something that looks finished; the next run
    removes its leftovers.
    """
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / dirname
    with FileLock(str(parent / f".{dirname}.lock")):
        if final.exists():
            check_existing(final)
            return final
        for stale in parent.glob(f".{dirname}.tmp-*"):
            log.warning("removing the leftovers of an interrupted generation: %s", stale)
            shutil.rmtree(stale)
        temporary = parent / f".{dirname}.tmp-{uuid.uuid4().hex[:8]}"
        temporary.mkdir()
        record = build(temporary)
        manifest_tmp = temporary / f"{MANIFEST}.part"
        manifest_tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        manifest_tmp.rename(temporary / MANIFEST)
        temporary.rename(final)
    return final


def read_manifest(root: Path, what: str) -> dict[str, Any]:
    """The manifest of a finished generated dataset; FileNotFoundError naming ``what`` if none."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{root} is not a finished {what} dataset: {MANIFEST} is missing")
    return json.loads(manifest_path.read_text())


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """The command lines' shared options: ``--seed``, ``--data-dir``, ``--workers``."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("REIDGEN_DATA_DIR", "data"),
        help="root of reidgen's data folder (default: $REIDGEN_DATA_DIR or ./data)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")


def paste_cell(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    path: str | Path | None,
    corner: tuple[int, int],
    size: tuple[int, int],
) -> None:
    """A contact sheet's cell at ``corner`` (left, top): the image at ``path``, or a dark grey
    ``size`` (width, height) box where there is none (never passed that camera)."""
    (left, top), (width, height) = corner, size
    if path is None:
        draw.rectangle((left, top, left + width - 1, top + height - 1), fill=(60, 60, 60))
        return
    with Image.open(path) as image:
        sheet.paste(image.convert("RGB"), (left, top))
