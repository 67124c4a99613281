"""Per-dataset evaluation protocols: Market-style, VeRi-776, classic CUHK03 and VehicleID.

A protocol turns distances plus identity labels into metrics (``docs/evaluation.md`` §2). Two
kinds exist, told apart by the class attribute ``pooled``:

* :class:`QueryGalleryProtocol` (``pooled = False``): the dataset has fixed query and gallery
  sets. Call ``evaluate(distance, query_pids, query_camids, gallery_pids, gallery_camids)`` with a
  ``Tensor[Q, G]`` or a chunk callable ``(start, stop) -> Tensor[stop - start, G]`` over queries,
  exactly like :func:`~reidgen.eval.ranking.evaluate_ranking`. :class:`MarketProtocol`,
  :class:`VeRiProtocol` and :class:`CUHK03ClassicProtocol` are of this kind.
* :class:`PooledProtocol` (``pooled = True``): the dataset has one test pool and the protocol
  draws query and gallery from it itself (VehicleID). Call ``evaluate_all(distance, pids)`` with
  the distance among *all* pool samples: a ``Tensor[N, N]`` or a callable
  ``(start, stop) -> Tensor[stop - start, N]`` over pool rows. A caller that holds the pool as
  query + gallery concatenates both sides first, e.g.
  ``protocol.evaluate_all(chunked_distance(features, features), pids)``.

Every random draw is seeded: a protocol built with the same ``seed`` gives the same numbers on
every run, device, chunk size and torch version, because the draws come from an integer hash of
``(seed, repeat, sample index)`` rather than from a stateful generator (whose stream would depend
on how the work is chunked and on the device).

Constructors take plain values only, so configs build protocols with Hydra ``_target_``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from reidgen.eval.ranking import JUNK_PID, DistanceFn, IdArray, evaluate_ranking

Distance = Tensor | DistanceFn
"""A ``[rows, columns]`` distance matrix, or a callable computing it a chunk of rows at a time."""

DEFAULT_RANKS: tuple[int, ...] = (1, 5, 10, 20)

_MASK32 = 0xFFFFFFFF
# Odd (so the multiplication is a bijection modulo 2**32) and below 2**31, so a 32-bit value times
# it stays below 2**63: the hash below never overflows int64 on any device.
_MIX = 0x45D9F3B


class _Protocol(abc.ABC):
    """What every protocol shares: the reported CMC ranks and the chunk size."""

    pooled: ClassVar[bool]

    def __init__(self, ranks: Sequence[int] = DEFAULT_RANKS, chunk_size: int = 256) -> None:
        # Hydra hands lists over as ListConfig; store a plain tuple of ints.
        self.ranks = tuple(int(k) for k in ranks)
        self.chunk_size = int(chunk_size)
        if not self.ranks or min(self.ranks) < 1:
            raise ValueError(f"ranks must be positive integers, got {self.ranks}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class QueryGalleryProtocol(_Protocol):
    """A protocol for datasets with fixed query and gallery sets."""

    pooled = False

    @abc.abstractmethod
    def evaluate(
        self,
        distance: Distance,
        query_pids: IdArray,
        query_camids: IdArray,
        gallery_pids: IdArray,
        gallery_camids: IdArray,
    ) -> dict[str, float]:
        """Metrics of a query-gallery distance (see the module docstring for ``distance``).

        :returns: ``rank{k}`` per k in ``ranks``, ``mAP`` and ``mINP`` in percent, and the counts
            ``num_valid_queries`` and ``num_skipped_queries``.
        """


class PooledProtocol(_Protocol):
    """A protocol that draws its own query and gallery sets from one test pool."""

    pooled = True

    @abc.abstractmethod
    def evaluate_all(self, distance: Distance, pids: IdArray) -> dict[str, float]:
        """Metrics from the ``[N, N]`` distance among all pool samples and their ``[N]`` pids."""


class MarketProtocol(QueryGalleryProtocol):
    """Market-1501 protocol, also used by DukeMTMC-reID, MSMT17 and CUHK03-NP.

    Per query: gallery items of the same pid *and* camera are removed, junk (pid -1) is removed,
    distractors (pid 0) stay as negatives, queries without a positive are skipped. This is
    :func:`~reidgen.eval.ranking.evaluate_ranking` as a configurable object.
    """

    def evaluate(
        self,
        distance: Distance,
        query_pids: IdArray,
        query_camids: IdArray,
        gallery_pids: IdArray,
        gallery_camids: IdArray,
    ) -> dict[str, float]:
        return evaluate_ranking(
            distance,
            query_pids,
            query_camids,
            gallery_pids,
            gallery_camids,
            chunk_size=self.chunk_size,
            ranks=self.ranks,
        )


class VeRiProtocol(MarketProtocol):
    """VeRi-776 image-to-image protocol: the Market rule, stated for vehicles.

    The official VeRi junk list (``jk_index.txt``) holds, per query, the test images of the
    *same vehicle seen by the same camera*; they are ignored, i.e. neither positive nor negative.
    That is exactly the Market same-pid-same-camera removal, which is why this class only
    renames :class:`MarketProtocol` (the peer toolboxes also use the Market rule and ignore the
    index files). Positives are the same vehicle from another camera; AP is non-interpolated,
    as everywhere in reidgen. Report mAP, rank-1 and rank-5.
    """


class CUHK03ClassicProtocol(QueryGalleryProtocol):
    """Classic CUHK03 single-gallery-shot protocol with repeated random galleries.

    Per query (as torchreid's ``eval_cuhk03``):

    1. remove gallery items of the same pid and camera, and junk (pid -1), as in the Market rule;
       a query with no positive left is skipped;
    2. CMC: in each of ``repeats`` rounds keep *one* random image of every gallery identity among
       the remaining items (distractor pid 0 counts as one identity, as in torchreid), and take
       the rank of the query's first (= only) positive in that reduced list; a rank-k value is
       the fraction of (valid query, round) pairs that hit within the top k, i.e. the mean of the
       per-query CMC curves averaged over the rounds;
    3. mAP and mINP: on the full kept list of step 1, not on a sampled one (torchreid does the
       same; classic CUHK03 papers report CMC only).

    The draw is per query and per round, from the kept items, so a query never loses its
    positive to the sampling. Choices are seeded by ``(seed, round, query position)`` via
    :func:`sampling_keys` and are identical for any chunk size and device; see
    :meth:`sampled_gallery` for the draw itself.
    """

    def __init__(
        self,
        repeats: int = 10,
        seed: int = 0,
        ranks: Sequence[int] = DEFAULT_RANKS,
        chunk_size: int = 256,
    ) -> None:
        super().__init__(ranks, chunk_size)
        self.repeats, self.seed = _draw_settings(repeats, seed)

    def evaluate(
        self,
        distance: Distance,
        query_pids: IdArray,
        query_camids: IdArray,
        gallery_pids: IdArray,
        gallery_camids: IdArray,
    ) -> dict[str, float]:
        q_pids, q_cams = _ids(query_pids), _ids(query_camids)
        g_pids, g_cams = _ids(gallery_pids), _ids(gallery_camids)
        num_q, num_g = len(q_pids), len(g_pids)
        _check_lengths(q_pids, q_cams, g_pids, g_cams)
        if isinstance(distance, Tensor) and distance.shape != (num_q, num_g):
            raise ValueError(
                f"distance has shape {tuple(distance.shape)}, expected {(num_q, num_g)}"
            )
        group = torch.unique(g_pids, return_inverse=True)[1]  # [G] dense gallery identity

        first_hits: list[Tensor] = []  # [valid, repeats] per chunk
        ap_sum = inp_sum = 0.0
        num_valid = 0
        for start in range(0, num_q, self.chunk_size):
            stop = min(start + self.chunk_size, num_q)
            chunk = _rows(distance, start, stop, num_g)
            device = chunk.device
            qp, qc = q_pids[start:stop].to(device), q_cams[start:stop].to(device)
            gp, gc, gg = g_pids.to(device), g_cams.to(device), group.to(device)
            kept, same_pid = _kept(qp, qc, gp, gc)
            valid = (same_pid & kept).any(dim=1)
            count = int(valid.sum())
            if count == 0:
                continue
            chunk, qp, qc = chunk[valid], qp[valid], qc[valid]
            kept, same_pid = kept[valid], same_pid[valid]
            query_index = torch.arange(start, stop, device=device)[valid]

            # mAP / mINP on the full kept list are the Market numbers of these queries; only
            # valid rows are passed, so evaluate_ranking skips none and cannot raise.
            market = evaluate_ranking(chunk, qp, qc, gp, gc, chunk_size=count, ranks=(1,))
            ap_sum += market["mAP"] * count
            inp_sum += market["mINP"] * count
            num_valid += count

            order = torch.sort(chunk, dim=1, stable=True).indices  # [C, G]
            hits = []
            for repeat in range(self.repeats):
                chosen = _single_shot(self.seed, repeat, query_index, kept, gg)
                chosen_sorted = chosen.gather(1, order)
                positive_sorted = (chosen & same_pid).gather(1, order)  # one True per row
                rank = chosen_sorted.cumsum(dim=1)  # 1-based rank within the sampled list
                hits.append(torch.where(positive_sorted, rank, num_g + 1).amin(dim=1))
            first_hits.append(torch.stack(hits, dim=1).cpu())

        if num_valid == 0:
            raise ValueError(f"none of the {num_q} queries has a positive in the gallery")
        first_hit = torch.cat(first_hits)  # [valid, repeats]
        metrics: dict[str, float] = {
            f"rank{k}": 100.0 * (first_hit <= k).double().mean().item() for k in self.ranks
        }
        metrics["mAP"] = ap_sum / num_valid
        metrics["mINP"] = inp_sum / num_valid
        metrics["num_valid_queries"] = num_valid
        metrics["num_skipped_queries"] = num_q - num_valid
        return metrics

    def sampled_gallery(
        self,
        repeat: int,
        query_index: IdArray,
        query_pids: IdArray,
        query_camids: IdArray,
        gallery_pids: IdArray,
        gallery_camids: IdArray,
    ) -> Tensor:
        """The gallery that round ``repeat`` keeps for each of the given queries.

        :param repeat: the round, ``0 <= repeat < repeats``.
        :param query_index: ``[C]`` positions of the queries in the full query list (the draw
            depends on the position, not on how the queries are chunked).
        :param query_pids, query_camids: ``[C]`` ids of those queries.
        :param gallery_pids, gallery_camids: ``[G]`` ids of the whole gallery.

        :returns: ``Tensor[C, G]`` bool: one kept gallery item per (query, gallery identity that
            has a kept item), False elsewhere.
        """
        q_pids, q_cams = _ids(query_pids), _ids(query_camids)
        g_pids, g_cams = _ids(gallery_pids), _ids(gallery_camids)
        _check_lengths(q_pids, q_cams, g_pids, g_cams)
        kept, _ = _kept(q_pids, q_cams, g_pids, g_cams)
        group = torch.unique(g_pids, return_inverse=True)[1]
        return _single_shot(self.seed, repeat, _ids(query_index), kept, group)


class VehicleIDProtocol(PooledProtocol):
    """VehicleID protocol: one random gallery image per vehicle, all others are queries.

    VehicleID has no camera labels and no query/gallery split. For each test list (800, 1600,
    2400 vehicles; build one protocol run per list), in each of ``repeats`` rounds:

    1. every vehicle puts one image, drawn at random, into the gallery (gallery size = number of
       vehicles); every other image is a query;
    2. the queries are ranked against that gallery with nothing removed (no camera rule, every
       gallery image of another vehicle is a negative, the one of the same vehicle the only
       positive), giving CMC, mAP and mINP;

    and the metrics are averaged over the rounds (each round has the same number of queries, so
    this equals pooling the queries of all rounds). Vehicles with one image only sit in the gallery
    as negatives for everybody else. Rank-1 and rank-5 are the usually reported numbers.

    The draw of round ``r`` depends only on ``(seed, r, sample position in the pool)``; see
    :meth:`splits`.
    """

    def __init__(
        self,
        repeats: int = 10,
        seed: int = 0,
        ranks: Sequence[int] = DEFAULT_RANKS,
        chunk_size: int = 256,
    ) -> None:
        super().__init__(ranks, chunk_size)
        self.repeats, self.seed = _draw_settings(repeats, seed)

    def splits(self, pids: IdArray) -> list[tuple[Tensor, Tensor]]:
        """The query and gallery positions of every round.

        :param pids: ``[N]`` vehicle ids of the pool, in the order of the distance rows.

        :returns: ``repeats`` pairs ``(query_index, gallery_index)`` of sorted int64 positions
            into the pool; the gallery holds exactly one position per distinct pid, the queries
            all others.
        """
        pids = _ids(pids)
        num = len(pids)
        group = torch.unique(pids, return_inverse=True)[1]
        num_groups = int(group.max()) + 1 if num else 0
        position = torch.arange(num)
        result = []
        for repeat in range(self.repeats):
            keys = sampling_keys(self.seed, repeat, torch.zeros(1, dtype=torch.long), num)[0]
            best = torch.full((num_groups,), -1, dtype=torch.long)
            best = best.scatter_reduce(0, group, keys, reduce="amax")
            is_gallery = keys == best[group]  # keys are distinct, so one winner per vehicle
            result.append((position[~is_gallery], position[is_gallery]))
        return result

    def evaluate_all(self, distance: Distance, pids: IdArray) -> dict[str, float]:
        """Metrics averaged over the rounds.

        :param distance: the distance among all pool samples, ``Tensor[N, N]``, or a callable
            ``(start, stop) -> Tensor[stop - start, N]`` of pool rows ``start:stop``. It is
            asked for consecutive blocks of ``chunk_size`` rows, each block once: every
            round takes its query rows and gallery columns from the same block, so the
            distances are computed once, not once per round.
        :param pids: ``[N]`` vehicle ids (any integers; they are only compared for equality).

        :returns: ``rank{k}``, ``mAP``, ``mINP`` (percent, mean over rounds), ``num_valid_queries``
            (queries per round), ``num_skipped_queries`` (always 0) and ``num_gallery``
            (vehicles).

        :raises ValueError: if the shapes disagree, or every vehicle has a single image (no
            queries).
        """
        pids = _ids(pids)
        num = len(pids)
        if isinstance(distance, Tensor) and distance.shape != (num, num):
            raise ValueError(f"distance has shape {tuple(distance.shape)}, expected {(num, num)}")
        splits = self.splits(pids)
        num_queries = num - len(splits[0][1])
        if num_queries == 0:
            raise ValueError("every vehicle has a single image: there are no queries")
        # Dense labels >= 0: a raw id of -1 would otherwise be read as Market junk.
        labels = torch.unique(pids, return_inverse=True)[1]
        is_query = torch.ones(len(splits), num, dtype=torch.bool)  # [rounds, N]
        for r, (_, gallery_index) in enumerate(splits):
            is_query[r, gallery_index] = False

        keys = [f"rank{k}" for k in self.ranks] + ["mAP", "mINP"]
        sums = torch.zeros(len(splits), len(keys), dtype=torch.float64)  # per round, x queries
        for start in range(0, num, self.chunk_size):
            stop = min(start + self.chunk_size, num)
            block = _rows(distance, start, stop, num)
            device = block.device
            for r, (_, gallery_index) in enumerate(splits):
                rows = is_query[r, start:stop].nonzero().flatten()
                if len(rows) == 0:
                    continue
                query_index = rows + start
                # Every query has exactly one positive (its vehicle's gallery image) and nothing
                # is removed: the two sides get different camera ids.
                metrics = evaluate_ranking(
                    block[rows.to(device)][:, gallery_index.to(device)],
                    labels[query_index],
                    torch.zeros(len(rows), dtype=torch.long),
                    labels[gallery_index],
                    torch.ones(len(gallery_index), dtype=torch.long),
                    chunk_size=len(rows),
                    ranks=self.ranks,
                )
                sums[r] += torch.tensor([metrics[k] for k in keys], dtype=torch.float64) * len(rows)
        # Each round's means over its queries, then the mean over rounds.
        means = (sums / num_queries).mean(dim=0)
        result: dict[str, float] = {k: means[i].item() for i, k in enumerate(keys)}
        result["num_valid_queries"] = num_queries
        result["num_skipped_queries"] = 0
        result["num_gallery"] = len(splits[0][1])
        return result


def _draw_settings(repeats: int, seed: int) -> tuple[int, int]:
    """Validated ``(repeats, seed)`` of a protocol that averages over seeded random draws."""
    if int(repeats) < 1:
        raise ValueError(f"repeats must be positive, got {int(repeats)}")
    return int(repeats), int(seed)


def sampling_keys(seed: int, repeat: int, rows: Tensor, num_columns: int) -> Tensor:
    """Seeded pseudo-random integer keys, one per (row, column), for "pick one at random" draws.

    The key of ``(row, column)`` is an integer hash of ``(seed, repeat, row, column)``: drawing
    the item with the largest key among a group's candidates is a uniform choice that depends on
    nothing else (not on chunking, device or library version). Within a row the keys are distinct,
    because for a fixed row the hash is a bijection of the column over 32-bit integers.

    :param seed: any integer (its low 32 bits are used).
    :param repeat: the round (its low 32 bits are used).
    :param rows: ``[R]`` int64 row numbers, e.g. query positions; their device is used.
    :param num_columns: C, the number of columns (< 2**31).

    :returns: ``Tensor[R, C]`` int64 keys in ``[0, 2**32)``.
    """
    base = _mix32(torch.tensor(seed & _MASK32, dtype=torch.long, device=rows.device))
    base = _mix32(base ^ (repeat & _MASK32))
    row_keys = _mix32(base ^ (rows.long() & _MASK32))  # [R]
    columns = torch.arange(num_columns, device=rows.device)
    return _mix32(row_keys[:, None] ^ columns[None, :])


def _mix32(x: Tensor) -> Tensor:
    """A bijective 32-bit integer hash (xor-shift-multiply rounds) on int64 values < 2**32."""
    x = ((x >> 16) ^ x) * _MIX & _MASK32
    x = ((x >> 16) ^ x) * _MIX & _MASK32
    return (x >> 16) ^ x


def _single_shot(
    seed: int, repeat: int, query_index: Tensor, kept: Tensor, group: Tensor
) -> Tensor:
    """One random kept gallery item per (query, gallery identity): ``[C, G]`` bool."""
    num_c, num_g = kept.shape
    keys = sampling_keys(seed, repeat, query_index.to(kept.device), num_g)
    keys = torch.where(kept, keys, -1)  # removed items never win
    groups = group.expand(num_c, num_g)
    best = torch.full((num_c, int(group.max()) + 1), -1, dtype=torch.long, device=kept.device)
    best = best.scatter_reduce(1, groups, keys, reduce="amax")  # [C, identities]
    return kept & (keys == best.gather(1, groups))


def _kept(q_pids: Tensor, q_cams: Tensor, g_pids: Tensor, g_cams: Tensor) -> tuple[Tensor, Tensor]:
    """Market rule: ``kept [C, G]`` (not same pid + camera, not junk) and ``same_pid [C, G]``."""
    same_pid = g_pids[None, :] == q_pids[:, None]
    removed = (same_pid & (g_cams[None, :] == q_cams[:, None])) | (g_pids == JUNK_PID)[None, :]
    return ~removed, same_pid


def _rows(distance: Distance, start: int, stop: int, num_columns: int) -> Tensor:
    chunk = distance[start:stop] if isinstance(distance, Tensor) else distance(start, stop)
    if chunk.shape != (stop - start, num_columns):
        raise ValueError(
            f"distance({start}, {stop}) has shape {tuple(chunk.shape)}, "
            f"expected {(stop - start, num_columns)}"
        )
    return chunk


def _ids(ids: IdArray) -> Tensor:
    return torch.as_tensor(ids, dtype=torch.long).reshape(-1)


def _check_lengths(q_pids: Tensor, q_cams: Tensor, g_pids: Tensor, g_cams: Tensor) -> None:
    if len(q_cams) != len(q_pids) or len(g_cams) != len(g_pids):
        raise ValueError("pids and camids must have the same length on each side")
