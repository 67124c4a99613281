"""``python -m reidgen.search ckpt=... query=<image or folder> gallery=<folder or feature file>``:
rank a gallery for each query with the checkpoint's own test distance, optionally re-ranked
(``conf/search.yaml``). No identities are needed: any folder of person (or vehicle) crops works.

Writes into ``out_dir``, never over an existing file:

* ``ranking.csv``: one row per query and result, ``query, query_path, rank, gallery, gallery_path,
  distance`` (``rank`` from 1; ``query`` and ``gallery`` are positions in the sorted file lists, or
  the feature file's rows);
* ``query_<i>.png``: query ``i`` and its top results (:func:`~reidgen.viz.ranked_list.
  draw_ranked_list`, unmarked: nobody knows which are right).

A gallery folder's features are extracted on the fly; a feature file written by
:mod:`reidgen.extract` with the same checkpoint is read instead (its ``.csv`` index gives the
images' paths).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import Dataset

from reidgen.atomic import write_atomically
from reidgen.data.dataset import read_image
from reidgen.eval.features import Features
from reidgen.eval.rerank import rerank
from reidgen.extract import read_feature_file
from reidgen.methods.base import ReIDMethod
from reidgen.run_support import inference_device, load_method
from reidgen.viz.ranked import QUERY_CHUNK, extract_features, inference, write_png
from reidgen.viz.ranked_list import draw_ranked_list

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
FEATURE_SUFFIXES = (".safetensors", ".npz")
RANKING_COLUMNS = ("query", "query_path", "rank", "gallery", "gallery_path", "distance")


def image_files(path: str | Path, role: str) -> list[Path]:
    """``path`` itself if it is an image file, else every image file under the folder ``path``
    (recursively, sorted).

    :param role: ``"query"`` or ``"gallery"``, named in the errors.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{role} {path} does not exist")
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(
                f"{role} {path} is not an image ({', '.join(IMAGE_SUFFIXES)}) or a folder"
            )
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"{role} folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)}, searched "
            "recursively)"
        )
    return files


class ImageFiles(Dataset):
    """Image files read with a transform, for :func:`~reidgen.viz.ranked.extract_features`."""

    def __init__(self, files: Sequence[Path], transform: Any, name: str) -> None:
        self.files, self.transform, self.name = list(files), transform, name

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.transform(read_image(str(self.files[index]))), "index": index}


@dataclass(frozen=True)
class SearchResult:
    """Each query's top results: ``indices`` and ``distances`` ``[Q, top]`` (gallery positions,
    best first); the files they stand for."""

    query_files: list[Path]
    gallery_files: list[Path]
    indices: Tensor
    distances: Tensor


