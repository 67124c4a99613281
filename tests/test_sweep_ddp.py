"""reidgen.sweep_ddp without a run: the relaunch command of a sweep's job, and the sweep's process
after the job (the end-to-end sweep is tests/test_run.py's ddp_cpu sweep)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from omegaconf import read_write

from reidgen.sweep_ddp import DDPSweepJobs
from tests.conf.test_config import composed

SWEEP_ARGV = ["reidgen/run.py", "-m", "--config-dir", "extra", "seed=0,1", "hydra.verbose=true"]


def test_a_sweep_job_relaunches_alone_into_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", list(SWEEP_ARGV))
    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    callback = DDPSweepJobs()
    sweep = composed(["hydra.verbose=true"], tmp_path)
    with read_write(sweep.hydra.overrides):
        sweep.hydra.overrides.task = ["seed=0,1"]
    callback.on_multirun_start(sweep)

    job = composed(["seed=1", "hydra.verbose=true"], tmp_path)
    callback.on_job_start(job, task_function=lambda cfg: None)
    assert sys.argv == [
        "reidgen/run.py",
        "--config-dir",
        "extra",
        "hydra.verbose=true",
        "seed=1",
        "hydra.mode=RUN",
    ]
    assert HydraConfig.get().run.dir == job.hydra.runtime.output_dir == str(tmp_path / "run")

    # What Lightning's launcher leaves in the sweep's process after starting the job's others.
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_PORT", "29500")
    callback.on_job_end(job, JobReturn())
    assert sys.argv == SWEEP_ARGV
    assert "LOCAL_RANK" not in os.environ and "MASTER_PORT" not in os.environ
