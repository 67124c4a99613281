"""Shared fixtures: SynthPerson tiny datasets generated once per test session (per xdist worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reidgen.synthperson import ensure_synthperson


@pytest.fixture(scope="session")
def synth_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reidgen-data")


@pytest.fixture(scope="session")
def tiny_street(synth_data_dir: Path) -> Path:
    return ensure_synthperson(synth_data_dir, "street", "tiny", workers=1)


@pytest.fixture(scope="session")
def tiny_studio(synth_data_dir: Path) -> Path:
    return ensure_synthperson(synth_data_dir, "studio", "tiny", workers=1)


@pytest.fixture(scope="session")
def tiny_mall(synth_data_dir: Path) -> Path:
    return ensure_synthperson(synth_data_dir, "mall", "tiny", workers=1)


@pytest.fixture(scope="session")
def tiny_randomized(synth_data_dir: Path) -> Path:
    return ensure_synthperson(synth_data_dir, "randomized", "tiny", workers=1)
