"""The papers' tables as data: ``experiments/*.yaml``, one file per table.

A file holds ``table`` (its name), ``title``, ``source`` (where the reported numbers come from),
``metrics`` (the columns, e.g. ``[rank1, mAP]``), ``profile`` (``paper`` by default, or
``synthetic`` / ``ablations`` / ``smoke``) and ``rows``: each a ``name``, the Hydra
``overrides`` of ``python -m reidgen.run`` that make its run, and optionally ``reported``:
``{target: {metric: value in %}}`` and ``seeds``: a list of seeds, one run each (``seed=<s>``
added to its overrides), shown as mean +- standard deviation. A top-level ``seeds`` is the
default of every row that names none; without either, a row is one run with the config's seed.
A row may also start from the checkpoints of an earlier row of its table, seed by seed:
``checkpoint_from: {<config key>: <row name>}`` adds ``<config key>=<that row's run of the same
seed>/checkpoints/last.ckpt`` to its overrides (e.g. GCL's ``method.encoder_checkpoint``, the
initial encoder being another row).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROFILES = ("paper", "synthetic", "ablations", "smoke")


@dataclass(frozen=True)
class Run:
    """One run of a row: its seed (None: the config's own) and the overrides that make it."""

    seed: int | None
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Row:
    name: str
    overrides: tuple[str, ...]
    reported: dict[str, dict[str, float]] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()
    # (config key, name of the earlier row whose run of the same seed gives its last.ckpt)
    checkpoint_from: tuple[tuple[str, str], ...] = ()

    @property
    def slug(self) -> str:
        """A folder name for the row's run: the name in lower case, non-alphanumerics as ``-``."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    def runs(self) -> tuple[Run, ...]:
        """One run per seed, or the one run of a row without seeds."""
        if not self.seeds:
            return (Run(None, self.overrides),)
        return tuple(Run(seed, (*self.overrides, f"seed={seed}")) for seed in self.seeds)


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    source: str
    metrics: tuple[str, ...]
    profile: str
    rows: tuple[Row, ...]


def load_table(path: Path) -> Table:
    """Reads and checks one table file; errors name the file and the problem."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "rows" not in data or "table" not in data:
        raise ValueError(f"{path}: expected a mapping with 'table' and 'rows'")
    profile = data.get("profile", "paper")
    if profile not in PROFILES:
        raise ValueError(f"{path}: profile must be one of {PROFILES}, got {profile!r}")
    default_seeds = _seeds(data.get("seeds"), f"{path}: seeds")
    rows = []
    for index, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or "name" not in row or "overrides" not in row:
            raise ValueError(f"{path}: row {index} needs 'name' and 'overrides'")
        seeds = _seeds(row.get("seeds"), f"{path}: row {index} seeds") or default_seeds
        if seeds and any(str(o).startswith(("seed=", "++seed=")) for o in row["overrides"]):
            raise ValueError(
                f"{path}: row {index} sets seed= in its overrides and has seeds {list(seeds)}; "
                "give one or the other"
            )
        rows.append(
            Row(
                row["name"],
                tuple(row["overrides"]),
                dict(row.get("reported") or {}),
                seeds,
                _checkpoint_from(row.get("checkpoint_from"), rows, seeds, f"{path}: row {index}"),
            )
        )
    slugs = [row.slug for row in rows]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"{path}: row names must differ (as folder names): {slugs}")
    return Table(
        name=data["table"],
        title=data.get("title", data["table"]),
        source=data.get("source", ""),
        metrics=tuple(data.get("metrics", ("rank1", "mAP"))),
        profile=profile,
        rows=tuple(rows),
    )


def _seeds(value: object, where: str) -> tuple[int, ...]:
    """A list of distinct integer seeds (None: no seeds)."""
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in value)
        or len(set(value)) != len(value)
    ):
        raise ValueError(f"{where} must be a non-empty list of distinct integers, got {value!r}")
    return tuple(value)


def _checkpoint_from(
    value: object, earlier: list[Row], seeds: tuple[int, ...], where: str
) -> tuple[tuple[str, str], ...]:
    """``{config key: row name}`` checked: each name an earlier row with the same seeds."""
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{where}: checkpoint_from must map config keys to row names")
    rows = {row.name: row for row in earlier}
    for key, name in value.items():
        if name not in rows:
            raise ValueError(
                f"{where}: checkpoint_from {key}: {name!r} is not an earlier row of the table "
                f"(earlier rows: {list(rows)})"
            )
        if rows[name].seeds != seeds:
            raise ValueError(
                f"{where}: checkpoint_from {key}: row {name!r} has seeds "
                f"{list(rows[name].seeds)}, this row {list(seeds)}; they must be the same"
            )
    return tuple(value.items())


def load_tables(folder: Path, profile: str) -> list[Table]:
    """The tables of ``profile`` among ``folder/*.yaml``, in file-name order."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if not folder.is_dir():
        raise FileNotFoundError(f"experiments folder {folder} does not exist")
    tables = [load_table(path) for path in sorted(folder.glob("*.yaml"))]
    return [table for table in tables if table.profile == profile]
