"""Third-party console messages that are not the user's business, silenced where they come from.

:func:`quiet_third_party` is called first by the entry points that drive a Lightning ``Trainer``
(``reidgen.run``, ``reidgen.evaluate``), the only ones that print such messages: extract, search,
export and the pictures run no ``Trainer`` and print none (export silences the exporters' own
notes around the export call itself). It is a call, not a side effect of ``import reidgen``:
every one of these messages comes from building or running a ``Trainer``, none from importing a
library, so nothing needs the filters before the third-party imports, and a program that imports
reidgen as a library keeps its own warning and logging settings.

Each filter names one message (a regex of its start), its warning category or logger, and the
module it comes from, so every other message of the same library still shows: every reidgen
warning, and every warning a user can act on (e.g. Lightning's "GPU available but not used").
Lightning's other information lines stay: the seed, the precision, whether a GPU is there and
used, why ``fit`` stopped, all worth seeing in a run's console.
"""

from __future__ import annotations

import logging
import re
import warnings

from lightning_fabric.utilities.warnings import PossibleUserWarning

# The logger of Lightning's rank_zero_info lines.
LIGHTNING_INFO_LOGGER = "pytorch_lightning.utilities.rank_zero"

_DROPPED_INFO = (
    # An advertisement for Lightning's hosted logger, printed by every Trainer without a
    # LitLogger; no Trainer argument turns it off, and reidgen's loggers are chosen by `logger=`.
    r"💡 Tip: For seamless cloud logging and experiment tracking, try installing \[litlogger\]",
    # reidgen's hardware configs run on CPUs or GPUs only; where a TPU is there but unused,
    # Lightning warns apart ("TPU available but not used"), and that warning stays.
    r"TPU available: False, using: 0 TPU cores$",
)


class _DropInfo(logging.Filter):
    """Drops the records whose message starts with one of ``patterns``."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(pattern) for pattern in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.match(message) for pattern in self.patterns)


def quiet_third_party() -> None:
    """Installs the filters (see the module docstring); calling it again adds nothing."""
    # Lightning's own code uses a torch API that torch has deprecated (pytorch_lightning's
    # _pytree.py builds LeafSpec()); only a Lightning release can change it.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.utilities\._pytree$",
    )
    # Each data config sets num_workers deliberately (0 for the tiny presets, whose images load
    # faster than worker processes start; data.num_workers to change it); Lightning suggests
    # "all cores but one" for every loader of fewer than 2 workers, whatever the data.
    warnings.filterwarnings(
        "ignore",
        message=r"The '\w+' does not have many workers which may be a bottleneck",
        category=PossibleUserWarning,
        module=r"pytorch_lightning\.trainer\.connectors\.data_connector$",
    )
    # Lightning asks the loader itself to be resumable; reidgen's data module restores its
    # sampler's position from Lightning's batch counters instead (ReIDDataModule.state_dict),
    # so a run resumed from a mid-epoch checkpoint continues with the batches it had left.
    warnings.filterwarnings(
        "ignore",
        message=r"You're resuming from a checkpoint that ended before the epoch ended and your "
        r"dataloader is not resumable",
        category=PossibleUserWarning,
        module=r"pytorch_lightning\.loops\.training_epoch_loop$",
    )
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    if not any(isinstance(existing, _DropInfo) for existing in logger.filters):
        logger.addFilter(_DropInfo(_DROPPED_INFO))
