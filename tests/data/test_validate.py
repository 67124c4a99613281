"""Dataset validation: the report, the command line, and training's refusal of a wrong copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reidgen.data.datamodule import ReIDDataModule
from reidgen.data.sample import Sample, Splits
from reidgen.data.sources import SynthPersonSource
from reidgen.data.transforms import build_transforms
from reidgen.data.validate import (
    DatasetValidationError,
    count_mismatches,
    validate_source,
)


def validate_cli(args: list[str], data_dir: Path, log_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "REIDGEN_DATA_DIR": str(data_dir), "REIDGEN_LOG_DIR": str(log_dir)}
    return subprocess.run(
        [sys.executable, "-m", "reidgen.data.validate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


class FixedSource:
    """A source whose splits are given, with published counts that may be wrong."""

    def __init__(self, name: str, expected: dict | None) -> None:
        self.name = name
        self.expected = expected

    def load(self) -> Splits:
        def split(folder: str, count: int) -> list[Sample]:
            return [
                Sample(f"/x/{folder}/{i}.jpg", pid=1 + i % 3, camid=i % 2, dataset=self.name)
                for i in range(count)
            ]

        return Splits(
            self.name,
            split("train", 9),
            split("query", 2),
            split("gallery", 7),
            variant="v1",
            expected=self.expected,
        )


def test_count_mismatches_lists_each_difference() -> None:
    splits = FixedSource(
        "a", {"train": {"identities": 3, "images": 10}, "query": {"cameras": 2}}
    ).load()
    assert count_mismatches(splits) == ["train images: found 9, published 10"]
    assert count_mismatches(FixedSource("a", None).load()) == []


def test_training_refuses_a_dataset_that_differs_unless_told(tmp_path: Path) -> None:
    transform = build_transforms(32, 16, train=False)
    wrong = FixedSource("wrong", {"train": {"images": 12936}})
    strict = ReIDDataModule([wrong], [wrong], transform, transform)
    with pytest.raises(
        DatasetValidationError,
        match=r"train images: found 9, published 12,936.*data.validation=warn",
    ):
        strict.setup("fit")
    relaxed = ReIDDataModule([wrong], [wrong], transform, transform, validation="warn")
    relaxed.setup("fit")
    assert relaxed.num_classes == 3


def test_generated_dataset_validates_and_corruption_is_found(
    tmp_path: Path, tiny_studio: Path
) -> None:
    source = SynthPersonSource("studio", "tiny", data_dir=str(tiny_studio.parent.parent))
    report = validate_source(source)
    assert report.ok, report.format()
    assert "variant: SynthPerson studio/tiny" in report.format()
    assert "(= 12 published)" in report.format()

    copy = tmp_path / "synthperson" / tiny_studio.name
    shutil.copytree(tiny_studio, copy)
    victim = sorted((copy / "query").glob("*.jpg"))[0]
    victim.write_bytes(b"garbage")
    broken = validate_source(SynthPersonSource("studio", "tiny", data_dir=str(tmp_path)))
    assert not broken.ok and broken.unreadable[0].startswith(str(victim))


def test_command_line_reports_and_exits_non_zero_on_problems(
    tmp_path: Path, synth_data_dir: Path
) -> None:
    good = validate_cli(["data=synth_tiny"], synth_data_dir, tmp_path)
    assert good.returncode == 0, good.stderr
    assert "synth_studio_tiny: OK" in good.stdout
    missing = validate_cli(
        [
            "data=synth_tiny",
            f"data.catalogue.market1501.root={tmp_path / 'none'}",
            "data.targets=[market1501]",
        ],
        synth_data_dir,
        tmp_path,
    )
    assert missing.returncode == 1
    assert "market1501: FAILED" in missing.stdout and "FileNotFoundError" in missing.stdout


def test_unlabelled_sources_are_kept_apart(
    synth_data_dir: Path, tiny_studio: Path, tiny_street: Path
) -> None:
    transform = build_transforms(32, 16, train=False)
    catalogue = {
        "studio": SynthPersonSource("studio", "tiny", data_dir=str(synth_data_dir), name="studio"),
        "street": SynthPersonSource("street", "tiny", data_dir=str(synth_data_dir), name="street"),
    }
    module = ReIDDataModule(
        ["studio", "street"], ["street"], transform, transform, catalogue, unlabelled=["street"]
    )
    module.setup("fit")
    assert module.num_classes == 12
    assert {s.domain for s in module.train_set.samples} == {0}
    street = module.pool[1]
    assert not street.labelled and set(street.own_labels.tolist()) == {-1}
    assert {s.domain for s in street.samples} == {1}
    with pytest.raises(ValueError, match=r"data.unlabelled names \['nope'\]"):
        ReIDDataModule(["studio"], ["street"], transform, transform, catalogue, unlabelled=["nope"])
    with pytest.raises(
        ValueError, match="unknown dataset 'nope'; the catalogue has: street, studio"
    ):
        ReIDDataModule(["nope"], ["street"], transform, transform, catalogue)


def test_a_broken_real_layout_is_reported_not_raised(tmp_path: Path) -> None:
    from functools import partial

    from PIL import Image

    from reidgen.data.datasets.market import index_market1501
    from reidgen.data.sources import DatasetFolder

    root = tmp_path / "Market-1501-v15.09.15"
    for folder, names in {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "person.jpg"],
        "query": ["0003_c1s1_000551_01.jpg"],
        "bounding_box_test": ["0003_c2s1_000700_01.jpg"],
    }.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (8, 16)).save(root / folder / name)
    report = validate_source(DatasetFolder(str(tmp_path), "market1501", partial(index_market1501)))
    assert not report.ok
    assert "ValueError" in report.error and "person.jpg" in report.error
    (root / "bounding_box_train" / "person.jpg").unlink()
    report = validate_source(DatasetFolder(str(tmp_path), "market1501", partial(index_market1501)))
    assert report.error is None and not report.ok  # a tiny tree is not the published dataset
    assert "train images: found 1, published 12,936" in report.mismatches
