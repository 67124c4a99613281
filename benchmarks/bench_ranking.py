"""Ranking-metric speed and memory: evaluate_ranking at Market-1501 and MSMT17 size.

Targets on 2 CPU cores, ranking + metrics only (the distances are precomputed, or their time is
measured inside the chunk callable and reported apart):

* Market size, 3,368 x 15,913 float32 distance matrix: at most 1 s;
* MSMT17 size, 11,659 x 82,161 from 2048-d features through a chunk callable: at most 30 s and at
  most 2 GB peak memory beyond the inputs.

The problems are seeded and synthetic: identity centres plus camera bias plus noise, cosine
distance; every query pid has 5+ gallery images over 2-6 cameras; Market's 15,913 gallery images
include 2,793 pid-0 distractors and 1,500 pid -1 junk images. The noise is tuned to realistic
numbers (mAP ~65-70 %, mINP 8-20 %), so a query's last positive is often deep in its list.
Computing the MSMT-size distances (a 3.9 TFLOP product) takes about a minute on 2 cores; it is
timed inside the callable and reported apart. References measured in the same run:

* the previous implementation, a stable sort of every row in torch (``previous_torch`` below);
  on MSMT size it runs on a subset of queries and is scaled up;
* the per-query numpy loop of the peer toolboxes' pure-Python path (argsort a row, build the
  precision curve in a Python list comprehension), on every 10th Market query, scaled up.

Memory: each case runs in a fresh subprocess; just before evaluating, the peak-RSS mark is reset
through ``/proc/self/clear_refs`` (Linux), and the reported peak is VmHWM after the evaluation
minus VmRSS before it: everything the evaluation (and the distance callable) allocated, nothing
from generating the inputs. torch's CPU allocator returns large blocks to the OS, so RSS sees it.

Three distance distributions per size (``--dists``), since the rank-free evaluation used to be
fast only when positives sit near the top of their lists:

* ``realistic``: the trained-model features above (noise 3);
* ``weak``: the same layout with noise 4.5, as a weak cross-domain model gives (mAP ~5-15 %):
  positives only slightly closer than negatives, the last one usually deep in the list;
* ``random``: uniform random distances, no signal at all (seeded per chunk of rows).

Every case prints the ratio against the full stable sort measured in the same run.

    .venv/bin/python benchmarks/bench_ranking.py [--sizes market msmt] [--dists ...] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from reidgen.eval import evaluate_ranking

TARGET_SECONDS = {"market": 1.0, "msmt": 30.0}
TARGET_PEAK_MB = {"msmt": 2048.0}
NOISE, CAM_BIAS = 3.0, 0.5  # per-dimension std of image noise and camera bias (centres: 1)
NOISE_BY_DIST = {"realistic": NOISE, "weak": 4.5}  # "random" needs no features
DISTS = ("realistic", "weak", "random")
NUMPY_EVERY = 10  # the numpy reference ranks every 10th Market query
MSMT_PREVIOUS_QUERIES = 512  # the previous implementation ranks this many MSMT queries


@dataclass(frozen=True)
class Spec:
    num_query: int
    num_gallery: int
    num_ids: int
    num_cams: int
    num_distractors: int
    num_junk: int


SPECS = {
    "market": Spec(3368, 15913, 750, 6, 2793, 1500),
    "msmt": Spec(11659, 82161, 3060, 15, 0, 0),
}


@dataclass(frozen=True)
class Problem:
    query: Tensor  # [Q, D] L2-normalised
    gallery: Tensor  # [G, D] L2-normalised
    q_pids: np.ndarray
    q_cams: np.ndarray
    g_pids: np.ndarray
    g_cams: np.ndarray


def make_problem(spec: Spec, dim: int, seed: int = 0, noise: float = NOISE) -> Problem:
    """Seeded query/gallery ids and features with a Market-like layout (see the module doc)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, spec.num_ids + 1)
    id_cams = [rng.choice(spec.num_cams, rng.integers(2, 7), replace=False) for _ in ids]
    num_id_images = spec.num_gallery - spec.num_distractors - spec.num_junk
    counts = 5 + rng.multinomial(num_id_images - 5 * len(ids), np.full(len(ids), 1 / len(ids)))
    g_pids = np.concatenate(
        [np.full(spec.num_junk, -1), np.zeros(spec.num_distractors, int), np.repeat(ids, counts)]
    )
    g_cams = np.concatenate(
        [
            rng.integers(0, spec.num_cams, spec.num_junk + spec.num_distractors),
            *[rng.choice(cams, n) for cams, n in zip(id_cams, counts, strict=True)],
        ]
    )
    q_pids = np.resize(rng.permutation(ids), spec.num_query)
    q_cams = np.array([rng.choice(id_cams[pid - 1]) for pid in q_pids])

    gen = torch.Generator().manual_seed(seed)
    # Identity centres; junk and distractor images each get a centre of their own.
    centres = torch.randn(spec.num_ids + 1, dim, generator=gen)
    cam_bias = CAM_BIAS * torch.randn(spec.num_cams, dim, generator=gen)

    def features(pids: np.ndarray, cams: np.ndarray) -> Tensor:
        out = noise * torch.randn(len(pids), dim, generator=gen)
        own = pids >= 1
        out[torch.from_numpy(own)] += centres[torch.from_numpy(pids[own])]
        out[torch.from_numpy(~own)] += torch.randn(int((~own).sum()), dim, generator=gen)
        out += cam_bias[torch.from_numpy(cams)]
        return torch.nn.functional.normalize(out, dim=1)

    return Problem(
        features(q_pids, q_cams), features(g_pids, g_cams), q_pids, q_cams, g_pids, g_cams
    )


