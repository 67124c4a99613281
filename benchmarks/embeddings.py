"""Random but clustered embeddings for the benchmarks: identity centres plus noise."""

from __future__ import annotations

import torch


def clustered_features(
    num: int, dim: int, samples_per_id: int, noise: float, seed: int = 0
) -> torch.Tensor:
    """``[N, D]`` float32: ``N / samples_per_id`` identity centres (standard normal) plus
    ``noise`` times standard normal noise, samples of an identity spread over the set.

    Generated in place, a block at a time, so the features are the only large allocation.
    """
    generator = torch.Generator().manual_seed(seed)
    num_ids = max(1, num // samples_per_id)
    centres = torch.randn(num_ids, dim, generator=generator)
    features = torch.empty(num, dim)
    for start in range(0, num, 4096):
        stop = min(start + 4096, num)
        pids = torch.randint(num_ids, (stop - start,), generator=generator)
        torch.randn(stop - start, dim, generator=generator, out=features[start:stop])
        features[start:stop].mul_(noise).add_(centres[pids])
    return features
