"""Where a run starts from: ``ckpt_path=last``, a run folder that continues its own unfinished
run, the refusal of a finished one, and the earlier part's CSV log kept."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pytorch_lightning.loggers import CSVLogger

from reidgen.resume import checkpoint_to_resume, last_checkpoint, set_aside_csv_logs


def unfinished(run_dir: Path) -> Path:
    checkpoint = last_checkpoint(run_dir)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"a checkpoint")
    return checkpoint


def test_a_new_folder_starts_afresh_or_from_the_given_checkpoint(tmp_path: Path) -> None:
    other = unfinished(tmp_path / "other")
    assert checkpoint_to_resume(tmp_path / "new", None) is None
    assert checkpoint_to_resume(tmp_path / "new", str(other)) == other
    with pytest.raises(FileNotFoundError, match="ckpt_path=.*nothing.ckpt: no such checkpoint"):
        checkpoint_to_resume(tmp_path / "new", str(tmp_path / "nothing.ckpt"))


def test_ckpt_path_last_is_the_folders_own_and_fails_clearly_without_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(FileNotFoundError) as missing:
        checkpoint_to_resume(run_dir, "last")
    assert str(last_checkpoint(run_dir)) in str(missing.value)
    assert "hydra.run.dir" in str(missing.value)
    own = unfinished(run_dir)
    with caplog.at_level(logging.INFO, logger="reidgen.resume"):
        assert checkpoint_to_resume(run_dir, "last") == own
    assert f"resuming the unfinished run in {run_dir}" in caplog.text


def test_a_folder_with_its_own_last_checkpoint_resumes_from_it_unasked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = unfinished(tmp_path / "run")
    other = unfinished(tmp_path / "other")
    with caplog.at_level(logging.INFO, logger="reidgen.resume"):
        assert checkpoint_to_resume(tmp_path / "run", None) == own
        assert "resuming the unfinished run" in caplog.text
        # Its own state is newer than the checkpoint it was started from.
        assert checkpoint_to_resume(tmp_path / "run", str(other)) == own
    assert f"not from ckpt_path={other}" in caplog.text


@pytest.mark.parametrize("ckpt_path", [None, "last", "other"])
def test_a_finished_run_is_never_started_over(tmp_path: Path, ckpt_path: str | None) -> None:
    run_dir = tmp_path / "run"
    unfinished(run_dir)
    (run_dir / "metrics.json").write_text("{}")
    other = unfinished(tmp_path / "other")
    setting = str(other) if ckpt_path == "other" else ckpt_path
    with pytest.raises(FileExistsError, match="holds a finished run") as refused:
        checkpoint_to_resume(run_dir, setting)
    assert f"ckpt_path={last_checkpoint(run_dir)}" in str(refused.value)


def test_the_earlier_parts_csv_logs_are_set_aside_not_deleted(tmp_path: Path) -> None:
    def logger() -> CSVLogger:
        return CSVLogger(save_dir=tmp_path, name="csv", version="")

    set_aside_csv_logs([logger()])  # nothing logged yet: nothing to move
    assert not (tmp_path / "csv_part1").exists()
    for part in (1, 2):
        first = logger()
        first.log_metrics({"loss": float(part)}, step=0)
        first.save()
        set_aside_csv_logs([logger()])
        assert (tmp_path / f"csv_part{part}" / "metrics.csv").read_text().splitlines()[1] == (
            f"{float(part)},0"
        )
        assert not (tmp_path / "csv").exists()