class TimedRandom:
    """``distance(start, stop)``: uniform random rows, seeded by ``start``; sums its time."""

    def __init__(self, num_gallery: int) -> None:
        self.num_gallery = num_gallery
        self.seconds = 0.0

    def __call__(self, start: int, stop: int) -> Tensor:
        begin = time.perf_counter()
        gen = torch.Generator().manual_seed(start)
        rows = torch.rand(stop - start, self.num_gallery, generator=gen)
        self.seconds += time.perf_counter() - begin
        return rows


class TimedCosine:
    """``distance(start, stop)``: cosine distance rows of queries ``start:stop``; sums its time."""

    def __init__(self, query: Tensor, gallery: Tensor) -> None:
        self.query, self.gallery_t = query, gallery.T
        self.seconds = 0.0

    def __call__(self, start: int, stop: int) -> Tensor:
        begin = time.perf_counter()
        ones = torch.ones((), dtype=self.query.dtype)
        rows = torch.addmm(ones, self.query[start:stop], self.gallery_t, alpha=-1.0)  # 1 - q.g
        self.seconds += time.perf_counter() - begin
        return rows


def previous_torch(
    distance: Tensor | Callable[[int, int], Tensor],
    q_pids: np.ndarray,
    q_cams: np.ndarray,
    g_pids: np.ndarray,
    g_cams: np.ndarray,
    chunk_size: int = 256,
) -> dict[str, float]:
    """The previous evaluate_ranking: a stable sort of each row, then cumsums over [C, G]."""
    qp, qc = torch.as_tensor(q_pids), torch.as_tensor(q_cams)
    gp, gc = torch.as_tensor(g_pids), torch.as_tensor(g_cams)
    aps, inps, firsts = [], [], []
    for start in range(0, len(qp), chunk_size):
        stop = min(start + chunk_size, len(qp))
        chunk = distance[start:stop] if isinstance(distance, Tensor) else distance(start, stop)
        order = torch.sort(chunk, dim=1, stable=True).indices
        pids, cams = gp[order], gc[order]
        same_pid = pids == qp[start:stop, None]
        kept = ~((same_pid & (cams == qc[start:stop, None])) | (pids == -1))
        positive = same_pid & kept
        rank, hits = kept.cumsum(dim=1), positive.cumsum(dim=1)
        num_pos = hits[:, -1]
        aps.append(torch.where(positive, hits.double() / rank, 0.0).sum(dim=1) / num_pos)
        inps.append(num_pos / torch.where(positive, rank, 0).amax(dim=1).double())
        firsts.append(torch.where(positive, rank, len(gp) + 1).amin(dim=1))
    ap, inp, first = torch.cat(aps), torch.cat(inps), torch.cat(firsts)
    valid = ~torch.isnan(ap)
    return summary(ap[valid].numpy(), inp[valid].numpy(), first[valid].numpy(), len(qp))


