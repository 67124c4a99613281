"""The shared progress bar: where it shows (stderr, rank 0, the switches), what it counts."""

from __future__ import annotations

import pytest

from reidgen.progress import ENV_VARIABLE, progress, write_line

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


@pytest.fixture(autouse=True)
def single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*RANK_VARIABLES, ENV_VARIABLE):
        monkeypatch.delenv(name, raising=False)


def drawn(capsys: pytest.CaptureFixture[str], **options: object) -> str:
    """Iterates a bar over 7 items (checking they pass unchanged) and returns stderr."""
    items = [3, 1, 4, 1, 5, 9, 2]
    assert list(progress(items, description="counting things", unit="thing", **options)) == items
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_forced_on_it_shows_description_and_total_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_VARIABLE, "1")
    err = drawn(capsys)
    assert "counting things" in err and "7/7" in err and "thing" in err


def test_off_by_switch_by_caller_or_where_stderr_is_no_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert drawn(capsys) == ""  # unset: tqdm's decision, and captured stderr is no terminal
    monkeypatch.setenv(ENV_VARIABLE, "0")
    assert drawn(capsys) == ""
    monkeypatch.setenv(ENV_VARIABLE, "1")
    assert drawn(capsys, enabled=False) == ""


def test_only_rank_zero_draws(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_VARIABLE, "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "1")  # the global rank wins over the local one
    assert drawn(capsys) == ""
    monkeypatch.setenv("RANK", "0")
    assert "7/7" in drawn(capsys)


def test_updates_count_towards_the_total_after_the_initial_ones(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_VARIABLE, "1")
    with progress(description="runs", total=5, initial=2, unit="run") as bar:
        bar.update()
        write_line("a line between updates")
    captured = capsys.readouterr()
    assert captured.out == "a line between updates\n"
    assert "runs" in captured.err and "3/5" in captured.err


def test_a_misspelt_switch_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VARIABLE, "yes")
    with pytest.raises(ValueError, match="REIDGEN_PROGRESS must be 0 or 1"):
        progress([1], description="x")
