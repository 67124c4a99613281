"""Tables built only from the runs' ``metrics.json`` files: reported vs reproduced, the difference,
and each number's provenance; written as Markdown, CSV, LaTeX and a PNG chart. A row run with
several seeds shows the mean +- the sample standard deviation over its finished seeds, and how
many there were."""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from reidgen.report.experiments import Table
from reidgen.report.runner import Outcome


@dataclass(frozen=True)
class Cell:
    """One (row, target, metric) number: ``reported`` from the table file, ``reproduced`` the
    mean over the row's finished runs' metrics.json (None when none has finished), ``spread``
    their sample standard deviation (None for fewer than two) and ``count`` how many."""

    row: str
    target: str
    metric: str
    reported: float | None
    reproduced: float | None
    spread: float | None = None
    count: int = 1

    @property
    def difference(self) -> float | None:
        if self.reported is None or self.reproduced is None:
            return None
        return self.reproduced - self.reported


@dataclass(frozen=True)
class RowResult:
    name: str
    cells: tuple[Cell, ...]
    provenance: str  # revision, seed, GPUs, dataset variants, date; or why the row was skipped
    skipped: bool


def collect(table: Table, outcomes: dict[str, list[Outcome]]) -> list[RowResult]:
    """Every row's cells: the reported targets and metrics, or, for rows without reported
    numbers, every target the runs tested (the mean over targets excluded).

    :param outcomes: per row slug, the outcome of each of its runs (one per seed).
    """
    results = []
    for row in table.rows:
        row_outcomes = outcomes[row.slug]
        done = [o for o in row_outcomes if o.metrics is not None]
        records = [json.loads(o.metrics.read_text()) for o in done]  # type: ignore[union-attr]
        tested = [t for r in records for t in r["targets"] if t in r["metrics"]]
        targets = list(row.reported) or list(dict.fromkeys(tested))
        cells = []
        for target in targets:
            for metric in table.metrics:
                values = [
                    r["metrics"][target][metric]
                    for r in records
                    if metric in r["metrics"].get(target, {})
                ]
                cells.append(
                    Cell(
                        row.name,
                        target,
                        metric,
                        row.reported.get(target, {}).get(metric),
                        statistics.fmean(values) if values else None,
                        statistics.stdev(values) if len(values) > 1 else None,
                        len(values),
                    )
                )
        skipped = [o for o in row_outcomes if o.metrics is None]
        provenance = "; ".join(
            [_provenance(records) if records else ""]
            + [
                f"skipped{'' if o.seed is None else f' (seed {o.seed})'}: {o.reason}"
                for o in skipped
            ]
        ).strip("; ")
        results.append(RowResult(row.name, tuple(cells), provenance, not records))
    return results


