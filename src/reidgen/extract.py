"""``python -m reidgen.extract ckpt=... data=... target=... out=...``: every image's features of
one test target, with its metadata, for use outside reidgen (``conf/extract.yaml``).

Two files, each written whole or not at all, never over an existing one:

* ``<out>.safetensors`` (or ``<out>.npz`` with ``format=npz``): one tensor per feature part of the
  method, ``[N, ...]``, row ``i`` = image ``i`` of the index (BoT and GCL: ``embedding``
  ``[N, D]``; AlignedReID: ``embedding`` and ``stripes`` ``[N, h, c]``; QAConv: ``maps``
  ``[N, D, h, w]``). The safetensors header also records the checkpoint, method and target.
* ``<out>.csv``: one row per image, ``row, path, pid, camid, timestamp, split`` (``split``:
  ``query`` or ``gallery``; ``pool`` for a target whose protocol draws both from one pool;
  ``timestamp`` empty where the dataset has none).

:func:`read_feature_file` reads both back.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save

from reidgen.atomic import write_atomically
from reidgen.data.dataset import EvalDataset
from reidgen.eval.features import Features
from reidgen.run_support import checkpoint_datamodule, inference_device, load_method
from reidgen.viz.ranked import extract_features, target_dataset

FORMATS = ("safetensors", "npz")
INDEX_COLUMNS = ("row", "path", "pid", "camid", "timestamp", "split")


@dataclass(frozen=True)
class ImageRecord:
    """One row of a feature file's index."""

    row: int
    path: str
    pid: int
    camid: int
    timestamp: float | None
    split: str


def image_records(dataset: EvalDataset) -> list[ImageRecord]:
    """The index of ``dataset``'s images in item order (queries first)."""
    pooled = dataset.protocol.pooled
    records = []
    for row, sample in enumerate(dataset.samples):
        split = "pool" if pooled else ("query" if row < dataset.num_query else "gallery")
        records.append(
            ImageRecord(row, sample.path, sample.pid, sample.camid, sample.timestamp, split)
        )
    return records


def feature_paths(out: str | Path, file_format: str) -> tuple[Path, Path]:
    """(features file, index file) for ``out`` (a path without suffix)."""
    if file_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {file_format!r}")
    out = Path(out)
    return out.with_name(f"{out.name}.{file_format}"), out.with_name(f"{out.name}.csv")


def refuse_existing(paths: Iterable[Path]) -> None:
    """A ``FileExistsError`` naming those of ``paths`` that exist, if any."""
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        raise FileExistsError(
            f"not overwriting {', '.join(existing)}: choose another out=... or remove them"
        )


def write_feature_file(
    features: Features,
    records: Iterable[ImageRecord],
    out: str | Path,
    file_format: str = "safetensors",
    metadata: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Writes ``features`` and their index (see the module docstring) and returns both paths.

    :raises FileExistsError: naming the files already there, before anything is written.
    :raises ValueError: if ``records`` and ``features`` count different images.
    """
    records = list(records)
    if len(records) != len(features):
        raise ValueError(f"{len(records)} index rows for {len(features)} feature rows")
    features_path, index_path = feature_paths(out, file_format)
    refuse_existing((features_path, index_path))
    tensors = {name: tensor.contiguous() for name, tensor in features.parts.items()}
    if file_format == "safetensors":
        content = save(tensors, metadata=metadata)
    else:
        buffer = io.BytesIO()
        np.savez(buffer, **{name: tensor.numpy() for name, tensor in tensors.items()})
        content = buffer.getvalue()
    write_atomically(features_path, lambda temp: temp.write_bytes(content), overwrite=False)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for record in records:
        timestamp = "" if record.timestamp is None else repr(record.timestamp)
        writer.writerow(
            (record.row, record.path, record.pid, record.camid, timestamp, record.split)
        )
    write_atomically(index_path, lambda temp: temp.write_text(text.getvalue()), overwrite=False)
    return features_path, index_path


def read_feature_file(path: str | Path) -> tuple[Features, list[ImageRecord]]:
    """The features and index written by :func:`write_feature_file` (``path``: the
    ``.safetensors`` or ``.npz`` file; the index is the ``.csv`` next to it)."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".npz"):
        raise ValueError(f"{path}: a feature file ends in .safetensors or .npz")
    index_path = path.with_suffix(".csv")
    for needed in (path, index_path):
        if not needed.is_file():
            raise FileNotFoundError(f"feature file {needed} does not exist")
    if path.suffix == ".safetensors":
        parts = load_file(path)
    else:
        with np.load(path) as arrays:
            parts = {name: torch.from_numpy(arrays[name]) for name in arrays.files}
    with open(index_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or tuple(rows[0]) != INDEX_COLUMNS:
        raise ValueError(f"{index_path}: expected the columns {', '.join(INDEX_COLUMNS)}")
    records = [
        ImageRecord(
            int(row["row"]),
            row["path"],
            int(row["pid"]),
            int(row["camid"]),
            float(row["timestamp"]) if row["timestamp"] else None,
            row["split"],
        )
        for row in rows
    ]
    features = Features(parts)
    if len(features) != len(records):
        raise ValueError(f"{path}: {len(features)} feature rows but {len(records)} index rows")
    return features, records


def extract_from_config(cfg: DictConfig) -> tuple[Path, Path]:
    """The CLI without Hydra's wrapper (keys: ``conf/extract.yaml``)."""
    dtype = {"float32": torch.float32, "float16": torch.float16}.get(cfg.dtype)
    if dtype is None:
        raise ValueError(f"dtype must be float32 or float16, got {cfg.dtype!r}")
    # Checked before the (possibly long) extraction: an existing file is refused at once.
    refuse_existing(feature_paths(cfg.out, cfg.format))
    overrides = OmegaConf.to_container(cfg.method_overrides, resolve=True)
    method = load_method(cfg.ckpt, overrides=overrides)
    method.to(inference_device(cfg.device))
    datamodule = checkpoint_datamodule(cfg.data, method)
    dataset = target_dataset(datamodule, cfg.target)
    features = extract_features(
        method,
        dataset,
        range(len(dataset)),
        batch_size=datamodule.eval_batch_size,
        num_workers=datamodule.num_workers,
        device="cpu",
        dtype=dtype,
        progress=cfg.progress,
    )
    metadata = {
        "checkpoint": str(Path(cfg.ckpt).resolve()),
        "method": str(method.hparams["config"].get("_target_")),
        "target": dataset.name,
    }
    paths = write_feature_file(features, image_records(dataset), cfg.out, cfg.format, metadata)
    shapes = ", ".join(f"{name} {list(t.shape)}" for name, t in features.parts.items())
    print(f"{len(features)} images of {dataset.name} ({shapes}): {paths[0]} and {paths[1]}")
    return paths


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="extract")
def main(cfg: DictConfig) -> None:
    extract_from_config(cfg)


if __name__ == "__main__":
    main()
