"""The configs ship in the wheel: built from this checkout, installed into a fresh folder, and
composed by ``python -m reidgen.run`` from that installed copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_ships_the_configs_and_the_run_config_composes_from_it(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info/ next to the sources.
    source = tmp_path / "source"
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("reidgen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {name for name in names if name.startswith("reidgen/conf/")}
    expected = {
        f"reidgen/conf/{path.relative_to(ROOT / 'conf').as_posix()}"
        for path in (ROOT / "conf").rglob("*")
        if path.suffix in (".yaml", ".py")
    }
    assert expected and expected <= shipped, sorted(expected - shipped)
    assert "reidgen/run.py" in names and "reidgen/synthperson/generate.py" in names

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # From a folder outside the checkout, with the installed copy first on the path.
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import reidgen.conf; print(reidgen.conf.__file__)"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(site))
    composed = subprocess.run(
        [sys.executable, "-m", "reidgen.run", "--cfg", "job", "method=qaconv_gs"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert composed.returncode == 0, composed.stderr[-3000:]
    assert "_target_: reidgen.methods.qaconv.method.QAConvGS" in composed.stdout
    assert "_target_: reidgen.data.samplers.graph.GraphSampler" in composed.stdout
