"""Identity (P x K) samplers for metric-learning batches, seeded and DDP-aware.

A P x K batch holds ``P`` identities with ``K`` images each, which is what batch-hard triplet and
similar losses need. :class:`RandomIdentitySampler` plans every epoch deterministically from
``(seed, epoch)`` alone, so

* ``len(sampler)`` is exact and known before iterating (it depends only on the labels, so it is
  the same for every epoch, which Lightning needs because it reads the length once);
* every DDP rank computes the same global plan and keeps its own slice of whole identity groups,
  with no communication;
* a run resumed from :meth:`RandomIdentitySampler.state_dict` continues mid-epoch with exactly the
  indices it would have produced without the interruption.

Wiring into Lightning (the integrator's side): give the ``DataLoader``
``batch_size=sampler.per_rank_batch_size, sampler=sampler`` (``drop_last`` is irrelevant, the
length is a multiple of the batch) and build the ``Trainer`` with ``use_distributed_sampler=False``;
otherwise Lightning wraps the sampler in a ``DistributedSampler`` that splits each batch again.
Lightning calls :meth:`RandomIdentitySampler.set_epoch` itself at the start of every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reidgen.data.samplers.base import EpochPlanSampler, label_array, resolve_replicas

__all__ = ["RandomIdentitySampler", "max_full_batches"]


def max_full_batches(chunk_counts: Sequence[int] | np.ndarray, ids_per_batch: int) -> int:
    """The largest number ``B`` of batches of ``ids_per_batch`` *distinct* identities.

    Identity ``i`` can contribute at most one chunk to each batch and has ``chunk_counts[i]``
    chunks, so ``B`` batches are possible iff ``sum_i min(c_i, B) >= P * B``. The left side minus
    the right is concave in ``B`` and 0 at ``B = 0``, so the feasible ``B`` form an interval
    ``[0, B*]``, found here by bisection.
    """
    counts = np.asarray(chunk_counts, dtype=np.int64)
    if ids_per_batch <= 0:
        raise ValueError(f"ids_per_batch must be positive, got {ids_per_batch}")
    lo, hi = 0, int(counts.sum()) // ids_per_batch
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(np.minimum(counts, mid).sum()) >= ids_per_batch * mid:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _top_by_key(candidates: np.ndarray, keys: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` candidates with the largest ``keys``, largest first (O(n) partition + m log m)."""
    if m <= 0:
        return candidates[:0]
    cand_keys = -keys[candidates]
    if m < len(candidates):
        part = np.argpartition(cand_keys, m - 1)[:m]
        candidates, cand_keys = candidates[part], cand_keys[part]
    return candidates[np.argsort(cand_keys, kind="stable")]