def numpy_per_query(
    dist: np.ndarray, q_pids: np.ndarray, q_cams: np.ndarray, g_pids: np.ndarray, g_cams: np.ndarray
) -> dict[str, float]:
    """The peer toolboxes' pure-Python evaluation shape: one query at a time, a Python list
    comprehension for the precision curve (argsort is stable here so that ties compare)."""
    aps, inps, firsts = [], [], []
    for i in range(len(q_pids)):
        order = np.argsort(dist[i], kind="stable")
        matches = g_pids[order] == q_pids[i]
        kept = ~((matches & (g_cams[order] == q_cams[i])) | (g_pids[order] == -1))
        hits = matches[kept].astype(np.int32)
        if not hits.any():
            continue
        cumulative = hits.cumsum()
        precision = [c / (r + 1.0) for r, c in enumerate(cumulative)]
        aps.append((np.asarray(precision) * hits).sum() / hits.sum())
        positions = np.flatnonzero(hits) + 1
        inps.append(len(positions) / positions[-1])
        firsts.append(positions[0])
    return summary(np.array(aps), np.array(inps), np.array(firsts), len(q_pids))


def summary(ap: np.ndarray, inp: np.ndarray, first: np.ndarray, num_q: int) -> dict[str, float]:
    metrics = {f"rank{k}": 100.0 * float(np.mean(first <= k)) for k in (1, 5, 10, 20)}
    metrics.update(mAP=100.0 * float(ap.mean()), mINP=100.0 * float(inp.mean()))
    metrics.update(num_valid_queries=len(ap), num_skipped_queries=num_q - len(ap))
    return metrics


def same_metrics(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-9 for k in a)


