"""Interrupted runs, end to end on the tiny preset (subprocesses, as in ``tests/test_run.py``): a
run SIGKILLed mid-epoch, then stopped by SIGUSR1 and SIGTERM, continues in its folder each time
and ends exactly as the uninterrupted run (``tests/test_run.py``'s ``two_epoch_run``; saving
checkpoints every few steps changes nothing in training).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.test_run import (
    QUICK,
    metrics_of,
    module_env,
    run_module,
    two_epoch_run,  # noqa: F401  (the fixture)
)


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """``run_dir`` ended as ``reference`` did: metrics, epochs, step and final weights."""
    continued, uninterrupted = metrics_of(run_dir), metrics_of(reference)
    assert continued["epochs"] == uninterrupted["epochs"] == 2
    assert continued["metrics"] == uninterrupted["metrics"]
    last_uninterrupted = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=False)
    last_continued = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last_continued["global_step"] == last_uninterrupted["global_step"]
    for name, tensor in last_uninterrupted["state_dict"].items():
        assert torch.equal(tensor, last_continued["state_dict"][name]), name


# The quick preset: 76 training images in P x K batches of 16, per epoch.
STEPS_PER_EPOCH = 6


def saved_state(checkpoint: Path) -> tuple[int, int, bool] | None:
    """(epoch, global step, whether saved mid-epoch) of a ``last.ckpt``, None while there is
    none."""
    try:
        saved = torch.load(checkpoint, weights_only=False, mmap=True)
    except FileNotFoundError:
        return None
    mid_epoch = saved["callbacks"]["LastCheckpoint"]["mid_epoch"]
    return int(saved["epoch"]), int(saved["global_step"]), bool(mid_epoch)


def run_until(
    args: list[str],
    run_dir: Path,
    wanted: Callable[[int, int, bool], bool],
    data_dir: Path,
    stop: int = signal.SIGKILL,
) -> tuple[int, str]:
    """Starts ``reidgen.run`` in ``run_dir``, sends it ``stop`` as soon as its ``last.ckpt``'s
    :func:`saved_state` is ``wanted``, and returns its exit status and console output."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    output = run_dir.with_name(f"{run_dir.name}.console.txt")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    with output.open("wb") as sink:
        # Into a file, not a pipe nobody reads: a full pipe would block the run.
        process = subprocess.Popen(
            [sys.executable, "-m", "reidgen.run", *args, f"hydra.run.dir={run_dir}"],
            env=module_env(data_dir, run_dir.parent),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 600
        seen: int | None = None
        while True:
            if process.poll() is not None:
                pytest.fail(f"the run ended before {stop!r}:\n{output.read_text()[-5000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no wanted last.ckpt in time:\n{output.read_text()[-5000:]}")
            if checkpoint.is_file() and checkpoint.stat().st_mtime_ns != seen:
                seen = checkpoint.stat().st_mtime_ns
                state = saved_state(checkpoint)
                if state is not None and wanted(*state):
                    break
            time.sleep(0.2)
        process.send_signal(stop)
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
    return process.returncode, output.read_text()


def assert_stopped(console: str, signal_name: str, run_dir: Path) -> tuple[int, int, bool]:
    """The run logged its stop by ``signal_name`` and what its ``last.ckpt`` holds, which is
    that (a stop mid-epoch, or one in an epoch's last batch after its end); no metrics.json.
    Returns the checkpoint's :func:`saved_state`."""
    stopped = re.search(
        rf"training stopped by {signal_name} after step (\d+): \S+ holds step (\d+) "
        rf"\((?:epoch (\d+) after|the end of epoch (\d+))",
        console,
    )
    assert stopped, console[-5000:]
    step, mid_epoch_of, end_of = int(stopped[2]), stopped[3], stopped[4]
    assert int(stopped[1]) == step
    state = saved_state(run_dir / "checkpoints" / "last.ckpt")
    assert state == (int(mid_epoch_of or end_of), step, mid_epoch_of is not None)
    assert not (run_dir / "metrics.json").exists()
    return state


@pytest.mark.slow
def test_killed_and_stopped_runs_continue_in_their_folder_exactly(
    two_epoch_run: Path,  # noqa: F811
    tmp_path: Path,
    synth_data_dir: Path,
) -> None:
    run_dir = tmp_path / "run"
    # The same command every time: a run folder with an unfinished run continues it.
    args = [*QUICK, "checkpoint.every_n_steps=3"]
    # SIGKILL once its first step checkpoint is there (step 3 of epoch 0's 6).
    status, _ = run_until(args, run_dir, lambda epoch, step, mid: mid, synth_data_dir)
    assert status == -signal.SIGKILL
    killed = saved_state(run_dir / "checkpoints" / "last.ckpt")
    assert killed == (0, 3, True)

    # Continued; SIGUSR1 once epoch 0 has ended: it stops at a batch end of epoch 1.
    status, console = run_until(
        args, run_dir, lambda epoch, step, mid: not mid, synth_data_dir, stop=signal.SIGUSR1
    )
    assert status == 128 + signal.SIGUSR1
    assert f"resuming the unfinished run in {run_dir}" in console
    where = f"step 3 (epoch 0 after 3 of its {STEPS_PER_EPOCH} batches)"
    assert f"continuing from {run_dir / 'checkpoints' / 'last.ckpt'}: {where}" in console
    assert "dataloader is not resumable" not in console
    first_stop = assert_stopped(console, "SIGUSR1", run_dir)

    # Continued again; SIGTERM at its next step checkpoint.
    status, console = run_until(
        args,
        run_dir,
        lambda epoch, step, mid: step > first_stop[1],
        synth_data_dir,
        stop=signal.SIGTERM,
    )
    assert status == 128 + signal.SIGTERM
    assert_stopped(console, "SIGTERM", run_dir)

    # ckpt_path=last finishes it: the remaining batches of each interrupted epoch in the same
    # order, with the same augmentation draws, give the uninterrupted run's numbers and weights.
    finish = [*args, "ckpt_path=last", f"hydra.run.dir={run_dir}"]
    run_module("reidgen.run", finish, synth_data_dir, tmp_path)
    assert_same_run(run_dir, two_epoch_run)
    # Every part's CSV log is kept (the quick preset writes it out at every step).
    parts = ["csv", "csv_part1", "csv_part2", "csv_part3"]
    assert sorted(p.name for p in run_dir.glob("csv*")) == parts
    # A finished run is never started over.
    config = (run_dir / "config.yaml").read_text()
    again = run_module("reidgen.run", finish, synth_data_dir, tmp_path, check=False)
    assert again.returncode != 0 and "holds a finished run" in again.stderr
    assert (run_dir / "config.yaml").read_text() == config
