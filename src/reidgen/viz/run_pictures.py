"""The pictures of a finished run (:class:`RunPictures`): what ``reidgen.run`` draws after the
test, on the main process, into ``<run>/pictures/`` and hands to the loggers
(:mod:`reidgen.logger_results`).

* ``ranked_<target>.png``: per test target, a sheet of ranked lists (:func:`write_ranked_sheet`),
  one row per query, the queries spread evenly over the query set (:func:`spread_queries`);
* ``<kind>_<target>/query_<index>.png``: the method's own picture of the first of those queries,
  where the method can be drawn so (:data:`METHOD_PICTURES`: QAConv's matches, AlignedReID's
  alignment, ES-Net's saliency);
* the pictures the method drew into the run folder while training (:data:`TRAINING_PICTURES`),
  the latest of each, as they are.

Pictures are never replaced: a run resumed into the same folder writes into ``pictures_2/``
(then ``pictures_3/``, ...), so each folder shows the weights of one finished run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from reidgen.data.dataset import EvalDataset
from reidgen.methods.base import ReIDMethod
from reidgen.viz.alignment import check_aligned_method, write_alignment_pictures
from reidgen.viz.drawing import stack_rows
from reidgen.viz.qaconv_matches import check_matching_method, write_match_pictures
from reidgen.viz.ranked import Picture, draw_ranking, rank_queries, write_png
from reidgen.viz.saliency import check_esnet_method, write_saliency_pictures

log = logging.getLogger(__name__)

_BACKGROUND = (255, 255, 255)
T = TypeVar("T")


@dataclass(frozen=True)
class MethodPicture:
    """A picture only some methods have.

    :ivar kind: names its folder, ``<kind>_<target>``.
    :ivar check: ``check(method)`` raises ``TypeError`` unless the method can be drawn so.
    :ivar write: its writer, ``write(method, dataset, queries, out_dir, top=, height=,
        batch_size=, num_workers=) -> list[Picture]`` (``out_dir/query_<index>.png``).
    """

    kind: str
    check: Callable[[object], None]
    write: Callable[..., list[Picture]]


METHOD_PICTURES = (
    MethodPicture("matches", check_matching_method, write_match_pictures),
    MethodPicture("alignment", check_aligned_method, write_alignment_pictures),
    MethodPicture("saliency", check_esnet_method, write_saliency_pictures),
)

TRAINING_PICTURES = ("pseudo_labels.png", "views/epoch_*.png")
"""Run-folder files methods write while training: the clustering methods' pseudo-label plot
(``ReIDMethod.record_pseudo_labels``) and GCL's generated views of each epoch."""


def method_pictures(method: object) -> list[MethodPicture]:
    """The entries of :data:`METHOD_PICTURES` whose check accepts ``method``."""
    accepted = []
    for entry in METHOD_PICTURES:
        try:
            entry.check(method)
        except TypeError:
            continue
        accepted.append(entry)
    return accepted


