"""``benchmarks/gpu_check.py`` (``make gpu-check``) in its CPU mode: the same code as on a GPU at
tiny sizes, every check of two methods; and a failing check fails the run."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture
def gpu_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The script as a module (in sys.modules while the test runs: its dataclasses look their
    module up); its main() quiets Lightning's logger, restored afterwards."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    lightning = logging.getLogger("pytorch_lightning")
    level = lightning.level
    yield module
    lightning.setLevel(level)


def table_rows(report: str) -> list[list[str]]:
    """(check, method, precision, result) of every row of the report's check table."""
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| ")]
    return [[cell.strip("| ") for cell in row[:4]] for row in rows if len(row) == 5][1:]


@pytest.mark.slow
def test_cpu_mode_runs_every_check_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.md"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--device=cpu",
            "--methods=baseline,qaconv",
            "--steps=3",
            f"--work-dir={tmp_path}",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = out.read_text()
    assert report in result.stdout
    assert "- device: no GPU, CPU mode" in report and "- torch " in report
    rows = table_rows(report)
    expected = [
        [check, method, precision]
        for check in ("train", "eval")
        for method in ("baseline", "qaconv")
        for precision in ("16-mixed", "bf16-mixed")
    ]
    expected += [["ddp", "baseline", "32-true"]]
    expected += [["throughput", method, "bf16-mixed"] for method in ("baseline", "qaconv")]
    assert [row[:3] for row in rows] == expected
    results = {tuple(row[:3]): row[3] for row in rows}
    for key, value in results.items():
        assert value == ("skipped" if key[2] == "16-mixed" else "pass"), key
    assert "| train | qaconv | 16-mixed | skipped | skipped: no CUDA |" in report
    assert "| ddp | baseline | 32-true | pass | gloo, world size 1" in report
    for part in ("train", "eval", "ddp", "throughput"):
        assert f"| {part} | " in report.split("| part | seconds |")[1]


def test_a_failing_check_fails_the_run(
    gpu_check: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(
        gpu_check, "ddp_command", lambda run: [sys.executable, "-c", "raise SystemExit(3)"]
    )
    out = tmp_path / "report.md"
    code = gpu_check.main(
        ["--device=cpu", "--checks=ddp", f"--work-dir={tmp_path}", f"--out={out}"]
    )
    assert code == 1
    assert table_rows(out.read_text()) == [["ddp", "baseline", "32-true", "FAIL"]]
    assert "exit 3" in out.read_text() and "1 rows, 1 failed" in capsys.readouterr().out


def test_a_spent_budget_fails_the_checks_left(
    gpu_check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = gpu_check.main(
        ["--device=cpu", "--checks=train", "--methods=gcl", "--budget=0", f"--work-dir={tmp_path}"]
    )
    assert code == 1
    assert (
        "| train | gcl | bf16-mixed | FAIL | not run: the 0 s are spent |"
        in capsys.readouterr().out
    )


def test_a_fit_that_deterministic_mode_stops_fails_and_is_tried_with_warnings(
    gpu_check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes = []

    def fit(cfg: DictConfig, steps: int, merge: int, logger: Any, callbacks: list) -> None:
        modes.append(cfg.trainer.deterministic)
        if cfg.trainer.deterministic is True:
            raise RuntimeError(f"reflection_pad2d_backward_out_cuda {gpu_check.NONDETERMINISTIC}")
        for loss in (3.0, 2.0, 1.0):
            logger.log_metrics({"train/loss_step": loss})

    monkeypatch.setattr(gpu_check, "fit", fit)
    sizes = gpu_check.CPU_SIZES
    run = gpu_check.Run(torch.device("cpu"), ["baseline"], ["train"], sizes, tmp_path, 60.0, None)
    row = gpu_check.train_row(run, "baseline", "bf16-mixed")
    assert modes == [True, "warn"]
    assert row.result == "FAIL" and row.detail.startswith("reflection_pad2d_backward_out_cuda")
    assert "with trainer.deterministic=warn: train/loss down: 3.0000 -> 1.0000" in row.detail


def test_decreasing_needs_finite_losses_that_go_down(gpu_check: ModuleType) -> None:
    decreasing = gpu_check.decreasing
    assert decreasing([5.0, 4.0, 4.5, 3.0, 2.0, 2.5, 2.0, 1.0])[0]
    assert not decreasing([1.0, 2.0, 3.0])[0]
    assert not decreasing([5.0, float("nan"), 1.0])[0]
    assert not decreasing([5.0])[0]


def test_unknown_methods_are_refused(gpu_check: ModuleType) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(["--methods=baseline,bot"])
    assert exit_info.value.code == 2
