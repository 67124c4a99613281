"""make reproduce-table: the smoke profile end to end on the tiny preset, restart after an
interrupted row, a missing dataset listed as skipped, every number traced to a metrics.json."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reidgen.report.experiments import Row, Table, load_table, load_tables
from reidgen.report.runner import (
    Outcome,
    command_overrides,
    run_counted,
    run_dir,
    run_once,
    runs_progress,
)
from reidgen.report.tables import collect, to_csv, to_latex, to_markdown

ROOT = Path(__file__).resolve().parents[2]


def report(experiments: Path, out: Path, data_dir: Path, *args: str) -> str:
    env = {**os.environ, "REIDGEN_DATA_DIR": str(data_dir), "REIDGEN_LOG_DIR": str(out / "logs")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "reidgen.report",
            "--experiments",
            str(experiments),
            "--out",
            str(out),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_every_table_file_loads_with_distinct_rows() -> None:
    for profile in ("paper", "synthetic", "ablations", "smoke"):
        assert load_tables(ROOT / "experiments", profile), profile
    names = [load_table(p).name for p in sorted((ROOT / "experiments").glob("*.yaml"))]
    assert len(set(names)) == len(names)


def test_bad_table_files_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("table: x\nprofile: nightly\nrows: []\n")
    with pytest.raises(ValueError, match="profile must be one of"):
        load_tables(tmp_path, "paper")
    (tmp_path / "bad.yaml").write_text("table: x\nrows: [{name: a}]\n")
    with pytest.raises(ValueError, match="row 0 needs 'name' and 'overrides'"):
        load_tables(tmp_path, "paper")


def test_seeds_make_one_run_each_and_fail_clearly(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "table: t\nseeds: [0, 1, 2]\nrows:\n"
        "  - {name: a, overrides: [method=baseline]}\n"
        "  - {name: b, overrides: [method=qaconv], seeds: [7]}\n"
    )
    table = load_table(path)
    assert [run.seed for run in table.rows[0].runs()] == [0, 1, 2]
    assert table.rows[0].runs()[2].overrides == ("method=baseline", "seed=2")
    assert [run.overrides for run in table.rows[1].runs()] == [("method=qaconv", "seed=7")]
    assert Row("c", ("x=1",)).runs()[0].overrides == ("x=1",)  # no seeds: the config's own
    for row, message in (
        ("{name: a, overrides: [m=1], seeds: [1, 1]}", "distinct integers"),
        ("{name: a, overrides: [m=1], seeds: one}", "distinct integers"),
        ("{name: a, overrides: [m=1, seed=3], seeds: [1]}", "give one or the other"),
    ):
        path.write_text(f"table: t\nrows:\n  - {row}\n")
        with pytest.raises(ValueError, match=message):
            load_table(path)


def test_checkpoint_from_passes_the_same_seeds_checkpoint_or_skips(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "table: t\nseeds: [0, 1]\nrows:\n"
        "  - {name: Initial encoder, overrides: [method=baseline]}\n"
        "  - {name: GCL, overrides: [method=gcl],"
        " checkpoint_from: {method.encoder_checkpoint: Initial encoder}}\n"
    )
    table = load_table(path)
    encoder, gcl = table.rows
    out = tmp_path / "out"
    seed1 = run_dir(out, table, encoder, encoder.runs()[1])
    (seed1 / "checkpoints").mkdir(parents=True)
    (seed1 / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (seed1 / "metrics.json").write_text("{}")
    assert command_overrides(out, table, gcl, gcl.runs()[1]) == (
        "method=gcl",
        "seed=1",
        f"method.encoder_checkpoint={seed1 / 'checkpoints' / 'last.ckpt'}",
    )
    # Seed 0's initial encoder has not run: GCL's seed 0 is skipped, saying why, and runs nothing.
    outcome = run_once(out, table, gcl, gcl.runs()[0])
    assert outcome.metrics is None and "row 'Initial encoder' (seed 0)" in outcome.reason
    skipped = run_dir(out, table, gcl, gcl.runs()[0]).with_name("seed-0.skipped.txt")
    assert "method.encoder_checkpoint" in skipped.read_text()
    assert not run_dir(out, table, gcl, gcl.runs()[0]).exists()
    for rows, message in (
        (
            "  - {name: a, overrides: [m=1], checkpoint_from: {k: b}}\n"
            "  - {name: b, overrides: [m=2]}\n",
            "'b' is not an earlier row",
        ),
        (
            "  - {name: b, overrides: [m=2], seeds: [0]}\n"
            "  - {name: a, overrides: [m=1], checkpoint_from: {k: b}}\n",
            "must be the same",
        ),
        ("  - {name: a, overrides: [m=1], checkpoint_from: [b]}\n", "map config keys"),
    ):
        path.write_text(f"table: t\nseeds: [0, 1]\nrows:\n{rows}")
        with pytest.raises(ValueError, match=message):
            load_table(path)


def _metrics_file(
    folder: Path, seed: int, values: dict[str, dict[str, float]], **extra: str
) -> Path:
    folder.mkdir(parents=True)
    record = {
        **extra,
        "metrics": values,
        "targets": list(values),
        "seed": seed,
        "git_revision": "abcdef0123456789",
        "world_size": 1,
        "date": f"2026-12-0{seed + 1}",
        "dataset_variants": {"studio": "small"},
    }
    path = folder / "metrics.json"
    path.write_text(json.dumps(record))
    return path


def test_several_seeds_show_mean_std_and_count(tmp_path: Path) -> None:
    table = Table(
        "t",
        "T",
        "",
        ("mAP",),
        "synthetic",
        (Row("seeded", ("m=1",), seeds=(0, 1, 2, 3)), Row("single", ("m=2",))),
    )
    maps = [70.0, 72.0, 77.0]
    outcomes = {
        "seeded": [
            Outcome(
                tmp_path / f"s{seed}",
                seed,
                metrics=_metrics_file(tmp_path / f"s{seed}", seed, {"studio": {"mAP": value}}),
            )
            for seed, value in enumerate(maps)
        ]
        + [Outcome(tmp_path / "s3", 3, reason="RuntimeError: out of memory")],
        "single": [
            Outcome(
                tmp_path / "one",
                None,
                metrics=_metrics_file(
                    tmp_path / "one",
                    0,
                    {"studio": {"mAP": 50.0}},
                    method_variant="GCL (2-D structure fallback)",
                ),
            )
        ],
    }
    seeded, single = collect(table, outcomes)
    (cell,) = seeded.cells
    # Mean 73.0; sample standard deviation sqrt(((-3)^2 + (-1)^2 + 4^2) / 2) = sqrt(13).
    assert cell.reproduced == pytest.approx(73.0) and cell.count == 3
    assert cell.spread == pytest.approx(13**0.5)
    assert (
        "seeds 0, 1, 2" in seeded.provenance
        and "skipped (seed 3): RuntimeError" in seeded.provenance
    )
    assert not seeded.skipped
    assert single.cells[0].spread is None and "seed 0" in single.provenance
    # A run's variant (metrics.json's method_variant) names it in the table.
    assert single.provenance.startswith("GCL (2-D structure fallback), rev abcdef012345")
    assert "GCL" not in seeded.provenance
    markdown = to_markdown(table, [seeded, single])
    assert "| seeded | 73.0 ± 3.6 (n=3) |" in markdown and "| single | 50.0 |" in markdown
    assert r"73.0 $\pm$ 3.6 (n=3)" in to_latex(table, [seeded, single])
    rows = list(csv.DictReader(io.StringIO(to_csv([seeded, single]))))
    assert rows[0]["reproduced"] == "73.0" and rows[0]["runs"] == "3"
    assert float(rows[0]["std"]) == pytest.approx(13**0.5, abs=1e-4) and rows[1]["std"] == ""


@pytest.mark.slow
def test_smoke_profile_restart_and_skipped_rows(
    tmp_path: Path, synth_data_dir: Path, tiny_studio: Path
) -> None:
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    smoke = yaml.safe_load((ROOT / "experiments" / "smoke.yaml").read_text())
    # The baseline alone, one epoch: what is tested is the runner, not the training.
    smoke["rows"] = smoke["rows"][:1]
    smoke["rows"][0]["seeds"] = [0, 1]
    smoke["rows"][0]["overrides"].append("trainer.max_epochs=1")
    smoke["rows"].append(
        {
            "name": "needs Market",
            "overrides": ["experiment=quick", "hardware=cpu", "data.targets=[market1501]"],
            "reported": {"market1501": {"mAP": 50.0, "rank1": 70.0}},
        }
    )
    (experiments / "smoke.yaml").write_text(yaml.safe_dump(smoke))
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n<!-- reproduce-table:smoke:begin -->\nPLACEHOLDER-TEXT\n"
        "<!-- reproduce-table:smoke:end -->\nend\n"
    )
    out = tmp_path / "out"
    report(experiments, out, synth_data_dir, "--profile", "smoke", "--readme", str(readme))

    runs = out / "runs" / "smoke"
    first = runs / "bot-baseline" / "seed-0" / "metrics.json"
    second = runs / "bot-baseline" / "seed-1" / "metrics.json"
    assert first.is_file() and second.is_file()
    assert not (runs / "needs-market").joinpath("metrics.json").exists()
    reason = (runs / "needs-market.skipped.txt").read_text()
    assert "market1501" in reason

    # Every reproduced number in the CSV is its runs' own metrics.json values (the mean of the
    # two seeds' for the baseline, whose seeds differ).
    rows = list(csv.DictReader((out / "tables" / "smoke.csv").open()))
    spreads = []
    for row in rows:
        if row["row"] == "needs Market":
            assert row["reproduced"] == "" and row["reported"] and "skipped" in row["provenance"]
            continue
        assert row["row"] == "BoT baseline"
        sources = [first, second]
        values = [
            json.loads(source.read_text())["metrics"][row["target"]][row["metric"]]
            for source in sources
        ]
        assert float(row["reproduced"]) == pytest.approx(sum(values) / len(values), abs=1e-4)
        assert row["runs"] == "2"
        spreads.append(float(row["std"]))
    assert max(spreads) > 0  # the seeds made different runs
    for suffix in ("md", "tex", "png"):
        assert (out / "tables" / f"smoke.{suffix}").stat().st_size > 0
    text = readme.read_text()
    assert (
        "PLACEHOLDER-TEXT" not in text
        and "BoT baseline" in text
        and "skipped" in text
        and text.endswith("end\n")
    )

    # Restart: a finished run is reused; an interrupted one (no metrics.json) is moved aside
    # and run again.
    finished_at = first.stat().st_mtime_ns
    second.unlink()
    report(experiments, out, synth_data_dir, "--profile", "smoke")
    assert first.stat().st_mtime_ns == finished_at
    assert second.is_file()
    assert (runs / "bot-baseline" / "seed-1.interrupted-1" / "config.yaml").is_file()
    shutil.rmtree(out / "logs", ignore_errors=True)


def test_progress_counts_each_run_once_and_finished_runs_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "table: t\nseeds: [0, 1]\nrows:\n"
        "  - {name: Initial encoder, overrides: [method=baseline]}\n"
        "  - {name: GCL, overrides: [method=gcl],"
        " checkpoint_from: {method.encoder_checkpoint: Initial encoder}}\n"
    )
    table = load_table(path)
    encoder, gcl = table.rows
    out = tmp_path / "out"
    done = run_dir(out, table, encoder, encoder.runs()[1])
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("REIDGEN_PROGRESS", "1")
    with runs_progress(out, [table], "smoke runs", enabled=True) as bar:
        assert (bar.n, bar.total) == (1, 4)
        run_counted(out, table, encoder, encoder.runs()[1], bar)  # finished before: not again
        assert bar.n == 1
        run_counted(out, table, gcl, gcl.runs()[0], bar)  # skipped (no encoder yet): done here
        assert bar.n == 2
    captured = capsys.readouterr()
    assert "smoke runs" in captured.err and "2/4" in captured.err
    assert "GCL (seed 0): skipped" in captured.out
