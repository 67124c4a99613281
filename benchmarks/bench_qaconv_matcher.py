"""QAConv matcher throughput (image pairs per second) against this machine's GEMM peak, float32 CPU.

What is timed: :meth:`QAConvMatcher.scores_in_chunks` (the evaluation path: per chunk pair one
``[q * N, C] x [C, g * N]`` matrix product, both directional max-reductions and the folded head)
on random per-location L2-normalised maps, C = 128, at 24x8 (N = 192, 384x128 inputs) and 16x8
(N = 128, 256x128 inputs).

Work per pair: ``2 * C * N^2`` FLOP for the correlation plus ``2 * N^2`` comparisons for the two
max-reductions (each reduces the N x N map once); the head is O(N) and not counted.

Reference ("peak"): a large float32 matrix product of comparable shape, ``[4096, C] x [C, 4096]``
(the same inner dimension C as the matcher's GEMM), timed in the same run; a large-K product
(``[2048, 1024] x [1024, 2048]``) is printed for context. The machine may be shared, so matcher
and reference runs are interleaved and each keeps its best time: both see the same load.
Target: matcher GFLOP/s >= 50% of the comparable-shape peak.

    .venv/bin/python benchmarks/bench_qaconv_matcher.py [--queries 32] [--gallery 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from reidgen.methods.qaconv.matcher import QAConvMatcher

CHANNELS = 128
MAPS = {"384x128 -> 24x8": (24, 8), "256x128 -> 16x8": (16, 8)}
TARGET_RATIO = 0.5


def best_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` interleaved rounds (after one warm-up)."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--gallery", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    c = CHANNELS
    peak_a, peak_b = torch.randn(4096, c), torch.randn(4096, c)
    big_a, big_b = torch.randn(2048, 1024), torch.randn(1024, 2048)
    peak_flop = 2 * 4096 * 4096 * c
    big_flop = 2 * 2048 * 2048 * 1024
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU; "
        f"{args.queries} queries x {args.gallery} gallery, best of {args.repeats}"
    )

    all_met = True
    for label, (h, w) in MAPS.items():
        n = h * w
        matcher = QAConvMatcher(n, "2.1").eval()
        query = F.normalize(torch.randn(args.queries, c, h, w), dim=1)
        gallery = F.normalize(torch.randn(args.gallery, c, h, w), dim=1)
        times = best_times(
            {
                "matcher": lambda m=matcher, q=query, g=gallery: m.scores_in_chunks(q, g),
                "peak": lambda: peak_a @ peak_b.t(),
                "big": lambda: big_a @ big_b,
            },
            args.repeats,
        )
        pairs = args.queries * args.gallery
        flop_per_pair = 2 * c * n * n + 2 * n * n
        matcher_gflops = pairs * flop_per_pair / times["matcher"] / 1e9
        peak_gflops = peak_flop / times["peak"] / 1e9
        big_gflops = big_flop / times["big"] / 1e9
        ratio = matcher_gflops / peak_gflops
        met = ratio >= TARGET_RATIO
        all_met &= met
        print(f"\n{label} (C={c}, N={n}, {flop_per_pair / 1e6:.2f} MFLOP per pair)")
        pairs_per_s = pairs / times["matcher"]
        print(f"  matcher      {pairs_per_s:10.0f} pairs/s  {matcher_gflops:6.1f} GFLOP/s")
        print(f"  peak GEMM    [4096,{c}]x[{c},4096]        {peak_gflops:6.1f} GFLOP/s")
        print(f"  large-K GEMM [2048,1024]x[1024,2048]     {big_gflops:6.1f} GFLOP/s (context)")
        print(
            f"  ratio {ratio:.2f} of peak (large-K: {matcher_gflops / big_gflops:.2f}); "
            f"target >= {TARGET_RATIO:.2f}: {'met' if met else 'MISSED'}"
        )
    verdict = "met at all sizes" if all_met else "MISSED"
    print(f"\ntarget (>= {TARGET_RATIO:.0%} of peak): {verdict}")


if __name__ == "__main__":
    main()