class RandomIdentitySampler(EpochPlanSampler):
    """Yields dataset indices that form P x K identity batches; seeded, exact length, DDP-aware.

    :param labels: training identity of every dataset item, ``labels[i]`` for index ``i`` (length
        N). Any integers; identities are processed in sorted order, so the plan never depends on
        set/dict iteration order.
    :param num_instances: ``K``, images per identity in a batch.
    :param batch_size: the GLOBAL batch over all ranks, ``P * K``; ``P = batch_size // K``.
    :param seed: base seed; the plan of an epoch is a pure function of ``(seed, epoch)``.
    :param num_replicas, rank: DDP world size and this process's rank; default to the initialised
        ``torch.distributed`` process group, else 1 and 0.
    :param domains: domain of every dataset item (length N), used when ``domain_balanced``.
    :param domain_balanced: every global batch takes ``P / D`` identities from each of the ``D``
        domains (for multi-source training).
    :param batches_per_epoch: a fixed epoch length in global batches (fast-reid's
        ``iters_per_epoch``, DomainMix's 2000 iterations), for training sets whose size changes
        from epoch to epoch (pseudo labels). The epoch is then consecutive plans, each made as
        below from the same epoch's random stream, cut at that many batches. None: one plan.

    Epoch plan (global, identical on every rank):

    1. every identity's images are shuffled and cut into chunks of ``K``. A short last chunk is
       completed with other images of the same identity drawn without replacement; an identity
       with fewer than ``K`` images gives one chunk holding all its images plus draws *with*
       replacement. So an identity with ``n`` images has ``max(1, ceil(n / K))`` chunks and
       every image is in some chunk;
    2. chunks are grouped into batches of ``P`` distinct identities. The number of batches is
       the maximum possible, ``B = max_full_batches(chunk counts, P)``: it depends only on the
       labels, so ``len`` is known up front and is the same for every epoch. Each batch picks its
       identities at random, weighted by how many chunks they have left (like drawing from the
       shuffled list of chunks), except that identities with as many chunks left as there are
       batches left are taken first when needed to keep ``B`` reachable. Chunks that do not fit
       are dropped: fewer than ``P`` when no identity has more than ``B`` chunks (the usual
       "drop the incomplete last batch"), more when a few identities dominate the data, which
       no P x K batching could place;
    3. global batch ``b`` is ``P`` groups ``[g_0, ..., g_{P-1}]`` of ``K`` indices; rank ``r``
       takes the whole groups ``g_{r*P/R}, ..., g_{(r+1)*P/R - 1}``. Each rank therefore yields
       ``per_rank_batch_size = batch_size // R`` indices per batch and the ranks' batches are
       disjoint identity groups whose union is the global batch.

    With ``domain_balanced`` step 2 runs per domain with ``P / D`` identities per batch and
    ``B`` the minimum over domains; the domains' groups are interleaved (``d0, d1, ..., d0, d1,
    ...``), so each rank's slice is also balanced whenever ``(P / R) % D == 0``.

    Length and position: ``len(sampler) == B * per_rank_batch_size``, the number of indices
    a fresh epoch yields on this rank. ``__iter__`` starts at ``position`` (0 unless restored by
    :meth:`load_state_dict`) and advances ``position`` by one for every index it yields; after a
    mid-epoch restore the first iteration therefore yields ``len(sampler) - position`` indices
    (Lightning restores its own batch counter and expects exactly that). When an iteration runs
    to the end, ``position`` goes back to 0 so that iterating again without :meth:`set_epoch`
    repeats the epoch, like ``DistributedSampler``. Note that ``position`` counts indices
    handed to the ``DataLoader``, which prefetches: for an exact resume store
    ``batches_trained_this_epoch * per_rank_batch_size`` as ``position`` instead.

    Shapes: the epoch plan is an int64 array ``[B, P, K]``; this rank iterates over its
    ``[B, P / R, K]`` slice flattened in C order.
    """

    def __init__(
        self,
        labels: Sequence[int],
        num_instances: int = 4,
        batch_size: int = 64,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        domains: Sequence[int] | None = None,
        domain_balanced: bool = False,
        batches_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be positive or None, got {batches_per_epoch}")
        num_replicas, rank = resolve_replicas(num_replicas, rank, num_instances, batch_size)

        label_arr = label_array(labels)

        self.num_instances = int(num_instances)
        self.batch_size = int(batch_size)
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = int(seed)
        self.domain_balanced = bool(domain_balanced)
        self.num_identities_per_batch = self.batch_size // self.num_instances  # P
        self.per_rank_batch_size = self.batch_size // self.num_replicas
        self._groups_per_rank = self.num_identities_per_batch // self.num_replicas  # P / R

        # Group dataset indices by identity. A stable sort keeps each identity's indices in
        # dataset order, and np.unique returns the identities sorted, so the grouping is a pure
        # function of `labels`.
        order = np.argsort(label_arr, kind="stable")
        pids, starts, counts = np.unique(label_arr[order], return_index=True, return_counts=True)
        self._pid_indices: list[np.ndarray] = [
            order[s : s + c] for s, c in zip(starts.tolist(), counts.tolist(), strict=True)
        ]
        self._pids = pids
        # An identity with n images always gives max(1, ceil(n / K)) chunks, whatever the shuffle.
        chunk_counts = np.maximum(1, -(-counts // self.num_instances))

        # Domain of each identity; domain groups are lists of positions into self._pids.
        if self.domain_balanced:
            if domains is None:
                raise ValueError("domain_balanced=True needs `domains` (one per label)")
            domain_arr = np.asarray(domains, dtype=np.int64)
            if domain_arr.shape != label_arr.shape:
                raise ValueError(
                    f"domains must have one entry per label: {domain_arr.shape} vs "
                    f"{label_arr.shape}"
                )
            pid_domain = np.empty(len(pids), dtype=np.int64)
            for i, idx in enumerate(self._pid_indices):
                d = np.unique(domain_arr[idx])
                if d.size != 1:
                    raise ValueError(
                        f"identity {pids[i]} appears in several domains {d.tolist()}; relabel "
                        "identities per (dataset, pid) before sampling"
                    )
                pid_domain[i] = d[0]
            domain_ids = np.unique(pid_domain)  # sorted
            if self.num_identities_per_batch % len(domain_ids) != 0:
                raise ValueError(
                    f"domain_balanced needs P = batch_size // num_instances "
                    f"({self.num_identities_per_batch}) divisible by the number of domains "
                    f"({len(domain_ids)})"
                )
            self._groups = [np.flatnonzero(pid_domain == d) for d in domain_ids.tolist()]
            self.domain_ids: list[int] = domain_ids.tolist()
        else:
            self._groups = [np.arange(len(pids))]
            self.domain_ids = []
        self._ids_per_group = self.num_identities_per_batch // len(self._groups)

        # Batches of one plan (step 2); the epoch has num_batches of them.
        self._plan_batches = min(
            max_full_batches(chunk_counts[g], self._ids_per_group) for g in self._groups
        )
        if self._plan_batches == 0:
            detail = (
                f"each of the {len(self._groups)} domains needs at least "
                f"{self._ids_per_group} identities"
                if self.domain_balanced
                else f"{len(pids)} identities < P = {self.num_identities_per_batch}"
            )
            raise ValueError(f"not a single P x K batch can be formed: {detail}")
        self.num_batches = batches_per_epoch or self._plan_batches

        self.epoch = 0
        self._position = 0  # indices already yielded on this rank in the current epoch
        self._plan_cache: tuple[tuple[int, int], np.ndarray] | None = None

    # ------------------------------------------------------------------ plan
    def _rng(self, epoch: int) -> np.random.Generator:
        # SeedSequence mixes (seed, epoch) into independent streams; masking makes negative
        # seeds valid entropy without colliding with small positive ones in practice.
        return np.random.default_rng(np.random.SeedSequence([self.seed & (2**64 - 1), epoch]))

    def _chunks(self, rng: np.random.Generator, pid_pos: int) -> list[np.ndarray]:
        """Shuffled K-chunks (each int64 ``[K]``) of one identity's dataset indices."""
        k = self.num_instances
        idx = rng.permutation(self._pid_indices[pid_pos])
        n = len(idx)
        if n < k:
            # All images once, the rest drawn with replacement: small identities still fill K.
            return [np.concatenate([idx, rng.choice(idx, size=k - n, replace=True)])]
        chunks = [idx[i : i + k] for i in range(0, n - n % k, k)]
        if n % k:
            rest = idx[n - n % k :]
            # Complete the short chunk with distinct *other* images so no image repeats in it.
            fill = rng.choice(idx[: n - n % k], size=k - len(rest), replace=False)
            chunks.append(np.concatenate([rest, fill]))
        # Shuffle the chunk order too, so that which chunk is dropped when an identity has more
        # chunks than batches (or is used first) does not depend on the padding.
        return [chunks[j] for j in rng.permutation(len(chunks)).tolist()]

    def _group_plan(self, rng: np.random.Generator, members: np.ndarray) -> np.ndarray:
        """Plan of one identity group (all identities, or one domain): int64 ``[B, P_g, K]``.

        Why the batch count ``B`` is always reached: with ``left`` batches to go and ``c_i``
        chunks left, feasibility is ``F = sum_i min(c_i, left) - P_g * left >= 0`` (true at the
        start by the choice of ``B``). Call identity ``i`` saturated if ``c_i >= left`` (``M`` of
        them). After one batch, ``left`` drops by one, so every saturated identity's term drops
        by one whether or not it was picked, and an unsaturated one's only if it was picked.
        ``F`` stays ``>= 0`` iff the batch picks at most ``quota = P_g + F - M`` unsaturated
        identities. ``quota >= P_g - M`` (enough saturated ones fill the rest) and
        ``quota >= 0`` (if ``M > P_g`` then ``F >= M - P_g``), and there are always enough
        candidates, so the constrained draw below never runs dry.
        """
        per_batch = self._ids_per_group
        chunks = [self._chunks(rng, int(p)) for p in members]
        remaining = np.array([len(c) for c in chunks], dtype=np.int64)
        plan = np.empty((self._plan_batches, per_batch, self.num_instances), dtype=np.int64)
        for b in range(self._plan_batches):
            left = self._plan_batches - b  # batches still to fill, this one included
            saturated = remaining >= left
            n_sat = int(saturated.sum())
            # At most `quota` unsaturated picks keep the remaining batches feasible (docstring).
            slack = int(np.minimum(remaining, left).sum()) - per_batch * left
            quota = per_batch + slack - n_sat
            # Weighted random order without replacement (Efraimidis-Spirakis keys): identities
            # with more chunks left come earlier, as when drawing from the shuffled chunk list.
            # The batch is the first `per_batch` identities of that order once unsaturated ones
            # beyond the first `quota` are skipped, i.e. the top of (saturated + top-`quota`
            # unsaturated) by key.
            keys = np.full(len(remaining), -np.inf)
            alive = remaining > 0
            keys[alive] = np.log(rng.random(int(alive.sum()))) / remaining[alive]
            unsat = np.flatnonzero(alive & ~saturated)
            candidates = np.concatenate(
                [np.flatnonzero(saturated), _top_by_key(unsat, keys, max(quota, 0))]
            )
            picked = _top_by_key(candidates, keys, per_batch)
            if len(picked) != per_batch:  # cannot happen (docstring); fail loudly if it does
                raise RuntimeError(f"identity plan infeasible at batch {b}: {len(picked)} ids")
            for slot, i in enumerate(picked.tolist()):
                remaining[i] -= 1
                plan[b, slot] = chunks[i][remaining[i]]  # chunks are shuffled; pop from the end
        return plan

    def _plan(self, epoch: int) -> np.ndarray:
        """Global plan of ``epoch``: int64 ``[B, P, K]`` dataset indices (cached per epoch)."""
        key = (self.seed, epoch)
        if self._plan_cache is not None and self._plan_cache[0] == key:
            return self._plan_cache[1]
        rng = self._rng(epoch)
        plans, planned = [], 0
        while planned < self.num_batches:
            parts = [self._group_plan(rng, g) for g in self._groups]  # D x [B, P/D, K]
            # Interleave domains group by group: [B, D, P/D, K] -> [B, P/D, D, K] -> [B, P, K].
            plans.append(
                np.stack(parts, axis=1)
                .transpose(0, 2, 1, 3)
                .reshape(self._plan_batches, -1, self.num_instances)
            )
            planned += self._plan_batches
        plan = np.concatenate(plans)[: self.num_batches]
        self._plan_cache = (key, plan)
        return plan

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(P={self.num_identities_per_batch}, K={self.num_instances}, "
            f"batches={self.num_batches}, rank={self.rank}/{self.num_replicas}, "
            f"domain_balanced={self.domain_balanced}, seed={self.seed}, epoch={self.epoch})"
        )
