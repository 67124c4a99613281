"""Every command block the docs mark ``<!-- runnable -->`` runs, on the tiny SynthPerson preset.

A runnable block holds ``python -m reidgen.<module> ...`` commands only. Each is run as a user
would, with overrides that shrink it to the tiny preset appended (one epoch, CPU, every
SynthPerson source at its ``tiny`` preset), so the docs cannot drift from the code: a renamed
key, module or option fails here. In a block, ``<run>`` is the run folder of the block's latest
``reidgen.run`` command (before any, the quickstart run of ``tests/test_run.py``), and a
``data/synthperson/<domain>-small-...`` path is the tiny dataset of that domain; a path into the
repository (``docs/synthperson_gap/...``) is made absolute, as commands run in a scratch folder.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.test_run import module_env, two_epoch_run  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"<!-- runnable -->\s*```(?:bash|sh)\n(.*?)```", re.DOTALL)
PYTHONS = {"python", "python3", ".venv/bin/python"}
SYNTH_SOURCES = ("synth_studio", "synth_street", "synth_mall", "synth_randomized", "synth_vehicle")
# What a training command loses to fit a test: everything but the code path it shows.
TINY_TRAINING = {
    "hardware": "cpu",
    "trainer.precision": "32-true",
    "trainer.max_epochs": "1",
    "data.batch_size": "16",
    "data.num_workers": "0",
    "pictures.queries": "1",
}
SMALL_PATH = re.compile(r"(?:^|(?<=[=/]))data/synthperson/(\w+)-small-")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    text: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def runnable_blocks() -> list[Block]:
    blocks = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append(Block(page, line, match.group(1)))
    return blocks


def commands(block: str) -> list[list[str]]:
    """The block's commands as argument lists: continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def config_name(module: str) -> str | None:
    """The Hydra config a reidgen module composes (None: not a Hydra entry point)."""
    path = ROOT / "src" / Path(*module.split("."))
    source = path / "__main__.py" if path.is_dir() else path.with_suffix(".py")
    if not source.is_file():
        raise AssertionError(f"no module {module} ({source} does not exist)")
    match = re.search(r'config_name="(\w+)"', source.read_text())
    return match.group(1) if match else None


def composes_data(config: str) -> bool:
    defaults = yaml.safe_load((ROOT / "conf" / f"{config}.yaml").read_text()).get("defaults", [])
    return any(isinstance(entry, dict) and "data" in entry for entry in defaults)


def repository_path(argument: str) -> str:
    """A path into the repository (``docs/...``) made absolute: the commands run elsewhere."""
    key, equals, value = argument.rpartition("=")
    if "/" in value and not value.startswith("/") and (ROOT / value).exists():
        return f"{key}{equals}{ROOT / value}"
    return argument


def key_of(argument: str) -> str:
    return argument.split("=", 1)[0].lstrip("+~")


def tiny(words: list[str], run: Path | None, data_dir: Path) -> list[str]:
    """``python -m reidgen.<module> ...`` as the test runs it: placeholders filled, tiny preset."""
    if len(words) < 3 or words[0] not in PYTHONS or words[1] != "-m":
        raise AssertionError(
            f"a runnable block may hold `python -m reidgen.<module>` only: {words}"
        )
    module, arguments = words[2], words[3:]
    if not module.startswith("reidgen."):
        raise AssertionError(f"not a reidgen module: {module}")
    filled = []
    for argument in arguments:
        if "<run>" in argument:
            if run is None:
                raise AssertionError(f"<run> used before any run: {words}")
            argument = argument.replace("<run>", str(run))
        argument = SMALL_PATH.sub(f"{data_dir}/synthperson/\\1-tiny-", argument)
        argument = repository_path(argument)
        if re.search(r"<\w[^>]*>", argument):
            raise AssertionError(f"unknown placeholder in {argument!r}")
        filled.append(argument)
    if module == "reidgen.synthperson":
        filled = [
            "tiny" if previous == "--preset" else argument
            for previous, argument in zip(["", *filled[:-1]], filled, strict=True)
        ]
        return [
            sys.executable,
            "-m",
            module,
            *filled,
            "--data-dir",
            str(data_dir),
            "--workers",
            "1",
        ]
    config = config_name(module)
    if config is None:
        return [sys.executable, "-m", module, *filled]
    extra = {}
    if module == "reidgen.run":
        extra.update(TINY_TRAINING)
    if composes_data(config):
        extra.update({f"data.catalogue.{name}.preset": "tiny" for name in SYNTH_SOURCES})
    kept = [a for a in filled if key_of(a) not in extra]
    return [sys.executable, "-m", module, *kept, *(f"{k}={v}" for k, v in extra.items())]


def newest_run(log_dir: Path) -> Path | None:
    folders = [p.parent for p in log_dir.glob("**/metrics.json")]
    return max(folders, key=lambda p: p.stat().st_mtime) if folders else None


BLOCKS = runnable_blocks()


def test_the_docs_mark_runnable_blocks() -> None:
    pages = {block.page.name for block in BLOCKS}
    assert {"README.md", "getting-started.md"} <= pages, pages
    for block in BLOCKS:
        assert commands(block.text), f"{block.name}: an empty runnable block"


def test_a_command_is_shrunk_to_the_tiny_preset(tmp_path: Path) -> None:
    words = shlex.split(
        "python -m reidgen.run method=qaconv_gs data=synth_to_mall trainer.max_epochs=3"
        " query=data/synthperson/street-small-128x64-seed0/query  # a comment",
        comments=True,
    )
    run = tiny(words, None, tmp_path)
    assert run[:3] == [sys.executable, "-m", "reidgen.run"]
    assert run.count("trainer.max_epochs=1") == 1 and "trainer.max_epochs=3" not in run
    assert f"query={tmp_path}/synthperson/street-tiny-128x64-seed0/query" in run
    assert "data.catalogue.synth_mall.preset=tiny" in run
    export = tiny(["python", "-m", "reidgen.export", "ckpt=<run>/x.ckpt"], tmp_path, tmp_path)
    assert export[3:] == [f"ckpt={tmp_path}/x.ckpt"]  # export composes no data config
    generate = tiny(
        shlex.split(
            "python -m reidgen.synthperson"
            " --domain docs/synthperson_gap/street_clothing.yaml --preset full"
        ),
        None,
        tmp_path,
    )
    assert generate[3:7] == [
        "--domain",
        str(ROOT / "docs/synthperson_gap/street_clothing.yaml"),
        "--preset",
        "tiny",
    ]
    with pytest.raises(AssertionError, match="placeholder"):
        tiny(["python", "-m", "reidgen.evaluate", "ckpt=<your run>"], None, tmp_path)
    with pytest.raises(AssertionError, match="python -m reidgen"):
        tiny(["make", "run"], None, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_runnable_block(
    block: Block,
    tmp_path: Path,
    synth_data_dir: Path,
    tiny_studio: Path,
    tiny_street: Path,
    two_epoch_run: Path,  # noqa: F811
) -> None:
    log_dir = tmp_path / "logs"
    run: Path | None = two_epoch_run
    for words in commands(block.text):
        argv = tiny(words, run, synth_data_dir)
        result = subprocess.run(
            argv,
            cwd=tmp_path,
            env={**module_env(synth_data_dir, log_dir), "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, (
            f"{block.name}: `{shlex.join(words)}` failed (ran as `{shlex.join(argv)}`):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
        if words[2] == "reidgen.run":
            run = newest_run(log_dir)
            assert run is not None, f"{block.name}: `{shlex.join(words)}` wrote no metrics.json"
