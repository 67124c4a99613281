"""``python -m reidgen.evaluate`` end to end, on what it must refuse."""

from __future__ import annotations

from pathlib import Path

from tests.test_run import run_module


def test_evaluate_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    # Text starting with "g" is a pickle GET opcode: torch.load used to fail with "invalid
    # literal for int() with base 10", which does not say what is wrong.
    checkpoint = tmp_path / "notes.ckpt"
    checkpoint.write_text("garbage 123\n")
    log_dir = tmp_path / "logs"
    result = run_module(
        "reidgen.evaluate",
        [f"ckpt={checkpoint}", "data=synth_tiny"],
        tmp_path / "data",
        log_dir,
        check=False,
    )
    assert result.returncode != 0
    assert f"{checkpoint} is not a reidgen checkpoint" in result.stderr, result.stderr[-3000:]
    assert not list(log_dir.rglob("metrics.json"))
    # The folder Hydra opens holds only Hydra's own files, no run config: nothing was evaluated.
    assert not [p for p in log_dir.rglob("config.yaml") if p.parent.name != ".hydra"]
