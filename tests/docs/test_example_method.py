"""The "Adding a method" example of docs/extending.md, taken from the page itself, trained and
evaluated through the real entry points with its config in a user's own config folder (Hydra
search path)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_run import (
    QUICK,
    chance_map,
    metrics_of,
    only_run,
    run_module,
    studio_tiny,
)

PAGE = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def page_block(marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->`` on the page."""
    match = re.search(
        rf"<!-- {re.escape(marker)} -->\s*```\w*\n(.*?)```", PAGE.read_text(), re.DOTALL
    )
    if match is None:
        raise AssertionError(f"{PAGE} has no code block after <!-- {marker} -->")
    return match.group(1)


@pytest.mark.slow
def test_the_example_method_trains_and_evaluates(
    tmp_path: Path, synth_data_dir: Path, tiny_studio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = page_block("example-method")
    assert 25 <= len(code.splitlines()) <= 60  # "about 40 lines"
    package = tmp_path / "my_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tiny.py").write_text(code)
    config_dir = tmp_path / "my_conf" / "method"
    config_dir.mkdir(parents=True)
    (config_dir / "tiny.yaml").write_text(page_block("example-method-config"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))

    log_dir = tmp_path / "logs"
    run_module(
        "reidgen.run",
        [*QUICK, "method=tiny", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"],
        synth_data_dir,
        log_dir,
    )
    run = only_run(log_dir)
    record = metrics_of(run)
    assert record["method"] == "my_methods.tiny.TinyNet"
    assert record["metrics"]["synth_studio_tiny"]["mAP"] > 2 * chance_map(
        studio_tiny(synth_data_dir)
    )

    # The checkpoint alone rebuilds it: evaluating it gives the run's numbers.
    evaluations = tmp_path / "evaluations"
    run_module(
        "reidgen.evaluate",
        [
            "data=synth_tiny",
            "hardware=cpu",
            "trainer.precision=32-true",
            f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
        ],
        synth_data_dir,
        evaluations,
    )
    evaluated = metrics_of(only_run(evaluations, "evaluations"))
    assert evaluated["metrics"] == record["metrics"]
