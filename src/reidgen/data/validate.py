"""Dataset validation: what was found against what the dataset's publication says.

``python -m reidgen.data.validate data=<name>`` reports, for every source and target of a data
config, per split the identities, images and cameras found against the published counts, the
variant detected (e.g. MSMT17 V1/V2), what the protocol dropped, malformed file names (the
indexers refuse them) and unreadable images; it exits non-zero on any problem. Training runs the
cheap part (counts) before it starts; see ``ReIDDataModule(validation=...)``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from PIL import Image

from reidgen.data.sample import Splits
from reidgen.data.sources import DatasetSource

SPLITS = ("train", "query", "gallery")


class DatasetValidationError(RuntimeError):
    """A dataset's counts differ from the published ones."""


def count_mismatches(splits: Splits) -> list[str]:
    """One line per published count that differs from what was found; empty when all match."""
    if splits.expected is None:
        return []
    found = splits.summary()
    lines = []
    for split in SPLITS:
        for key, published in (splits.expected.get(split) or {}).items():
            if found[split][key] != published:
                lines.append(f"{split} {key}: found {found[split][key]:,}, published {published:,}")
    return lines


def unreadable_images(splits: Splits) -> list[str]:
    """Paths of the images PIL cannot decode (every image is opened and decoded)."""
    bad = []
    for sample in splits.train + splits.query + splits.gallery:
        try:
            with Image.open(sample.path) as image:
                image.load()
        except (OSError, ValueError) as error:
            bad.append(f"{sample.path}: {error}")
    return bad


@dataclass
class ValidationReport:
    """What validation found for one dataset."""

    name: str
    splits: Splits | None = None
    error: str | None = None
    mismatches: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.mismatches and not self.unreadable

    def format(self) -> str:
        lines = [f"{self.name}: {'OK' if self.ok else 'FAILED'}"]
        if self.error is not None or self.splits is None:
            return "\n".join([*lines, f"  {self.error or 'not indexed'}"])
        lines.append(f"  variant: {self.splits.variant or 'n/a'}")
        found = self.splits.summary()
        expected = self.splits.expected or {}
        for split in SPLITS:
            published = expected.get(split, {})
            cells = []
            for key in ("identities", "images", "cameras"):
                shown = f"{found[split][key]:,}"
                if key in published:
                    mark = "=" if published[key] == found[split][key] else "!="
                    shown += f" ({mark} {published[key]:,} published)"
                cells.append(f"{key} {shown}")
            dropped = self.splits.dropped.get(split, 0)
            lines.append(f"  {split:<8} " + ", ".join(cells) + f"; dropped {dropped:,}")
        lines += [f"  mismatch: {line}" for line in self.mismatches]
        lines += [f"  unreadable: {line}" for line in self.unreadable[:20]]
        if len(self.unreadable) > 20:
            lines.append(f"  ... and {len(self.unreadable) - 20} more unreadable images")
        return "\n".join(lines)


def validate_source(source: DatasetSource, check_images: bool = True) -> ValidationReport:
    """Indexes ``source`` and checks it; indexing errors (missing folders, malformed names, a
    damaged generated dataset) are reported, not raised."""
    try:
        splits = source.load()
    except (OSError, ValueError, RuntimeError) as error:
        return ValidationReport(source.name, error=f"{type(error).__name__}: {error}")
    report = ValidationReport(source.name, splits, mismatches=count_mismatches(splits))
    if check_images:
        report.unreadable = unreadable_images(splits)
    return report


def validate_all(sources: list[DatasetSource], check_images: bool = True) -> list[ValidationReport]:
    seen: dict[str, DatasetSource] = {}
    for source in sources:
        seen.setdefault(source.name, source)
    return [validate_source(source, check_images) for source in seen.values()]


def main() -> None:
    import hydra
    from hydra.utils import instantiate
    from omegaconf import DictConfig

    from reidgen import resolvers

    resolvers.register()

    @hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="validate")
    def run(cfg: DictConfig) -> None:
        datamodule = instantiate(cfg.data)
        reports = validate_all(datamodule.all_sources(), cfg.check_images)
        for report in reports:
            print(report.format())
        if not all(report.ok for report in reports):
            sys.exit(1)

    run()


if __name__ == "__main__":
    main()
