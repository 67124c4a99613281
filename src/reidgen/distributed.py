"""The one place that asks whether this process is part of a distributed run.

``torch.distributed`` is looked up among the loaded modules, not imported: a process that has not
imported torch has no process group, and the dataset generators, which need no torch, would
otherwise pay seconds for importing it, in each of their worker processes too.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

# Lightning's order (lightning_fabric's rank_zero_only): rank 0 here is the process that
# Lightning shows its own messages on.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def _process_group() -> ModuleType | None:
    """``torch.distributed`` where it is loaded and its process group initialised, else None."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def world() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, else (1, 0)."""
    dist = _process_group()
    if dist is not None:
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def world_size() -> int:
    return world()[0]


def global_rank() -> int:
    """This process's rank: the process group's once it is initialised; before that (datasets
    are generated before Lightning sets the group up) the launcher's environment, else 0."""
    dist = _process_group()
    if dist is not None:
        return dist.get_rank()
    for name in _RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None:
            return int(value)
    return 0


def leave_process_group() -> None:
    """Destroys the initialised process group, if any: Lightning keeps it until the process ends,
    and a later run in the same process would otherwise join the old one."""
    dist = _process_group()
    if dist is not None:
        dist.destroy_process_group()
