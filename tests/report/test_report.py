"""make reproduce-table: the smoke profile end to end on the tiny preset, restart after an
interrupted row, a missing dataset listed as skipped, every number traced to a metrics.json."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reidgen.report.experiments import load_table, load_tables

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
    for profile in ("paper", "synthetic", "smoke"):
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


@pytest.mark.slow
def test_smoke_profile_restart_and_skipped_rows(
    tmp_path: Path, synth_data_dir: Path, tiny_studio: Path
) -> None:
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    smoke = yaml.safe_load((ROOT / "experiments" / "smoke.yaml").read_text())
    smoke["rows"] = smoke["rows"][:2]  # the baseline and QAConv-GS keep the test short
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
    first = runs / "bot-baseline" / "metrics.json"
    second = runs / "qaconv-gs" / "metrics.json"
    assert first.is_file() and second.is_file()
    assert not (runs / "needs-market").joinpath("metrics.json").exists()
    reason = (runs / "needs-market.skipped.txt").read_text()
    assert "market1501" in reason

    # Every reproduced number in the CSV is the run's own metrics.json value.
    rows = list(csv.DictReader((out / "tables" / "smoke.csv").open()))
    for row in rows:
        if row["row"] == "needs Market":
            assert row["reproduced"] == "" and row["reported"] and "skipped" in row["provenance"]
            continue
        source = {"BoT baseline": first, "QAConv-GS": second}[row["row"]]
        metrics = json.loads(source.read_text())["metrics"]
        assert float(row["reproduced"]) == pytest.approx(metrics[row["target"]][row["metric"]])
    for suffix in ("md", "tex", "png"):
        assert (out / "tables" / f"smoke.{suffix}").stat().st_size > 0
    text = readme.read_text()
    assert (
        "PLACEHOLDER-TEXT" not in text
        and "BoT baseline" in text
        and "skipped" in text
        and text.endswith("end\n")
    )

    # Restart: the finished row is reused; an interrupted one (no metrics.json) is moved aside
    # and run again.
    finished_at = first.stat().st_mtime_ns
    second.unlink()
    report(experiments, out, synth_data_dir, "--profile", "smoke")
    assert first.stat().st_mtime_ns == finished_at
    assert second.is_file()
    assert (runs / "qaconv-gs.interrupted-1" / "config.yaml").is_file()
    shutil.rmtree(out / "logs", ignore_errors=True)
