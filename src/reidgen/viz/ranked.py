"""The ranked-list core of the method pictures: chosen queries of one test target, each with its
gallery ranked by the method's own test distance, and the picture files.

Every picture (:mod:`reidgen.viz.alignment`, :mod:`reidgen.viz.qaconv_matches`) shows a query
with its top results as the evaluation ranks them; this module does all of it but the drawing:

* :func:`target_dataset`: the test set of one target of a data config;
* :func:`select_queries`: the chosen positions in the query set, checked;
* :func:`extract_features`: a method's :class:`~reidgen.eval.features.Features` of a target's
  images (``[n, ...]`` per part), batched, in eval and inference mode;
* :func:`rank_gallery`: rows of a ``[Q, G]`` distance turned into ranked lists by the evaluation
  protocol's rule (junk and the query's identity in the query's camera left out, ties in gallery
  order, NaN last);
* :func:`rank_queries`: the three composed, through ``method.distance``;
* :func:`picture_paths`, :func:`write_png`: ``out_dir/query_<index>.png``, each written whole or
  not at all, and never replacing an existing picture unless asked;
* :func:`checkpoint_target`, :func:`print_pictures`: what the picture CLIs do first and last;
* :func:`write_ranked_pictures`, :func:`draw_ranking`: the ranked-list picture of any method
  (:mod:`reidgen.viz.ranked_list`), and its CLI ``python -m reidgen.viz.ranked ckpt=PATH
  data=synth_cross target=synth_street queries=[0,5]`` (config ``conf/viz_ranked.yaml``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from reidgen.atomic import write_atomically
from reidgen.data.datamodule import ReIDDataModule
from reidgen.data.dataset import EvalDataset, read_image
from reidgen.eval.features import Features
from reidgen.eval.ranking import JUNK_PID
from reidgen.eval.target import EvalTarget
from reidgen.methods.base import ReIDMethod
from reidgen.progress import progress as progress_bar
from reidgen.run_support import checkpoint_datamodule, inference_device, load_method
from reidgen.viz.ranked_list import draw_ranked_list, result_marks

QUERY_CHUNK = 64
"""Queries whose ``[chunk, G]`` distances are computed and ranked at a time."""


@dataclass(frozen=True)
class Ranking:
    """One query's ranked gallery.

    :ivar query: the query's dataset index (= its position in the query set).
    :ivar results: dataset indices of its best kept gallery items (at most ``top``), best first.
    :ivar distances: their distances by the method's test distance (smaller = closer).
    :ivar kept: how many gallery items were ranked (not left out).
    """

    query: int
    results: tuple[int, ...]
    distances: tuple[float, ...]
    kept: int


@dataclass(frozen=True)
class RankedQueries:
    """What :func:`rank_queries` found: the rankings and the features they came from.

    :ivar rankings: one per query, in the order the queries were given.
    :ivar query_features: ``[len(rankings), ...]`` per part, row ``i`` = ``rankings[i].query``.
    :ivar gallery_features: ``[G, ...]`` per part, the whole gallery in gallery order.
    :ivar num_query: the target's query count: gallery position = dataset index - ``num_query``.
    """

    rankings: list[Ranking]
    query_features: Features
    gallery_features: Features
    num_query: int

    def result_features(self, row: int) -> Features:
        """The gallery features of ``rankings[row].results``, best first."""
        positions = [index - self.num_query for index in self.rankings[row].results]
        return self.gallery_features.rows(torch.tensor(positions, dtype=torch.long))


@dataclass(frozen=True)
class Picture:
    """One written picture: its PNG file and the ranking it shows."""

    path: Path
    ranking: Ranking


# ---------------------------------------------------------------------------------- the target
def target_dataset(datamodule: ReIDDataModule, name: str | None) -> EvalDataset:
    """The test set of target ``name`` of ``datamodule`` (its only target when ``None``); only
    that target is indexed."""
    names = datamodule.target_names
    if name is None:
        if len(names) != 1:
            raise ValueError(
                f"the data config has {len(names)} targets; choose one with target=<name>: "
                f"{', '.join(names)}"
            )
        name = names[0]
    elif name not in names:
        raise ValueError(
            f"unknown target {name!r}; the data config's targets are: {', '.join(names)} "
            "(data.targets=[...] names others)"
        )
    # The other targets may be large, or absent on this machine.
    datamodule.targets = [target for target in datamodule.targets if target.name == name]
    datamodule.setup("test")
    return datamodule.eval_sets[name]


def select_queries(dataset: EvalDataset, queries: Iterable[int]) -> list[int]:
    """``queries`` (positions in the query set = dataset indices) without repeats, in the order
    given, after checking that ``dataset`` has a fixed query set and a gallery to rank."""
    if dataset.protocol.pooled:
        raise ValueError(
            f"this target's protocol ({type(dataset.protocol).__name__}) draws query and gallery "
            "from one pool itself: there is no fixed query set to picture"
        )
    # operator.index: a float position is a mistake, not something to round.
    chosen = list(dict.fromkeys(operator.index(q) for q in queries))
    if not chosen:
        raise ValueError("no queries given (queries=[0,5] pictures the first and the sixth)")
    num_query = dataset.num_query
    outside = [q for q in chosen if not 0 <= q < num_query]
    if outside:
        valid = f"indices 0 to {num_query - 1}" if num_query else "none to choose"
        raise IndexError(
            f"query index {', '.join(map(str, outside))} out of range: the target has "
            f"{num_query} queries ({valid})"
        )
    if len(dataset) == num_query:
        raise ValueError("the target has no gallery to rank")
    return chosen


# ---------------------------------------------------------------------------------- ranking
@contextmanager
def inference(method: torch.nn.Module) -> Iterator[None]:
    """Eval mode and ``torch.inference_mode`` for the block; afterwards every submodule gets its
    own mode back (a training method may hold parts in eval mode, e.g. QAConv's frozen BN)."""
    modes = {module: module.training for module in method.modules()}
    method.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for module, training in modes.items():
            module.training = training


def extract_features(
    method: ReIDMethod,
    dataset: Dataset,
    indices: Sequence[int],
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> Features:
    """``method.extract`` of ``dataset[indices]`` (items with an ``"image"``: an
    :class:`EvalDataset`'s, or any such dataset's), ``[len(indices), ...]`` per part, in order
    (the test transform's images, no flip).

    :param device, dtype: where and as what each batch's features are kept (default: the
        method's device, the method's dtype); ``device="cpu"`` holds one batch at a time on the
        accelerator, whatever the number of images.
    :param progress: a progress bar over the batches, named after ``dataset.name``.
    """
    if not indices:
        raise ValueError("no images to extract features of")
    loader = DataLoader(
        Subset(dataset, list(indices)), batch_size=batch_size, num_workers=num_workers
    )
    name = getattr(dataset, "name", "images")
    batches = progress_bar(
        loader, description=f"features of {name}", unit="batch", enabled=progress
    )
    chunks = []
    with inference(method):
        for batch in batches:
            features = method.extract(batch["image"].to(method.device))
            if device is not None or dtype is not None:
                features = features.map(lambda tensor: tensor.to(device or tensor.device, dtype))
            chunks.append(features)
    return Features.cat(chunks)


def rank_gallery(
    distances: Tensor,
    target: EvalTarget,
    queries: Sequence[int],
    top: int | None = None,
    exclude_same_camera: bool = True,
) -> list[Ranking]:
    """The ranked gallery of each of ``queries`` from its row of ``distances``.

    As the evaluation protocols rank (``reidgen.eval.ranking``): gallery junk (pid -1) is left
    out, and with ``exclude_same_camera`` so is the query's identity in the query's camera
    (neither a right nor a wrong answer); the rest is sorted by distance, ties in gallery order,
    NaN last.

    :param distances: ``[len(queries), G]``, smaller = closer.
    :param target: the identities and cameras, ``target.num_query`` queries first.
    :param queries: the rows' dataset indices.
    :param top: results kept per query (None: all).
    """
    num_query = target.num_query
    if distances.shape != (len(queries), target.num_gallery):
        raise ValueError(
            f"distances must be [{len(queries)} queries, {target.num_gallery} gallery items], "
            f"got {tuple(distances.shape)}"
        )
    if top is not None and top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    distances = distances.detach().cpu()
    gallery_pids, gallery_camids = target.pids[num_query:], target.camids[num_query:]
    junk = gallery_pids == JUNK_PID
    rankings = []
    for row, query in enumerate(queries):
        left_out = junk
        if exclude_same_camera:
            same_camera = gallery_camids == target.camids[query]
            left_out = junk | ((gallery_pids == target.pids[query]) & same_camera)
        kept = (~left_out).nonzero().squeeze(1)
        if kept.numel() == 0:
            raise ValueError(f"every gallery item is left out for query {query}")
        # Only kept items are sorted, so NaN distances rank last among them, as in evaluation.
        order = kept[torch.sort(distances[row, kept], stable=True).indices][:top]
        rankings.append(
            Ranking(
                query=query,
                results=tuple(num_query + int(position) for position in order),
                distances=tuple(distances[row, order].tolist()),
                kept=kept.numel(),
            )
        )
    return rankings


def rank_queries(
    method: ReIDMethod,
    dataset: EvalDataset,
    queries: Iterable[int],
    top: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    exclude_same_camera: bool = True,
) -> RankedQueries:
    """Ranks ``dataset``'s gallery for each of ``queries`` (checked by :func:`select_queries`)
    by ``method.distance`` of their :func:`extract_features` (see :func:`rank_gallery`).

    The whole gallery's features are held at once, as in evaluation, because the method's
    distance is defined on the whole gallery record.
    """
    chosen = select_queries(dataset, queries)
    query_features = extract_features(method, dataset, chosen, batch_size, num_workers)
    gallery = range(dataset.num_query, len(dataset))
    gallery_features = extract_features(method, dataset, gallery, batch_size, num_workers)
    target = dataset.target
    rankings = []
    with inference(method):
        distance = method.distance(query_features, gallery_features)
        for start in range(0, len(chosen), QUERY_CHUNK):
            stop = min(start + QUERY_CHUNK, len(chosen))
            rows = distance(start, stop).float()
            rankings += rank_gallery(rows, target, chosen[start:stop], top, exclude_same_camera)
    return RankedQueries(rankings, query_features, gallery_features, dataset.num_query)


# ---------------------------------------------------------------------------------- the files
def _refusal(paths: Sequence[Path]) -> str:
    return (
        f"not overwriting {', '.join(map(str, paths))}: write to another folder (out_dir=...), "
        "or replace the pictures with overwrite=true"
    )


def picture_paths(
    out_dir: str | Path, queries: Sequence[int], overwrite: bool = False
) -> list[Path]:
    """``out_dir/query_<index>.png`` per query. Unless ``overwrite``, a ``FileExistsError``
    naming every picture already there, raised before anything is computed or written."""
    paths = [Path(out_dir) / f"query_{query}.png" for query in queries]
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(_refusal(existing))
    return paths


def write_png(picture: Image.Image, path: str | Path, overwrite: bool = False) -> Path:
    """Writes ``picture`` as a PNG file at ``path`` (its folder created), atomically: it is
    written to a temporary file in the same folder, then renamed, so no reader ever sees half a
    picture and a failed write leaves neither a broken picture nor the temporary file.

    :param overwrite: replace an existing file. Otherwise an existing file is a
        ``FileExistsError``, also when it appears while the picture is written.
    """
    try:
        return write_atomically(
            path, lambda temporary: picture.save(temporary, format="PNG"), overwrite=overwrite
        )
    except FileExistsError:
        raise FileExistsError(_refusal([Path(path)])) from None


# ---------------------------------------------------------------------------------- the CLIs
@dataclass(frozen=True)
class CheckpointTarget:
    """What a picture CLI works on: the checkpoint's method, on its device, and the target.

    :ivar queries: the chosen queries, checked by :func:`select_queries`.
    :ivar batch_size, num_workers: the data config's evaluation loader settings.
    """

    method: ReIDMethod
    dataset: EvalDataset
    queries: list[int]
    batch_size: int
    num_workers: int


def checkpoint_target(
    cfg: DictConfig, check_method: Callable[[ReIDMethod, str], None]
) -> CheckpointTarget:
    """The picture CLIs' start (keys ``ckpt``, ``method_overrides``, ``device``, ``data``,
    ``target``, ``queries`` of ``conf/viz_*.yaml``): rebuilds the checkpoint's method, lets
    ``check_method(method, subject)`` refuse it before any data is read, and reads the target
    with the checkpoint's test transform."""
    overrides = OmegaConf.to_container(cfg.method_overrides, resolve=True)
    method = load_method(cfg.ckpt, overrides=overrides)
    check_method(method, "this checkpoint's method")
    method.to(inference_device(cfg.device))
    datamodule = checkpoint_datamodule(cfg.data, method)
    dataset = target_dataset(datamodule, cfg.target)
    queries = list(cfg.queries) if OmegaConf.is_list(cfg.queries) else [cfg.queries]
    return CheckpointTarget(
        method,
        dataset,
        select_queries(dataset, queries),
        datamodule.eval_batch_size,
        datamodule.num_workers,
    )


def print_pictures(pictures: Sequence[Picture]) -> None:
    """One line per picture: the query, the file and the results with their distances."""
    for picture in pictures:
        ranking = picture.ranking
        results = ", ".join(
            f"{index} ({distance:.4f})"
            for index, distance in zip(ranking.results, ranking.distances, strict=True)
        )
        print(f"query {ranking.query}: {picture.path}  results: {results}")


def pictures_from_checkpoint(
    cfg: DictConfig,
    check_method: Callable[[ReIDMethod, str], None],
    write: Callable[..., list[Picture]],
    **options: object,
) -> list[Picture]:
    """A picture CLI's body (keys of ``conf/viz_*.yaml``): :func:`checkpoint_target`, then
    ``write(method, dataset, queries, out_dir, top=, height=, batch_size=, num_workers=,
    exclude_same_camera=, overwrite=, **options)``, then :func:`print_pictures`."""
    target = checkpoint_target(cfg, check_method)
    pictures = write(
        target.method,
        target.dataset,
        target.queries,
        cfg.out_dir,
        top=cfg.top,
        height=cfg.height,
        batch_size=target.batch_size,
        num_workers=target.num_workers,
        exclude_same_camera=cfg.exclude_same_camera,
        overwrite=cfg.overwrite,
        **options,
    )
    print_pictures(pictures)
    return pictures


# ---------------------------------------------------------------------------------- any method
def check_method(method: object, subject: str = "this method") -> None:
    """Raises ``TypeError`` unless ``method`` is a reidgen method (every one can be pictured)."""
    if not isinstance(method, ReIDMethod):
        raise TypeError(f"{subject} is not a reidgen method ({type(method).__name__})")


def write_ranked_pictures(
    method: ReIDMethod,
    dataset: EvalDataset,
    queries: Iterable[int],
    out_dir: str | Path,
    top: int = 5,
    height: int = 256,
    batch_size: int = 64,
    num_workers: int = 0,
    exclude_same_camera: bool = True,
    overwrite: bool = False,
) -> list[Picture]:
    """For each query (a position in the query set): the query and its ``top`` gallery results by
    the method's test distance, marked correct / wrong / junk (:func:`draw_ranked_list`), written
    as ``out_dir/query_<index>.png``. Images are shown as read from disk.

    :param exclude_same_camera: leave out the query's identity in the query's camera, as the
        evaluation protocols do (with False they appear, marked junk); junk is always left out.
    :param overwrite: replace existing pictures; otherwise an existing one is an error, raised
        before anything is computed.
    """
    check_method(method)
    chosen = select_queries(dataset, queries)
    paths = picture_paths(out_dir, chosen, overwrite)
    ranked = rank_queries(
        method, dataset, chosen, top, batch_size, num_workers, exclude_same_camera
    )
    return [
        Picture(write_png(draw_ranking(dataset, ranking, height), path, overwrite), ranking)
        for ranking, path in zip(ranked.rankings, paths, strict=True)
    ]


def draw_ranking(
    dataset: EvalDataset, ranking: Ranking, height: int = 256, query_caption: str = "query"
) -> Image.Image:
    """``ranking``'s row (:func:`draw_ranked_list`): the query, then its results marked correct /
    wrong / junk with their rank and distance. Images are shown as read from disk."""
    samples = dataset.samples
    captions = [f"#{k + 1}: {distance:.3f}" for k, distance in enumerate(ranking.distances)]
    return draw_ranked_list(
        read_image(samples[ranking.query].path),
        [read_image(samples[index].path) for index in ranking.results],
        result_marks(dataset.target, ranking.query, ranking.results),
        captions,
        height,
        query_caption,
    )


def pictures_from_config(cfg: DictConfig) -> list[Picture]:
    """The CLI without Hydra's wrapper (keys: ``conf/viz_ranked.yaml``)."""
    return pictures_from_checkpoint(cfg, check_method, write_ranked_pictures)


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="viz_ranked")
def main(cfg: DictConfig) -> None:
    pictures_from_config(cfg)


if __name__ == "__main__":
    main()
