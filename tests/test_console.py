"""reidgen.console: its filters drop exactly the third-party lines they name, nothing else."""

from __future__ import annotations

import logging
import warnings

import pytest
from lightning_fabric.utilities.warnings import PossibleUserWarning

from reidgen.console import LIGHTNING_INFO_LOGGER, quiet_third_party

LEAF_SPEC = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`"
FEW_WORKERS = "The 'train_dataloader' does not have many workers which may be a bottleneck."
LITLOGGER_TIP = (
    "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
    "(https://pypi.org/project/litlogger/) to enable LitLogger"
)


def shown_warnings(*emitted: tuple[str, type[Warning], str]) -> list[str]:
    """The messages of ``(message, category, module)`` warnings that pass the filters."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        for message, category, module in emitted:
            warnings.warn_explicit(message, category, f"{module}.py", 1, module=module)
    return [str(warning.message) for warning in caught]


def test_lightning_notes_are_dropped_and_reidgen_and_actionable_warnings_kept() -> None:
    kept = [
        (LEAF_SPEC, FutureWarning, "some_other_library"),
        ("GPU available but not used.", PossibleUserWarning, "pytorch_lightning.trainer.setup"),
        ("any warning of reidgen's", UserWarning, "reidgen.eval.evaluator"),
        (FEW_WORKERS, UserWarning, "pytorch_lightning.trainer.connectors.data_connector"),
    ]
    dropped = [
        (LEAF_SPEC, FutureWarning, "pytorch_lightning.utilities._pytree"),
        (FEW_WORKERS, PossibleUserWarning, "pytorch_lightning.trainer.connectors.data_connector"),
    ]
    assert shown_warnings(*dropped, *kept) == [message for message, _, _ in kept]


def test_lightning_info_lines_dropped_are_the_named_ones(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    monkeypatch.setattr(logger, "filters", [])  # the installed filter goes when the test ends
    quiet_third_party()
    quiet_third_party()
    assert len(logger.filters) == 1

    def passes(message: str) -> bool:
        return bool(logger.filter(logging.makeLogRecord({"msg": message})))

    assert not passes(LITLOGGER_TIP)
    assert not passes("TPU available: False, using: 0 TPU cores")
    assert passes("TPU available: True, using: 0 TPU cores")
    assert passes("GPU available: False, used: False")
    assert passes("`Trainer.fit` stopped: `max_epochs=2` reached.")
    # reidgen's own warnings are log records of its loggers, which no filter touches.
    logging.getLogger("reidgen.eval.evaluator").warning("eval.tlift: x is evaluated without TLift")
    assert "evaluated without TLift" in caplog.text
