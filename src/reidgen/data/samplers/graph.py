"""GS graph sampler (QAConv-GS, CVPR 2022): every batch is a class and its nearest classes.

At the start of every epoch the method builds a *class graph* with the current model: it picks one
representative image per class (:meth:`GraphSampler.representatives`), computes the ``[P, P]``
distance between the representatives (for QAConv: ``-score`` of the matcher in eval mode) and hands
it to :meth:`GraphSampler.set_graph`. The sampler itself never touches the model; given the graph
the epoch plan is a pure function of ``(labels, seed, epoch, graph)``:

* every class is the *anchor* of exactly one batch, in a seeded random order, so an epoch has
  ``P`` (number of classes) batches, as in the official code (one epoch = #identities
  iterations);
* the batch of anchor ``a`` holds ``C = batch_size // num_instances`` classes: ``a`` itself
  followed by its ``C - 1`` nearest classes, nearest first, with ``num_instances`` (``K``)
  images each, contiguous per class. A class with at least ``K`` images gives ``K`` distinct
  images; one with fewer gives all of them plus draws with replacement.

Which images a class gives follows the official per-class cyclic pointer, restarted every epoch
so that the plan only depends on ``(seed, epoch)``: a class's images are shuffled and consumed
``K`` at a time in plan order; when fewer than ``K`` are left the list is reshuffled (the few left
over wait for a later cycle). A class that is a near neighbour of many anchors therefore cycles
through all its images.

Conventions shared with :class:`reidgen.data.samplers.identity.RandomIdentitySampler`:
``batch_size`` is the GLOBAL batch; every DDP rank computes the same plan and keeps whole class
groups of each batch (rank ``r`` takes group slots ``r*C/R .. (r+1)*C/R - 1``, so rank 0 gets the
anchor and its closest neighbours); ``len`` is exact and constant (``P * batch_size // R``) from
the start, before any graph exists; ``set_epoch``, ``state_dict``/``load_state_dict`` and
``position`` mean the same thing. Wire it the same way:
``DataLoader(batch_size=sampler.per_rank_batch_size, sampler=sampler)`` and
``Trainer(use_distributed_sampler=False)``.

Who builds the graph, and when: two ways.

* Push: the method calls :meth:`GraphSampler.set_graph` itself. Beware of Lightning's timing
  (checked on 2.6): for epochs > 0 the loader iterator is created after ``set_epoch`` and
  ``on_train_epoch_start``, so that hook works; but the iterator of the *first* epoch (and of a
  resumed one) is created in ``FitLoop.setup_data``, before both, and with ``num_workers > 0``
  it already pulls indices from the sampler. Set the first graph in ``on_fit_start``.
* Pull (more robust): :meth:`GraphSampler.set_graph_fn` registers ``fn(representatives) ->
  distance or nearest table``; when an epoch without graph is iterated the sampler calls it with
  :meth:`GraphSampler.representatives` of that epoch, like the official code does inside its
  ``__iter__``. ``fn`` runs in the main process whenever the loader iterator is created; it must
  put the model in eval mode and restore the previous train/eval modes afterwards (QAConv 2.0
  forgot the latter, see docs/methods/qaconv.md §6.2), and in DDP it is called on every rank at the
  same point, so it may use collectives.

Still no graph for the current epoch: with ``missing_graph="error"`` (default) iterating raises a
``RuntimeError``, which catches a method that forgot to provide one. A graph set for another
epoch counts as missing: a stale graph is never reused silently (call ``set_graph`` with the
old tensor to reuse it on purpose). With ``missing_graph="random"`` the epoch uses ``C - 1``
random distinct neighbours per anchor instead, seeded by ``(seed, epoch)``: a random-grouping
warm-up in the spirit of QAConv 2.0's PK first epoch, with the same length.

DDP: the graph must be identical on all ranks. Compute the representatives' distance once (or
gather it) and ``torch.distributed.broadcast`` the ``[P, C-1]`` nearest-class tensor from rank 0
before ``set_graph``; independently computed fp16 distances may differ in ties between GPUs.
The graph is part of :meth:`GraphSampler.state_dict`, so a mid-epoch resume replays the
interrupted epoch exactly; :attr:`GraphSampler.needs_graph` tells the method whether it still
has to build one for the current epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from reidgen.data.samplers.base import EpochPlanSampler, label_array, resolve_replicas

__all__ = ["GraphSampler", "nearest_classes"]

_MISSING_GRAPH_MODES = ("error", "random")


def nearest_classes(distance: torch.Tensor, k: int, chunk_rows: int = 1024) -> torch.Tensor:
    """The ``k`` nearest other classes of every class, nearest first: int64 ``[P, k]``.

    :param distance: ``[P, P]``, smaller is closer (for similarity scores pass ``-score``). The
        diagonal is ignored (a class is never its own neighbour); NaN counts as +inf.
    :param k: neighbours per class, ``0 <= k <= P - 1``.
    :param chunk_rows: rows processed at once, bounding the memory to a few ``chunk_rows * P``
        arrays.

    Ties are broken by class index (stable sort), so the result is deterministic.
    """
    if distance.ndim != 2 or distance.shape[0] != distance.shape[1]:
        raise ValueError(f"distance must be a square [P, P] matrix, got {tuple(distance.shape)}")
    p = distance.shape[0]
    if not 0 <= k <= p - 1:
        raise ValueError(f"k must be in [0, P - 1] = [0, {p - 1}], got {k}")
    dist = distance.detach().cpu()
    work = torch.float64 if dist.dtype == torch.float64 else torch.float32
    if not dist.is_floating_point():
        work = torch.float64
    out = torch.empty((p, k), dtype=torch.int64)
    if k == 0:
        return out
    for lo in range(0, p, chunk_rows):
        rows = torch.arange(lo, min(lo + chunk_rows, p))
        # Exact upcast (no new ties); self and NaN become +inf.
        d = torch.nan_to_num(dist[rows].to(work), nan=float("inf"))
        is_self = torch.zeros_like(d, dtype=torch.bool)
        is_self[torch.arange(len(rows)), rows] = True
        d[is_self] = float("inf")
        # topk is fast but not stable, so it only gives the k-th smallest value; the k
        # neighbours are the entries strictly below it plus the first entries equal to it (in
        # index order), then ordered by a stable sort on the value: (distance, index) order.
        kth = torch.topk(d, k, dim=1, largest=False, sorted=True).values[:, -1:]
        below = d < kth
        equal = (d == kth) & ~is_self
        room = k - below.sum(dim=1, keepdim=True)
        chosen = below | (equal & (torch.cumsum(equal, dim=1) <= room))
        idx = torch.nonzero(chosen)[:, 1].view(len(rows), k)  # row-major: index order
        order = torch.argsort(d.gather(1, idx), dim=1, stable=True)
        out[rows] = idx.gather(1, order)
    return out


class GraphSampler(EpochPlanSampler):
    """Yields dataset indices of GS batches (anchor class + nearest classes, K images each).

    :param labels: training class of every dataset item (length N). Classes are numbered by
        position in the sorted unique labels (:attr:`classes`); with reidgen's relabelled
        pids ``0..P-1`` position and label coincide. Rows of the graph follow this order.
    :param batch_size: the GLOBAL batch over all ranks, ``C * K`` with ``C`` classes per batch.
    :param num_instances: ``K``, images per class in a batch.
    :param seed: base seed; the plan of an epoch is a pure function of ``(seed, epoch, graph)``.
    :param num_replicas, rank: DDP world size and this process's rank; default to the initialised
        ``torch.distributed`` process group, else 1 and 0.
    :param missing_graph: ``"error"`` (raise when iterating an epoch without its graph) or
        ``"random"`` (random neighbours for such an epoch); see the module docstring.

    Shapes: the epoch's class plan is int64 ``[P, C]`` (row ``b`` = batch ``b``, column 0 its
    anchor), the index plan int64 ``[P, C, K]``; this rank iterates over its ``[P, C/R, K]``
    slice flattened in C order, ``len(self) = P * per_rank_batch_size`` indices.
    """

    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int = 64,
        num_instances: int = 2,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        missing_graph: str = "error",
    ) -> None:
        super().__init__()
        num_replicas, rank = resolve_replicas(num_replicas, rank, num_instances, batch_size)
        if missing_graph not in _MISSING_GRAPH_MODES:
            raise ValueError(
                f"missing_graph must be one of {_MISSING_GRAPH_MODES}, got {missing_graph!r}"
            )
        label_arr = label_array(labels)

        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = int(seed)
        self.missing_graph = missing_graph
        self.classes_per_batch = self.batch_size // self.num_instances  # C
        self.per_rank_batch_size = self.batch_size // self.num_replicas
        self._groups_per_rank = self.classes_per_batch // self.num_replicas

        # Dataset indices per class, in dataset order (stable sort); classes in sorted order.
        order = np.argsort(label_arr, kind="stable")
        classes, starts, counts = np.unique(label_arr[order], return_index=True, return_counts=True)
        self.classes: np.ndarray = classes
        self._order, self._starts, self._counts = order, starts, counts
        self.num_classes = len(classes)  # P
        if self.classes_per_batch > self.num_classes:
            raise ValueError(
                f"a batch needs C = batch_size // num_instances = {self.classes_per_batch} "
                f"distinct classes but the labels have only {self.num_classes}"
            )
        self.num_batches = self.num_classes  # one batch per anchor class

        self.epoch = 0
        self._position = 0
        self._graph: np.ndarray | None = None  # int64 [P, C-1]
        self._graph_epoch: int | None = None
        self._graph_version = 0
        self._graph_fn: Callable[[list[int]], torch.Tensor | np.ndarray] | None = None
        self._plan_cache: tuple[tuple[Any, ...], np.ndarray] | None = None

    # ---------------------------------------------------------------- graph
    def _rng(self, epoch: int, stream: int) -> np.random.Generator:
        # Streams: 0 = anchor order, 1 = representatives, 2 = random neighbours, 3 = images.
        entropy = [self.seed & (2**64 - 1), int(epoch), stream]
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def representatives(self, epoch: int | None = None) -> list[int]:
        """One random dataset index per class (row ``i`` = class ``i``), seeded by
        ``(seed, epoch)``: identical on every rank, so the graph's rows agree everywhere."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = self._rng(epoch, 1)
        offsets = np.floor(rng.random(self.num_classes) * self._counts).astype(np.int64)
        offsets = np.minimum(offsets, self._counts - 1)  # guard against rounding to counts
        return self._order[self._starts + offsets].tolist()

    def set_graph(self, graph: torch.Tensor | np.ndarray, epoch: int | None = None) -> None:
        """Set the class graph of ``epoch`` (default: the current one).

        ``graph`` is either a floating ``[P, P]`` distance between the classes' representatives
        (smaller = closer; the diagonal is ignored) or an integer ``[P, k]`` nearest-class table
        (``k >= C - 1``, row ``i`` = the classes nearest to class ``i``, nearest first, without
        ``i``; only the first ``C - 1`` columns are used).
        """
        g = torch.as_tensor(graph).detach().cpu()
        p, need = self.num_classes, self.classes_per_batch - 1
        if g.is_floating_point():
            if tuple(g.shape) != (p, p):
                raise ValueError(f"a distance graph must be [P, P] = [{p}, {p}], got {g.shape}")
            nearest = nearest_classes(g, need).numpy()
        elif g.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
            if g.ndim != 2 or g.shape[0] != p or not need <= g.shape[1] <= p - 1:
                raise ValueError(
                    f"a nearest-class graph must be [P, k] with P = {p} and "
                    f"{need} <= k <= {p - 1}, got {tuple(g.shape)}"
                )
            nearest = g[:, :need].to(torch.int64).numpy().copy()
            if nearest.size and (nearest.min() < 0 or nearest.max() >= p):
                raise ValueError(f"nearest-class graph has class ids outside [0, {p})")
            if (nearest == np.arange(p)[:, None]).any():
                raise ValueError("nearest-class graph lists a class as its own neighbour")
            srt = np.sort(nearest, axis=1)
            if (srt[:, 1:] == srt[:, :-1]).any():
                raise ValueError("nearest-class graph repeats a class within a row")
        else:
            raise TypeError(f"graph must be a float distance or an integer table, got {g.dtype}")
        self._graph = nearest
        self._graph_epoch = self.epoch if epoch is None else int(epoch)
        self._graph_version += 1

    def set_graph_fn(self, fn: Callable[[list[int]], torch.Tensor | np.ndarray] | None) -> None:
        """Register ``fn(representatives) -> graph`` (anything :meth:`set_graph` accepts),
        called lazily when an epoch without its graph is iterated; None unregisters it."""
        self._graph_fn = fn

    @property
    def needs_graph(self) -> bool:
        """True when the current epoch has no graph yet (build one and call :meth:`set_graph`)."""
        return self._graph is None or self._graph_epoch != self.epoch

    def _neighbours(self, epoch: int) -> np.ndarray:
        """int64 ``[P, C-1]`` neighbours used by ``epoch``."""
        if self._graph is not None and self._graph_epoch == epoch:
            return self._graph
        if self._graph_fn is not None:
            self.set_graph(self._graph_fn(self.representatives(epoch)), epoch=epoch)
            return self._graph
        if self.missing_graph == "error":
            have = (
                "no graph was set"
                if self._graph is None
                else (f"the graph was set for epoch {self._graph_epoch}")
            )
            raise RuntimeError(
                f"GraphSampler has no class graph for epoch {epoch} ({have}): call "
                "set_graph(distance or nearest) before the epoch's loader iterator is created, "
                "register set_graph_fn(fn), or build the sampler with missing_graph='random'"
            )
        p, need = self.num_classes, self.classes_per_batch - 1
        rng = self._rng(epoch, 2)
        out = np.empty((p, need), dtype=np.int64)
        for i in range(p):
            pick = rng.choice(p - 1, size=need, replace=False)
            out[i] = pick + (pick >= i)  # skip self
        return out

    # ----------------------------------------------------------------- plan
    def class_plan(self, epoch: int | None = None) -> np.ndarray:
        """int64 ``[P, C]``: class positions of every batch of ``epoch``, anchor first."""
        epoch = self.epoch if epoch is None else int(epoch)
        neighbours = self._neighbours(epoch)
        anchors = self._rng(epoch, 0).permutation(self.num_classes)
        return np.concatenate([anchors[:, None], neighbours[anchors]], axis=1)

    def _plan(self, epoch: int) -> np.ndarray:
        """Global index plan of ``epoch``: int64 ``[P, C, K]`` (cached per epoch and graph)."""
        has_graph = self._graph is not None and self._graph_epoch == epoch
        key = (self.seed, epoch, self._graph_version if has_graph else -1)
        if self._plan_cache is not None and self._plan_cache[0] == key:
            return self._plan_cache[1]
        k = self.num_instances
        groups = self.class_plan(epoch)  # [P, C]
        rng = self._rng(epoch, 3)
        flat = groups.reshape(-1)
        uses = np.bincount(flat, minlength=self.num_classes)
        rows = []
        for c in range(self.num_classes):
            u = int(uses[c])
            s, n = int(self._starts[c]), int(self._counts[c])
            idx = self._order[s : s + n]
            if n >= k:
                per_cycle = n // k
                cycles = -(-u // per_cycle)
                perms = rng.permuted(np.broadcast_to(idx, (cycles, n)), axis=1)
                rows.append(perms[:, : per_cycle * k].reshape(-1, k)[:u])
            else:
                fill = rng.choice(idx, size=(u, k - n), replace=True)
                full = np.concatenate([np.broadcast_to(idx, (u, n)), fill], axis=1)
                rows.append(rng.permuted(full, axis=1))
        # Rows are in class order; a stable sort of the plan's class slots puts each class's
        # uses in plan order, so a class's images are consumed as batches come.
        plan = np.empty((flat.size, k), dtype=np.int64)
        plan[np.argsort(flat, kind="stable")] = np.concatenate(rows, axis=0)
        plan = plan.reshape(self.num_batches, self.classes_per_batch, k)
        self._plan_cache = (key, plan)
        return plan

    def state_dict(self) -> dict[str, Any]:
        """:meth:`EpochPlanSampler.state_dict` plus ``graph_epoch`` and ``graph``, the int64
        ``[P, C-1]`` nearest-class tensor (or None), so a resumed epoch replays exactly."""
        graph = None if self._graph is None else torch.from_numpy(self._graph.copy())
        return {**super().state_dict(), "graph_epoch": self._graph_epoch, "graph": graph}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next iteration yields the epoch's remaining indices.
        A state without a graph clears the graph (set one before iterating)."""
        super().load_state_dict(state)
        graph = state.get("graph")
        if graph is None:
            self._graph, self._graph_epoch = None, None
            self._graph_version += 1
        else:
            graph_epoch = state.get("graph_epoch")
            self.set_graph(
                torch.as_tensor(graph), epoch=self.epoch if graph_epoch is None else graph_epoch
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(classes={self.num_classes}, C={self.classes_per_batch}, "
            f"K={self.num_instances}, rank={self.rank}/{self.num_replicas}, seed={self.seed}, "
            f"epoch={self.epoch}, graph_epoch={self._graph_epoch})"
        )
