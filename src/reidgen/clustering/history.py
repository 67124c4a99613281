"""Per-epoch record of the pseudo labels: how many clusters, how many images kept, and, where the
unlabelled images have true identities, how good the labels are; written as CSV and a PNG plot."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from reidgen.clustering.pseudo_labels import PseudoLabels
from reidgen.clustering.quality import label_quality


@dataclass(frozen=True)
class EpochLabels:
    """One epoch's pseudo labels in numbers; the quality fields are None without true ids.

    :param precision, recall, f_score, nmi: pairwise precision, recall and F, and NMI, as
        :func:`~reidgen.clustering.quality.label_quality` defines them.
    """

    epoch: int
    eps: float
    clusters: int
    kept: int
    left_out: int
    precision: float | None = None
    recall: float | None = None
    f_score: float | None = None
    nmi: float | None = None

    @classmethod
    def of(
        cls, epoch: int, labels: PseudoLabels, true_ids: np.ndarray | None = None
    ) -> EpochLabels:
        """The record of ``labels`` (``[N]``); ``true_ids`` ``[N]``, if known, scores them."""
        quality = {}
        if true_ids is not None:
            scores = label_quality(labels.labels, np.asarray(true_ids))
            quality = {
                "precision": scores.precision,
                "recall": scores.recall,
                "f_score": scores.f_score,
                "nmi": scores.nmi,
            }
        return cls(
            epoch,
            float(labels.eps),
            labels.num_clusters,
            labels.num_kept,
            labels.num_left_out,
            **quality,
        )


def write_history(records: list[EpochLabels], folder: str | Path, stem: str) -> None:
    """``<folder>/<stem>.csv`` (one row per epoch) and ``<stem>.png``: clusters and kept images,
    and the pairwise precision / recall / F and NMI where known, over the epochs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [field.name for field in fields(EpochLabels)]
    with open(folder / f"{stem}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for record in records:
            writer.writerow({k: "" if v is None else v for k, v in asdict(record).items()})
    _plot(records, folder / f"{stem}.png")


def _plot(records: list[EpochLabels], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r.epoch for r in records]
    has_quality = any(r.f_score is not None for r in records)
    figure, axes = plt.subplots(1, 2 if has_quality else 1, figsize=(10 if has_quality else 5, 3.5))
    counts = axes[0] if has_quality else axes
    counts.plot(epochs, [r.clusters for r in records], marker="o", label="clusters")
    counts.set_xlabel("epoch")
    counts.xaxis.set_major_locator(MaxNLocator(integer=True))
    counts.set_ylabel("clusters")
    kept = counts.twinx()
    kept.plot(epochs, [r.kept for r in records], marker="s", color="tab:orange", label="kept")
    kept.set_ylabel("images kept")
    counts.legend(loc="upper left")
    kept.legend(loc="lower right")
    if has_quality:
        quality = axes[1]
        for name in ("precision", "recall", "f_score", "nmi"):
            values = [np.nan if getattr(r, name) is None else getattr(r, name) for r in records]
            quality.plot(epochs, values, marker="o", label=name)
        quality.set_ylim(0, 1)
        quality.set_xlabel("epoch")
        quality.xaxis.set_major_locator(MaxNLocator(integer=True))
        quality.set_title("pseudo labels vs true identities")
        quality.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