def reset_peak_rss() -> int:
    """Reset the process's peak-RSS mark; return the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS") * 1024


def peak_rss() -> int:
    return _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def timed(fn: Callable[[], dict[str, float]], repeat: int) -> tuple[float, dict[str, float]]:
    best, result = float("inf"), {}
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def run_case(name: str, dist_kind: str, dim: int, repeat: int) -> dict:
    """Generate one problem, time evaluate_ranking and the references; all in this process."""
    spec = SPECS[name]
    # The random case keeps the ids (and so the protocol) of the others; its features go unused.
    p = make_problem(
        spec, 8 if dist_kind == "random" else dim, noise=NOISE_BY_DIST.get(dist_kind, NOISE)
    )
    ids = (p.q_pids, p.q_cams, p.g_pids, p.g_cams)
    out: dict = {"case": name, "dist": dist_kind, "shape": [spec.num_query, spec.num_gallery]}
    out["dim"] = 0 if dist_kind == "random" else dim
    make_distance = (
        (lambda: TimedRandom(spec.num_gallery))
        if dist_kind == "random"
        else (lambda: TimedCosine(p.query, p.gallery))
    )
    if name == "market":
        dist = make_distance()(0, spec.num_query)  # precomputed, untimed
        before = reset_peak_rss()
        seconds, metrics = timed(lambda: evaluate_ranking(dist, *ids), repeat)
        out.update(seconds=seconds, distance_seconds=0.0, peak_mb=(peak_rss() - before) / 2**20)
        previous_seconds, previous = timed(lambda: previous_torch(dist, *ids), 1)
        out.update(previous_seconds=previous_seconds, previous_scale=1.0)
        out["previous_agrees"] = same_metrics(previous, metrics)
        rows = slice(None, None, NUMPY_EVERY)
        subset = [a[rows] for a in (p.q_pids, p.q_cams)] + [p.g_pids, p.g_cams]
        numpy_seconds, numpy_metrics = timed(
            lambda: numpy_per_query(dist[rows].numpy(), *subset), 1
        )
        scale = spec.num_query / len(subset[0])
        out.update(numpy_seconds=numpy_seconds * scale, numpy_scale=scale)
        out["numpy_agrees"] = same_metrics(numpy_metrics, evaluate_ranking(dist[rows], *subset))
    else:
        distance = make_distance()
        before = reset_peak_rss()
        total, metrics = timed(lambda: evaluate_ranking(distance, *ids), repeat)
        distance_seconds = distance.seconds / repeat
        out.update(seconds=total - distance_seconds, distance_seconds=distance_seconds)
        out["peak_mb"] = (peak_rss() - before) / 2**20
        # The previous implementation on a subset of queries, distances precomputed, scaled up.
        count = MSMT_PREVIOUS_QUERIES
        dist = distance(0, count)
        subset = [a[:count] for a in (p.q_pids, p.q_cams)] + [p.g_pids, p.g_cams]
        previous_seconds, previous = timed(lambda: previous_torch(dist, *subset), 1)
        scale = spec.num_query / count
        out.update(previous_seconds=previous_seconds * scale, previous_scale=scale)
        out["previous_agrees"] = same_metrics(previous, evaluate_ranking(dist, *subset))
    out["metrics"] = metrics
    return out


def report(result: dict) -> None:
    name, (num_q, num_g) = result["case"], result["shape"]
    seconds, target = result["seconds"], TARGET_SECONDS[name]
    m = result["metrics"]
    features = f"{result['dim']}-d features" if result["dim"] else "uniform random distances"
    print(f"\n{name}, {result['dist']}: {num_q:,} queries x {num_g:,} gallery ({features})")
    print(
        f"  metrics: rank1 {m['rank1']:.2f}  mAP {m['mAP']:.2f}  mINP {m['mINP']:.2f}  "
        f"valid {m['num_valid_queries']}  skipped {m['num_skipped_queries']}"
    )
    distance = result["distance_seconds"]
    extra = f" (+ {distance:.2f} s computing distances in the callable)" if distance else ""
    print(f"  evaluate_ranking: {seconds:.3f} s ranking + metrics{extra}")
    print(f"  peak memory beyond the inputs: {result['peak_mb']:.0f} MB")
    scale = result["previous_scale"]
    how = f" ({num_q / scale:.0f} queries, x {scale:.1f})" if scale != 1 else ""
    print(
        f"  previous torch full stable sort: {result['previous_seconds']:.2f} s{how}  "
        f"-> ratio {result['previous_seconds'] / seconds:.1f}x; "
        f"same metrics: {result['previous_agrees']}"
    )
    if "numpy_seconds" in result:
        scale = result["numpy_scale"]
        print(
            f"  numpy per-query loop: {result['numpy_seconds']:.1f} s "
            f"(every {NUMPY_EVERY}th query, x {scale:.1f})  "
            f"-> {result['numpy_seconds'] / seconds:.0f}x faster; "
            f"same metrics: {result['numpy_agrees']}"
        )
    verdicts = [f"time {seconds:.2f} s <= {target:g} s: {'met' if seconds <= target else 'MISSED'}"]
    if name in TARGET_PEAK_MB:
        peak, limit = result["peak_mb"], TARGET_PEAK_MB[name]
        verdicts.append(
            f"peak {peak:.0f} MB <= {limit:g} MB: {'met' if peak <= limit else 'MISSED'}"
        )
    print("  target: " + "; ".join(verdicts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-msmt", action="store_true", help="same as --sizes market")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SPECS), default=["market", "msmt"])
    parser.add_argument("--dists", nargs="+", choices=DISTS, default=list(DISTS))
    parser.add_argument("--repeat", type=int, default=3, help="timings per case; best is kept")
    parser.add_argument("--msmt-repeat", type=int, default=1, help="timings of the MSMT case")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
    parser.add_argument("--case", choices=sorted(SPECS), help=argparse.SUPPRESS)  # subprocess
    parser.add_argument("--dist", choices=DISTS, help=argparse.SUPPRESS)  # subprocess
    args = parser.parse_args()
    if args.case:
        repeat = args.msmt_repeat if args.case == "msmt" else args.repeat
        print(json.dumps(run_case(args.case, args.dist, args.dim, repeat)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    sizes = ["market"] if args.skip_msmt else args.sizes
    for name in sizes:
        for dist_kind in args.dists:
            # A fresh process per case, so that one case's memory does not hide the next one's.
            command = [sys.executable, __file__, "--case", name, "--dist", dist_kind]
            command += ["--dim", str(args.dim), "--repeat", str(args.repeat)]
            command += ["--msmt-repeat", str(args.msmt_repeat)]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            report(json.loads(done.stdout.splitlines()[-1]))


if __name__ == "__main__":
    main()