def _provenance(records: list[dict]) -> str:
    """Revision(s), seed(s), processes, date(s) and dataset variants of finished runs."""
    revisions = []
    for record in records:
        full = record.get("git_revision") or "unknown"
        revisions.append(full[:12] + ("-dirty" if full.endswith("-dirty") else ""))
    first = records[0]
    variants = "; ".join(f"{k}: {v}" for k, v in sorted(first["dataset_variants"].items()))
    seeds = ", ".join(str(r["seed"]) for r in records)
    dates = sorted(r["date"] for r in records)
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    named = f"{first['method_variant']}, " if first.get("method_variant") else ""
    return (
        f"{named}rev {', '.join(dict.fromkeys(revisions))}, "
        f"seed{'s' if len(records) > 1 else ''} {seeds}, {first['world_size']} process(es), "
        f"{when}, {variants}"
    )


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _columns(table: Table, results: list[RowResult]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for result in results:
        for cell in result.cells:
            if (cell.target, cell.metric) not in seen:
                seen.append((cell.target, cell.metric))
    return seen


def _lookup(result: RowResult, target: str, metric: str) -> Cell | None:
    return next((c for c in result.cells if (c.target, c.metric) == (target, metric)), None)


def _reproduced_text(cell: Cell, plus_minus: str) -> str:
    """The mean, with ``+- std (n=count)`` when more than one run made it."""
    if cell.spread is None:
        return _number(cell.reproduced)
    return f"{_number(cell.reproduced)} {plus_minus} {cell.spread:.1f} (n={cell.count})"


def _cell_text(cell: Cell | None, with_difference: bool, plus_minus: str = "±") -> str:
    """``reported / reproduced`` (and the signed difference), or the reproduced value alone
    when nothing is reported; empty for a column the row does not have."""
    if cell is None:
        return ""
    if cell.reported is None:
        return _reproduced_text(cell, plus_minus)
    text = f"{_number(cell.reported)} / {_reproduced_text(cell, plus_minus)}"
    return f"{text} ({_number(cell.difference, signed=True)})" if with_difference else text


def to_markdown(table: Table, results: list[RowResult]) -> str:
    """Each (target, metric): reported / reproduced (difference); then the provenance."""
    columns = _columns(table, results)
    header = "| row | " + " | ".join(f"{t} {m}" for t, m in columns) + " | provenance |"
    lines = [f"**{table.title}**", ""]
    if table.source:
        lines += [
            f"Reported numbers: {table.source}. Cells: reported / reproduced (difference).",
            "",
        ]
    lines += [header, "|---" * (len(columns) + 2) + "|"]
    for result in results:
        values = [_cell_text(_lookup(result, t, m), with_difference=True) for t, m in columns]
        lines.append(f"| {result.name} | " + " | ".join(values) + f" | {result.provenance} |")
    return "\n".join(lines)


def to_csv(results: list[RowResult]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "row",
            "target",
            "metric",
            "reported",
            "reproduced",
            "std",
            "runs",
            "difference",
            "provenance",
        ]
    )
    for result in results:
        for cell in result.cells:
            writer.writerow(
                [
                    cell.row,
                    cell.target,
                    cell.metric,
                    "" if cell.reported is None else cell.reported,
                    "" if cell.reproduced is None else round(cell.reproduced, 4),
                    "" if cell.spread is None else round(cell.spread, 4),
                    cell.count,
                    "" if cell.difference is None else round(cell.difference, 4),
                    result.provenance,
                ]
            )
    return buffer.getvalue()


def _latex_escape(text: str) -> str:
    for raw, escaped in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
    ):
        text = text.replace(raw, escaped)
    return text


def to_latex(table: Table, results: list[RowResult]) -> str:
    columns = _columns(table, results)
    lines = [
        r"\begin{tabular}{l" + "c" * len(columns) + "}",
        r"\toprule",
        "Row & " + " & ".join(_latex_escape(f"{t} {m}") for t, m in columns) + r" \\",
        r"\midrule",
    ]
    for result in results:
        values = [
            _cell_text(_lookup(result, t, m), with_difference=False, plus_minus="$\\pm$")
            for t, m in columns
        ]
        lines.append(_latex_escape(result.name) + " & " + " & ".join(values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_png(table: Table, results: list[RowResult], path: Path) -> None:
    """A horizontal bar chart: per (row, target, metric) the reported (grey) and reproduced
    (blue) value, on a 0-100 scale."""
    bars = [c for r in results for c in r.cells]
    width, label_width, bar_height = 760, 330, 9
    height = 30 + len(bars) * (2 * bar_height + 8)
    image = Image.new("RGB", (width, max(height, 60)), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), table.title[:110], fill=(0, 0, 0))
    scale = (width - label_width - 40) / 100
    y = 26
    for cell in bars:
        draw.text((4, y + 2), f"{cell.row[:34]} | {cell.target} {cell.metric}"[:52], fill=(0, 0, 0))
        for value, text, colour, offset in (
            (cell.reported, _number(cell.reported), (170, 170, 170), 0),
            (cell.reproduced, _reproduced_text(cell, "+-"), (40, 110, 220), bar_height),
        ):
            if value is not None:
                x1 = label_width + max(1, round(min(value, 100) * scale))
                draw.rectangle(
                    (label_width, y + offset, x1, y + offset + bar_height - 2), fill=colour
                )
                draw.text((x1 + 3, y + offset - 2), text, fill=(0, 0, 0))
        y += 2 * bar_height + 8
    image.save(path)


def write_outputs(table: Table, results: list[RowResult], out: Path) -> str:
    """Writes ``<out>/<table>.{md,csv,tex,png}``; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table, results)
    (out / f"{table.name}.md").write_text(markdown + "\n")
    (out / f"{table.name}.csv").write_text(to_csv(results))
    (out / f"{table.name}.tex").write_text(to_latex(table, results))
    to_png(table, results, out / f"{table.name}.png")
    return markdown
