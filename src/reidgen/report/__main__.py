"""``python -m reidgen.report --profile synthetic``: run every row of the profile's tables that has
no finished result, then write each table as Markdown, CSV, LaTeX and PNG under ``--out``, and
optionally replace the profile's block of a Markdown file, ``make reproduce-table``'s
``docs/results.md`` (between
``<!-- reproduce-table:<profile>:begin -->`` and ``<!-- reproduce-table:<profile>:end -->``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reidgen.report.experiments import PROFILES, load_tables
from reidgen.report.runner import Outcome, finished, run_counted, run_dir, runs_progress
from reidgen.report.tables import collect, write_outputs


def update_readme(readme: Path, profile: str, markdown: str) -> None:
    begin, end = (
        f"<!-- reproduce-table:{profile}:begin -->",
        f"<!-- reproduce-table:{profile}:end -->",
    )
    text = readme.read_text()
    if begin not in text or end not in text:
        print(f"[reproduce-table] {readme} has no {begin} block: not updated")
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{markdown}\n{end}{tail}")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m reidgen.report", description=__doc__)
    parser.add_argument("--profile", choices=PROFILES, default="paper")
    parser.add_argument("--experiments", type=Path, default=Path("experiments"))
    parser.add_argument("--out", type=Path, default=None, help="default: results/<profile>")
    parser.add_argument("--readme", type=Path, default=None)
    parser.add_argument("--tables-only", action="store_true", help="run nothing, only rebuild")
    args = parser.parse_args(argv)
    out = args.out or Path("results") / args.profile
    tables = load_tables(args.experiments, args.profile)
    if not tables:
        raise SystemExit(f"no table of profile {args.profile!r} in {args.experiments}")
    sections = []
    with runs_progress(out, tables, f"{args.profile} runs", not args.tables_only) as bar:
        for table in tables:
            outcomes = {}
            for row in table.rows:
                if args.tables_only:
                    outcomes[row.slug] = [
                        finished(out, table, row, run)
                        or Outcome(run_dir(out, table, row, run), run.seed, reason="not run yet")
                        for run in row.runs()
                    ]
                else:
                    outcomes[row.slug] = [
                        run_counted(out, table, row, run, bar) for run in row.runs()
                    ]
            sections.append(write_outputs(table, collect(table, outcomes), out / "tables"))
    markdown = "\n\n".join(sections)
    if args.readme is not None:
        update_readme(args.readme, args.profile, markdown)
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