def spread_queries(num_query: int, count: int) -> list[int]:
    """``count`` positions spread evenly over a query set of ``num_query`` (all of them when it
    has fewer), ascending, the first query first."""
    if count < 0:
        raise ValueError(f"the number of queries must be non-negative, got {count}")
    count = min(count, num_query)
    return [k * num_query // count for k in range(count)]


def training_pictures(run_dir: Path) -> list[Path]:
    """The latest file (by modification time) of each pattern of :data:`TRAINING_PICTURES` that
    has one in ``run_dir``."""
    latest = []
    for pattern in TRAINING_PICTURES:
        found = list(run_dir.glob(pattern))
        if found:
            latest.append(max(found, key=lambda path: (path.stat().st_mtime_ns, path.name)))
    return latest


def claim_folder(run_dir: Path, name: str = "pictures") -> Path:
    """Creates and returns ``run_dir/name``, or, when it exists, the first free of
    ``name_2``, ``name_3``, ..."""
    folder, number = run_dir / name, 1
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            number += 1
            folder = run_dir / f"{name}_{number}"


def write_ranked_sheet(
    method: ReIDMethod,
    dataset: EvalDataset,
    queries: Sequence[int],
    path: Path,
    top: int = 5,
    height: int = 256,
    batch_size: int = 64,
    num_workers: int = 0,
) -> Path:
    """One PNG at ``path`` (never replacing a file): a :func:`draw_ranking` row per query (a
    position in the query set), its ``top`` results by the method's test distance, stacked in the
    order given."""
    ranked = rank_queries(method, dataset, queries, top, batch_size, num_workers)
    rows = [draw_ranking(dataset, r, height, f"query {r.query}") for r in ranked.rankings]
    return write_png(stack_rows(rows, _BACKGROUND), path)


def _attempt(what: str, write: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``write(*args, **kwargs)``, or None when it fails: the failure is logged with its
    traceback, because a picture must not cost the finished run its results (metrics.json is
    written after the pictures)."""
    try:
        return write(*args, **kwargs)
    except Exception:
        log.exception("%s failed; the run goes on without it", what)
        return None


@dataclass(frozen=True)
class RunPictures:
    """The end-of-run pictures (see the module); ``pictures`` of ``conf/config.yaml``, built when
    the run starts, so a wrong setting fails before training rather than after.

    :param queries: queries per target's sheet, spread over its query set; 0 draws nothing (the
        training pictures are still gathered).
    :param top: results per query.
    :param height: the images' minimum height in pixels (small crops are upsampled).
    """

    queries: int = 4
    top: int = 5
    height: int = 256

    def __post_init__(self) -> None:
        if self.queries < 0 or self.top < 1 or self.height < 1:
            raise ValueError(
                f"pictures need queries >= 0, top >= 1 and height >= 1; got queries="
                f"{self.queries}, top={self.top}, height={self.height}"
            )

    def write(
        self,
        method: ReIDMethod,
        targets: Mapping[str, EvalDataset],
        run_dir: Path,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> dict[str, Path]:
        """Draws the pictures of ``method`` into a new folder of ``run_dir``
        (:func:`claim_folder`) and gathers the training ones.

        :param targets: the test sets by target name (``ReIDDataModule.eval_sets``); a target
            whose protocol draws its own queries from one pool (VehicleID) is skipped, with a log
            line.
        :param batch_size, num_workers: the feature extraction's loader.
        :returns: every picture by its path in ``run_dir`` without the suffix (e.g.
            ``pictures/ranked_market1501``), the drawn ones first.
        """
        drawn: list[Path] = []
        if self.queries:
            folder = claim_folder(run_dir)
            extra = method_pictures(method)
            loader = {"batch_size": batch_size, "num_workers": num_workers}
            for name, dataset in targets.items():
                if dataset.protocol.pooled:
                    log.info("no pictures of %s: its protocol has no fixed query set", name)
                    continue
                chosen = spread_queries(dataset.num_query, self.queries)
                if not chosen:
                    log.info("no pictures of %s: it has no queries", name)
                    continue
                sheet = _attempt(
                    f"the ranked-list sheet of {name}",
                    write_ranked_sheet,
                    method,
                    dataset,
                    chosen,
                    folder / f"ranked_{name}.png",
                    self.top,
                    self.height,
                    **loader,
                )
                drawn += [sheet] if sheet else []
                for entry in extra:
                    written = _attempt(
                        f"the {entry.kind} picture of {name}",
                        entry.write,
                        method,
                        dataset,
                        chosen[:1],
                        folder / f"{entry.kind}_{name}",
                        top=self.top,
                        height=self.height,
                        **loader,
                    )
                    drawn += [picture.path for picture in written or []]
        return {
            path.relative_to(run_dir).with_suffix("").as_posix(): path
            for path in [*drawn, *training_pictures(run_dir)]
        }
