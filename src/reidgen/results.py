"""A run's results: ``metrics.json`` (what report/ builds tables from) and the terminal table."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reidgen.atomic import write_atomically
from reidgen.methods.base import METRIC_KEYS


def git_revision() -> str | None:
    """The checkout's commit (with ``-dirty`` when it has local changes), or None outside git."""
    try:
        here = Path(__file__).parent
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{revision}-dirty" if dirty else revision


def write_metrics(
    path: Path, results: Mapping[str, Mapping[str, float]], **provenance: Any
) -> dict:
    """Writes ``metrics.json``: per-target metrics plus the run's provenance; returns the record."""
    record = {
        **provenance,
        "metrics": {target: dict(values) for target, values in results.items()},
        "git_revision": git_revision(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    write_atomically(path, lambda temporary: temporary.write_text(text))
    return record


def format_table(results: Mapping[str, Mapping[str, float]], title: str = "") -> str:
    """A Markdown table: one row per target (and the mean), metrics in percent."""
    header = "| target | " + " | ".join(METRIC_KEYS) + " |"
    lines = [title, "", header, "|" + "---|" * (len(METRIC_KEYS) + 1)] if title else [header]
    if not title:
        lines.append("|" + "---|" * (len(METRIC_KEYS) + 1))
    for target, metrics in results.items():
        values = " | ".join(f"{metrics[key]:.1f}" for key in METRIC_KEYS)
        lines.append(f"| {target} | {values} |")
    return "\n".join(lines)
