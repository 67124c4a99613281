"""k-reciprocal re-ranking at benchmark scale: time and peak memory, against a numpy reference.

Targets on 2 CPU cores: Market-1501 size (3,368 queries + 15,913 gallery) in at most 10 s and
2 GB peak; MSMT17 size (11,659 + 82,161) in at most 4 min and 2.5 GB peak. Features are random
but clustered (identities with about 25 samples each), 2048-d, float32.

Method. Every case runs in its own subprocess, so its peak memory is that process's
``ru_maxrss`` (peak resident set, which includes Python, torch and the features themselves; the
features-only baseline is printed too). Ours is :func:`reidgen.eval.rerank.rerank` on the
Euclidean distance of the features, followed by computing every query chunk of the re-ranked
distance, in two forms: ``blocks``, the features given as
:class:`~reidgen.eval.rerank.FeatureRows` (what ``rerank_features`` and the default
``rerank_rows`` of a method give: each symmetric block of the distance computed once), and
``rows``, the same distance as a plain ``rows(start, stop)`` callable (the path of any other
distance, and what features took before the block path existed: every row computed whole, the
query rows and some others twice). Both times are split into the distance computation (the
matrix products of the features, which no re-ranking from features can skip) and the re-ranking
proper (everything else); the ratio rows / blocks is printed. The reference is the
straightforward numpy implementation of the tests (``tests/eval/test_rerank.py``), which, like the
usual implementation, takes the three distance matrices as input: its time excludes computing
them. The Market time target is checked against the re-ranking proper of the block path, which is
what that reference measures; the total is printed as well. Children run with
``MALLOC_MMAP_THRESHOLD_=1 MiB`` (see ``in_subprocess``): glibc otherwise keeps freed chunk
buffers, and the peak then measures the allocator rather than the algorithm.

    python benchmarks/bench_rerank.py [--skip-msmt] [--skip-rows] [--skip-reference] [--dim 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

import embeddings
from reidgen.eval.rerank import FeatureRows, rerank

SIZES = {"market": (3368, 15913), "msmt": (11659, 82161)}
TARGETS = {"market": (10.0, 2.0), "msmt": (4 * 60.0, 2.5)}  # seconds, GB
SAMPLES_PER_ID = 25
REFERENCE_GB_PER_N2 = 10.0 / 19281**2  # measured order of the reference's peak, for the size check


def clustered_features(num: int, dim: int, seed: int = 0) -> torch.Tensor:
    """``[N, D]`` float32 identities of ``SAMPLES_PER_ID`` samples (see ``embeddings.py``)."""
    return embeddings.clustered_features(num, dim, SAMPLES_PER_ID, noise=1.5, seed=seed)


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


class _TimedFeatureRows(FeatureRows):
    """FeatureRows that add up the time spent in the matrix products."""

    inside = 0.0
    calls = 0

    def squared(self, *bounds: int, out: torch.Tensor | None = None) -> torch.Tensor:
        began = time.perf_counter()
        result = super().squared(*bounds, out=out)
        self.inside += time.perf_counter() - began
        self.calls += 1
        return result


def run_ours(kind: str, num_query: int, num_gallery: int, dim: int) -> dict[str, float]:
    features = clustered_features(num_query + num_gallery, dim)
    baseline = peak_gb()
    source = _TimedFeatureRows(features)
    if kind == "blocks":
        distance_rows = source
    else:

        def distance_rows(start: int, stop: int) -> torch.Tensor:
            # The same distance, seen only as rows: nothing tells re-ranking where it comes from.
            return source(start, stop)

    began = time.perf_counter()
    distance = rerank(distance_rows, num_query, num_total=len(features))
    for start in range(0, num_query, 256):
        distance(start, min(start + 256, num_query))
    total = time.perf_counter() - began
    return {
        "total_s": total,
        "distance_s": source.inside,
        "rerank_s": total - source.inside,
        "distance_calls": source.calls,
        "peak_gb": peak_gb(),
        "baseline_gb": baseline,
    }


def run_reference(num_query: int, num_gallery: int, dim: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.eval.test_rerank import reference_rerank

    features = clustered_features(num_query + num_gallery, dim)
    # Plain Euclidean distances, computed by torch a block at a time (not timed).
    rows = [torch.cdist(features[s : s + 2048], features) for s in range(0, len(features), 2048)]
    full = torch.cat(rows).numpy()
    del rows, features
    baseline = peak_gb()
    q_g, q_q, g_g = (
        full[:num_query, num_query:],
        full[:num_query, :num_query],
        full[num_query:, num_query:],
    )
    began = time.perf_counter()
    reference_rerank(q_g.copy(), q_q.copy(), g_g.copy())
    return {"total_s": time.perf_counter() - began, "peak_gb": peak_gb(), "baseline_gb": baseline}


def in_subprocess(kind: str, num_query: int, num_gallery: int, dim: int) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        str(num_query),
        str(num_gallery),
        str(dim),
    ]
    # A fixed mmap threshold returns freed chunk buffers to the OS at once; with glibc's default
    # (dynamic) threshold they pile up in the heap and ru_maxrss varied from 0.9 to 3.3 GB between
    # identical Market runs of ours.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1024**2)}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def describe(kind: str, ours: dict[str, float]) -> None:
    print(
        f"  ours ({kind}): total {ours['total_s']:7.1f} s = distances {ours['distance_s']:7.1f} s "
        f"({ours['distance_calls']} products) + re-ranking {ours['rerank_s']:6.1f} s; "
        f"peak {ours['peak_gb']:.2f} GB (features alone {ours['baseline_gb']:.2f} GB)"
    )


def report(name: str, dim: int, skip_rows: bool) -> dict[str, float]:
    num_query, num_gallery = SIZES[name]
    print(f"{name} size {num_query:,} + {num_gallery:,}:")
    ours = in_subprocess("blocks", num_query, num_gallery, dim)
    describe("blocks", ours)
    if not skip_rows:
        rows = in_subprocess("rows", num_query, num_gallery, dim)
        describe("rows", rows)
        print(
            f"  rows / blocks: time {rows['total_s'] / ours['total_s']:.1f}x "
            f"(distances {rows['distance_s'] / ours['distance_s']:.1f}x), "
            f"peak memory {rows['peak_gb'] / ours['peak_gb']:.2f}x"
        )
    seconds, gigabytes = TARGETS[name]
    checked = ours["rerank_s"] if name == "market" else ours["total_s"]
    what = "re-ranking" if name == "market" else "total"
    time_ok, memory_ok = checked <= seconds, ours["peak_gb"] <= gigabytes
    print(
        f"  target {what} <= {seconds:.0f} s: {'met' if time_ok else 'MISSED'} ({checked:.1f} s); "
        f"peak <= {gigabytes} GB: {'met' if memory_ok else 'MISSED'} ({ours['peak_gb']:.2f} GB)"
    )
    return ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-msmt", action="store_true")
    parser.add_argument("--skip-rows", action="store_true", help="skip the plain-rows path")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, q, g, dim = args.child[0], *map(int, args.child[1:])
        result = run_reference(q, g, dim) if kind == "reference" else run_ours(kind, q, g, dim)
        print(json.dumps(result))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, features {args.dim}-d")
    ours = report("market", args.dim, args.skip_rows)
    if not args.skip_reference:
        num_query, num_gallery = SIZES["market"]
        # Shrink the reference problem (same query share) when its dense matrices would not fit.
        scale = min(1.0, (0.6 * available_gb() / (REFERENCE_GB_PER_N2 * 19281**2)) ** 0.5)
        q, g = round(num_query * scale), round(num_gallery * scale)
        ref = in_subprocess("reference", q, g, args.dim)
        factor = ((num_query + num_gallery) / (q + g)) ** 2  # its cost and memory grow as N^2
        label = "" if scale == 1.0 else f" (run at {q:,} + {g:,}, scaled by N^2 x{factor:.2f})"
        print(
            f"  numpy reference{label}: {ref['total_s'] * factor:7.1f} s, "
            f"peak {ref['peak_gb'] * factor:.2f} GB"
        )
        print(
            f"  reference / ours (blocks): time {ref['total_s'] * factor / ours['rerank_s']:.1f}x "
            f"(re-ranking proper), {ref['total_s'] * factor / ours['total_s']:.1f}x (ours total); "
            f"peak memory {ref['peak_gb'] * factor / ours['peak_gb']:.1f}x"
        )
    if not args.skip_msmt:
        report("msmt", args.dim, args.skip_rows)


if __name__ == "__main__":
    main()