def rank_all(
    method: ReIDMethod,
    query_features: Features,
    gallery_features: Features,
    top: int,
    rerank_options: dict[str, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """The ``top`` nearest gallery rows of every query by ``method``'s test distance (re-ranked
    with ``rerank_options`` ``{k1, k2, lambda_value}`` when given): ``(indices, distances)``,
    each ``[Q, min(top, G)]``, ties in gallery order, NaN last."""
    num_query, num_gallery = len(query_features), len(gallery_features)
    top = min(top, num_gallery)
    with inference(method):
        if rerank_options is None:
            distance = method.distance(query_features, gallery_features)
        else:
            everything = Features.cat([query_features, gallery_features])
            rows = method.rerank_rows(everything, num_query)
            distance = rerank(rows, num_query, **rerank_options, num_total=len(everything))
        indices, distances = [], []
        for start in range(0, num_query, QUERY_CHUNK):
            block = distance(start, min(start + QUERY_CHUNK, num_query)).float().cpu()
            order = torch.sort(block, dim=1, stable=True).indices[:, :top]
            indices.append(order)
            distances.append(block.gather(1, order))
    return torch.cat(indices), torch.cat(distances)


def search(
    method: ReIDMethod,
    query: str | Path,
    gallery: str | Path,
    top: int = 10,
    rerank_options: dict[str, float] | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> SearchResult:
    """Ranks ``gallery`` (a folder or image, or a feature file of :mod:`reidgen.extract`) for each
    image of ``query`` (a folder or image), with the images read by the checkpoint's test
    transform."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    stored = method.hparams.get("test_transform")
    if stored is None:
        raise ValueError("the checkpoint holds no test transform to read the images with")
    transform = instantiate(stored)

    def features_of(files: list[Path], role: str) -> Features:
        dataset = ImageFiles(files, transform, role)
        return extract_features(method, dataset, range(len(files)), batch_size, progress=progress)

    query_files = image_files(query, "query")
    query_features = features_of(query_files, "query")
    gallery = Path(gallery)
    if gallery.is_file() and gallery.suffix in FEATURE_SUFFIXES:
        gallery_features, records = read_feature_file(gallery)
        gallery_files = [Path(record.path) for record in records]
        if gallery_features.names != query_features.names:
            raise ValueError(
                f"feature file {gallery} holds {', '.join(gallery_features.names)} but this "
                f"checkpoint's method describes an image by {', '.join(query_features.names)}: "
                "extract the gallery with the same checkpoint and method_overrides"
            )
        gallery_features = gallery_features.map(lambda t: t.to(method.device, torch.float32))
    else:
        gallery_files = image_files(gallery, "gallery")
        gallery_features = features_of(gallery_files, "gallery")
    indices, distances = rank_all(method, query_features, gallery_features, top, rerank_options)
    return SearchResult(query_files, gallery_files, indices, distances)


def output_paths(out_dir: str | Path, num_query: int) -> tuple[Path, list[Path]]:
    """``ranking.csv`` and ``query_<i>.png`` of each query in ``out_dir``."""
    out_dir = Path(out_dir)
    return out_dir / "ranking.csv", [out_dir / f"query_{i}.png" for i in range(num_query)]


def write_search(result: SearchResult, out_dir: str | Path, height: int = 256) -> list[Path]:
    """Writes ``ranking.csv`` and one picture per query (see the module docstring); returns the
    written paths, the CSV first. Existing files are refused before anything is written."""
    csv_path, pictures = output_paths(out_dir, len(result.query_files))
    existing = [str(path) for path in (csv_path, *pictures) if path.exists()]
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise FileExistsError(
            f"not overwriting {', '.join(existing[:3])}{more}: choose another out_dir=..."
        )
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(RANKING_COLUMNS)
    for query, (row, distances) in enumerate(zip(result.indices, result.distances, strict=True)):
        pairs = zip(row.tolist(), distances.tolist(), strict=True)
        for rank, (index, distance) in enumerate(pairs, start=1):
            query_path, gallery_path = result.query_files[query], result.gallery_files[index]
            writer.writerow((query, query_path, rank, index, gallery_path, f"{distance:.6g}"))
    write_atomically(csv_path, lambda temp: temp.write_text(text.getvalue()), overwrite=False)
    for query, path in enumerate(pictures):
        results = result.indices[query].tolist()
        picture = draw_ranked_list(
            read_image(str(result.query_files[query])),
            [read_image(str(result.gallery_files[index])) for index in results],
            [None] * len(results),
            [f"#{k + 1}: {d:.3f}" for k, d in enumerate(result.distances[query].tolist())],
            height,
        )
        write_png(picture, path)
    return [csv_path, *pictures]


def search_from_config(cfg: DictConfig) -> list[Path]:
    """The CLI without Hydra's wrapper (keys: ``conf/search.yaml``)."""
    overrides = OmegaConf.to_container(cfg.method_overrides, resolve=True)
    method = load_method(cfg.ckpt, overrides=overrides)
    method.to(inference_device(cfg.device))
    rerank_options = (
        {"k1": cfg.rerank_k1, "k2": cfg.rerank_k2, "lambda_value": cfg.rerank_lambda}
        if cfg.rerank
        else None
    )
    result = search(
        method,
        cfg.query,
        cfg.gallery,
        cfg.top,
        rerank_options,
        batch_size=cfg.batch_size,
        progress=cfg.progress,
    )
    paths = write_search(result, cfg.out_dir, cfg.height)
    print(
        f"{len(result.query_files)} queries against {len(result.gallery_files)} gallery images: "
        f"{paths[0]} and {len(paths) - 1} pictures in {Path(cfg.out_dir)}"
    )
    return paths


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="search")
def main(cfg: DictConfig) -> None:
    search_from_config(cfg)


if __name__ == "__main__":
    main()
