"""One epoch's pseudo labels (DomainMix's settings) at MSMT17 size: time and peak memory.

Target on 2 CPU cores (issue 15): the whole step, k-nearest neighbours, Jaccard distance, three
DBSCANs (eps 0.58, 0.6, 0.62) and the reliability criteria, on 32,621 x 2048-d features (MSMT17
train + val) in at most 60 s and 3 GB peak; the official code holds several dense [N, N] matrices
(about 30 GB at this size). Features are random but clustered (identities of about 31 samples, as
MSMT17's 1,041 training identities), float32.

Method. Each case runs in its own subprocess, so its peak memory is that process's ``ru_maxrss``
(features, Python and torch included; the features-only baseline is printed too). Ours is
:class:`reidgen.clustering.pseudo_labels.PseudoLabeller`. The reference, on a subset it can hold,
computes the same definition densely as the official code does: the [N, N] distance and encoding
matrices, the Jaccard distance one row at a time over the columns each row uses, DBSCAN on the
dense matrix and the reliability IoUs from [N, N] label-equality matrices; both label the subset,
the labels are compared and the time and memory ratios printed.

    python benchmarks/bench_clustering.py [--subset 4000] [--skip-full]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from sklearn.cluster import DBSCAN

import embeddings
from reidgen.clustering.pseudo_labels import PseudoLabeller, renumber

MSMT_TRAIN = 32621
SAMPLES_PER_ID = 31
TARGET_S, TARGET_GB = 60.0, 3.0
EPS, GAP, K1, K2, MIN_SAMPLES, MIN_SIZE = 0.6, 0.02, 30, 6, 4, 5


def clustered_features(num: int, dim: int, seed: int = 0) -> torch.Tensor:
    """``[N, D]`` float32 identities of ``SAMPLES_PER_ID`` samples (see ``embeddings.py``)."""
    return embeddings.clustered_features(num, dim, SAMPLES_PER_ID, noise=1.6, seed=seed)


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def run_ours(num: int, dim: int) -> dict[str, object]:
    features = clustered_features(num, dim)
    baseline = peak_gb()
    began = time.perf_counter()
    result = PseudoLabeller(EPS, None, GAP, min_cluster_size=MIN_SIZE, k1=K1, k2=K2)(features)
    return {
        "total_s": time.perf_counter() - began,
        "peak_gb": peak_gb(),
        "baseline_gb": baseline,
        "clusters": result.num_clusters,
        "kept": result.num_kept,
        "labels": result.labels.tolist() if num <= 10000 else None,
    }


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = rank[i, : k + 1]
    return forward[(rank[forward, : k + 1] == i).any(axis=1)]


def _dense_iou(labels: np.ndarray, other: np.ndarray) -> np.ndarray:
    same, same_other = labels[:, None] == labels[None, :], other[:, None] == other[None, :]
    return (same & same_other).sum(1) / (same | same_other).sum(1)


def _singletons(labels: np.ndarray) -> np.ndarray:
    out = labels.copy()
    outliers = np.flatnonzero(labels < 0)
    out[outliers] = labels.max() + 1 + np.arange(len(outliers))
    return out


def run_reference(num: int, dim: int) -> dict[str, object]:
    features = torch.nn.functional.normalize(clustered_features(num, dim), dim=1).numpy()
    baseline = peak_gb()
    began = time.perf_counter()
    dist = np.clip(2.0 - 2.0 * features @ features.T, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    rank = np.argsort(dist, axis=1, kind="stable")[:, :K1]
    encoding = np.zeros((num, num), dtype=np.float32)
    for i in range(num):
        members = _reciprocal(rank, i, K1)
        expanded = members
        for candidate in members:
            theirs = _reciprocal(rank, candidate, round(K1 / 2))
            if len(np.intersect1d(theirs, members)) > 2.0 / 3.0 * len(theirs):
                expanded = np.append(expanded, theirs)
        expanded = np.unique(expanded)
        weights = np.exp(-dist[i, expanded])
        encoding[i, expanded] = weights / weights.sum()
    encoding = np.stack([encoding[rank[i, :K2]].mean(axis=0) for i in range(num)])
    jaccard = np.zeros((num, num), dtype=np.float32)
    for i in range(num):
        used = np.flatnonzero(encoding[i])
        shared = np.minimum(encoding[i, used], encoding[:, used]).sum(axis=1)
        jaccard[i] = 1.0 - shared / (2.0 - shared)
    jaccard = np.clip(jaccard, 0.0, None)
    np.fill_diagonal(jaccard, 0.0)
    labels, tight, loose = (
        DBSCAN(eps=eps, min_samples=MIN_SAMPLES, metric="precomputed").fit_predict(jaccard)
        for eps in (EPS, EPS - GAP, EPS + GAP)
    )
    ready = [_singletons(x) for x in (labels, tight, loose)]
    compact, indep = 1 - _dense_iou(ready[0], ready[1]), 1 - _dense_iou(ready[0], ready[2])
    clusters = np.unique(ready[0])
    cluster_compact = {c: compact[ready[0] == c].min() for c in clusters}
    cluster_indep = {c: indep[ready[0] == c].min() for c in clusters}
    sizes = np.bincount(ready[0])
    values = np.sort([cluster_indep[c] for c in clusters if sizes[c] > 1])
    threshold = values[min(len(values) - 1, round(0.9 * len(values)))]
    keep = np.array(
        [
            cluster_indep[ready[0][i]] <= threshold and compact[i] <= cluster_compact[ready[0][i]]
            for i in range(num)
        ]
    )
    final = renumber(np.where(keep, labels, -1), MIN_SIZE)
    return {
        "total_s": time.perf_counter() - began,
        "peak_gb": peak_gb(),
        "baseline_gb": baseline,
        "labels": final.tolist(),
    }


def in_subprocess(kind: str, num: int, dim: int) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", kind, str(num), str(dim)]
    # Freed buffers go back to the OS at once, so the peak measures the algorithm, not glibc.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1024**2)}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, num, dim = args.child[0], int(args.child[1]), int(args.child[2])
        result = run_reference(num, dim) if kind == "reference" else run_ours(num, dim)
        print(json.dumps(result))
        return
    ours = in_subprocess("ours", args.subset, args.dim)
    reference = in_subprocess("reference", args.subset, args.dim)
    same = ours["labels"] == reference["labels"]
    print(
        f"subset {args.subset:,} x {args.dim}: ours {ours['total_s']:.1f} s, "
        f"{ours['peak_gb']:.2f} GB; dense reference {reference['total_s']:.1f} s, "
        f"{reference['peak_gb']:.2f} GB (features alone {ours['baseline_gb']:.2f} GB); "
        f"time reference / ours {reference['total_s'] / ours['total_s']:.1f}x, "
        f"peak {reference['peak_gb'] / ours['peak_gb']:.1f}x; labels identical: {same}; "
        f"{ours['clusters']} clusters, {ours['kept']} samples kept"
    )
    if args.skip_full:
        return
    full = in_subprocess("ours", MSMT_TRAIN, args.dim)
    time_ok, memory_ok = full["total_s"] <= TARGET_S, full["peak_gb"] <= TARGET_GB
    print(
        f"MSMT17 size {MSMT_TRAIN:,} x {args.dim}: {full['total_s']:.1f} s, peak "
        f"{full['peak_gb']:.2f} GB (features alone {full['baseline_gb']:.2f} GB), "
        f"{full['clusters']} clusters, {full['kept']} kept; target <= {TARGET_S:.0f} s: "
        f"{'met' if time_ok else 'MISSED'}; <= {TARGET_GB:.0f} GB: "
        f"{'met' if memory_ok else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
