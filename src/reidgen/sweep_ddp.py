"""Hydra sweeps (``-m``) with Lightning's DDP on one machine: each job's processes in its folder.

Lightning's DDP starts a run's other processes by running its command line (``sys.argv``) again,
with ``hydra.run.dir`` set to the run's folder. In a sweep that command line is the whole sweep and
a job's folder is not ``hydra.run.dir``: every other process would run all jobs of the sweep, into
a sweep folder of its own, and pair with the main process's jobs only by their order. Hydra's basic
launcher runs the jobs one after another in the sweep's process, where Lightning leaves its launch
variables (the next job would take them for an outside launcher's and start no processes) and its
process group (the next job would join it).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import TaskFunction
from omegaconf import DictConfig, read_write

from reidgen.distributed import leave_process_group

# What Lightning's subprocess launcher sets in the environment of the process starting the others.
_LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_MULTIRUN_FLAGS = ("-m", "--multirun")


class DDPSweepJobs(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): while a job of a sweep runs in
    the sweep's own process, Lightning's relaunch command is that job alone, as a plain run into
    the job's folder; after the job, the sweep's process is as before it.

    Jobs that a launcher runs in other processes (submitit) are left alone: their command line is
    the launcher's, and on SLURM the processes are started by ``srun``, not by Lightning.
    """

    def __init__(self) -> None:
        self._sweep_process: int | None = None
        self._argv: list[str] = []
        self._environment: dict[str, str | None] = {}
        self._sweep_overrides: set[str] = set()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_process = os.getpid()
        self._argv = list(sys.argv)
        self._environment = {name: os.environ.get(name) for name in _LAUNCH_VARIABLES}
        overrides = config.hydra.overrides
        self._sweep_overrides = {*overrides.task, *overrides.hydra}

    def on_job_start(
        self, config: DictConfig, *, task_function: TaskFunction, **kwargs: Any
    ) -> None:
        if self._sweep_process != os.getpid():
            return
        # Options such as --config-dir stay; the sweep's overrides give way to the job's own.
        options = [
            arg
            for arg in self._argv[1:]
            if arg not in self._sweep_overrides and arg not in _MULTIRUN_FLAGS
        ]
        overrides = config.hydra.overrides
        sys.argv = [self._argv[0], *options, *overrides.hydra, *overrides.task, "hydra.mode=RUN"]
        # Lightning passes hydra.run.dir on to the processes it starts.
        run = HydraConfig.get().run
        with read_write(run):
            run.dir = config.hydra.runtime.output_dir

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self._sweep_process != os.getpid():
            return
        sys.argv = list(self._argv)
        for name, value in self._environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        leave_process_group()
