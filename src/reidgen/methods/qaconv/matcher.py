"""The QAConv matcher: local correlation, two directional max-pools and the scalar-BN/FC head.

Shapes: ``Q`` queries, ``G`` gallery items, ``C`` channels, ``N = h * w`` locations. The inputs
are feature maps ``[B, C, h, w]`` L2-normalised per location over channels, so every local dot
product is a cosine. For a query ``i`` and a gallery item ``j`` (``docs/methods/qaconv.md`` §3):

1. ``S[i, j, s, r] = <query[i, :, s], gallery[j, :, r]>``: the query's N location vectors used as
   1x1 convolution kernels over the gallery map. Over a chunk it is one matrix product
   ``[q * N, C] x [C, g * N]``, which is what makes the matcher fast.
2. ``a[i, j, s] = max_r S`` (query -> gallery: each query location's best gallery match) and
   ``b[i, j, r] = max_s S`` (gallery -> query).
3. Head, version ``"2.1"`` (QAConv-GS, CVPR 2022, and the official HEAD): ``BatchNorm1d(1)`` over
   all maxima of both directions (one scalar mean/var), ``Linear(N -> 1)`` applied to each
   direction's N-vector with weights initialised to ``1/N``, the two outputs summed, then a
   logit ``BatchNorm1d(1)``. The shared, summed FC makes ``s(q, g) = s(g, q)``.
   Version ``"1.x"`` (1.0-2.0): the same scalar BN on the concatenation ``[a; b]`` (2N values),
   ``Linear(2N -> 1)`` with PyTorch's default init (not symmetric), then the logit BN.

The output is a logit (higher = more similar); losses work on it directly.

Evaluation (:meth:`QAConvMatcher.scores_in_chunks`, :meth:`QAConvMatcher.distance_fn`) never
holds more than one chunk pair's ``[q * N, g * N]`` correlation, and folds the eval-mode head
(running statistics) into one affine map of the maxima, so chunking cannot change the result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

VERSIONS = ("2.1", "1.x")

DistanceFn = Callable[[int, int], Tensor]
"""``(start, stop) -> Tensor[stop - start, G]``, as ``reidgen.eval.ranking.DistanceFn``."""

# Chunk sizes when the caller gives none. CUDA: the official HEAD's 128 x 128 queries x gallery
# items (a [128 * N, 128 * N] fp16 correlation, ~1.2 GB at N = 192). CPU: a correlation block of
# about 1536 x 3072 location rows (8 x 16 pairs at N = 192, ~19 MB float32), which stays in a
# 32 MB last-level cache, so the two max-reductions read it back from cache rather than DRAM;
# smaller blocks make the GEMM itself slower (see benchmarks/bench_qaconv_matcher.py).
_CUDA_CHUNKS = (128, 128)
_CPU_BLOCK_ROWS = (1536, 3072)


def _locations(maps: Tensor) -> Tensor:
    """``[B, C, h, w]`` -> ``[B * N, C]``: one row per location (row ``b * N + s``)."""
    b, c = maps.shape[:2]
    return maps.reshape(b, c, -1).transpose(1, 2).reshape(-1, c)


class QAConvMatcher(nn.Module):
    """QAConv matching head: ``scores(query [Q, C, h, w], gallery [G, C, h, w]) -> [Q, G]``.

    :param num_locations: ``N = h * w`` of the feature maps (192 for 384x128 inputs at stride 16).
    :param version: ``"2.1"`` (shared ``Linear(N -> 1)``, init ``1/N``, symmetric scores) or
        ``"1.x"`` (``Linear(2N -> 1)``, default init).

    :meth:`forward` (= :meth:`scores`) follows the module's mode: batch statistics in training
    (over all pairs of the call, as the official code), running statistics in eval.
    """

    def __init__(self, num_locations: int, version: str = "2.1") -> None:
        super().__init__()
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        if num_locations < 1:
            raise ValueError(f"num_locations must be positive, got {num_locations}")
        self.num_locations = num_locations
        self.version = version
        # Scalar BNs: one mean/var over every value, not per location (docs/methods/qaconv.md §12
        # item 3).
        self.bn = nn.BatchNorm1d(1)
        self.fc = nn.Linear(num_locations if version == "2.1" else 2 * num_locations, 1)
        self.logit_bn = nn.BatchNorm1d(1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default BN state; FC weights ``1/N`` in 2.1 (scores start as the mean of the maxima)."""
        self.bn.reset_parameters()
        self.logit_bn.reset_parameters()
        self.fc.reset_parameters()
        if self.version == "2.1":
            with torch.no_grad():
                self.fc.weight.fill_(1.0 / self.num_locations)

    def extra_repr(self) -> str:
        return f"num_locations={self.num_locations}, version={self.version!r}"

    # ------------------------------------------------------------------ building blocks
    def _check(self, query: Tensor, gallery: Tensor) -> None:
        if query.dim() != 4 or gallery.dim() != 4:
            raise ValueError(
                f"expected [B, C, h, w] maps, got {tuple(query.shape)} and {tuple(gallery.shape)}"
            )
        if query.shape[1:] != gallery.shape[1:]:
            raise ValueError(
                f"query and gallery maps differ: {tuple(query.shape)} vs {tuple(gallery.shape)}"
            )
        n = query.shape[2] * query.shape[3]
        if n != self.num_locations:
            raise ValueError(
                f"maps have {n} locations, the matcher was built for {self.num_locations}"
            )

    def maxima(self, query: Tensor, gallery: Tensor) -> tuple[Tensor, Tensor]:
        """Directional maxima of the local correlation.

        :param query: ``[Q, C, h, w]``; :param gallery: ``[G, C, h, w]``.
        :returns: ``(a, b)``, both ``[Q, G, N]``: ``a[i, j, s] = max_r S`` (query -> gallery) and
            ``b[i, j, r] = max_s S`` (gallery -> query). Materialises ``[Q * N, G * N]``.
        """
        self._check(query, gallery)
        q, g, n = query.shape[0], gallery.shape[0], self.num_locations
        # One GEMM for every location pair; the view is [Q, N(s), G, N(r)].
        corr = (_locations(query) @ _locations(gallery).t()).view(q, n, g, n)
        # max (not amax): its backward keeps only the argmax indices, so under autograd the
        # [Q * N, G * N] correlation is freed once both maxima are taken.
        a = corr.max(dim=3).values.transpose(1, 2)  # [Q, G, N(s)]
        b = corr.max(dim=1).values  # [Q, G, N(r)]
        return a, b

    def head(self, a: Tensor, b: Tensor) -> Tensor:
        """Scalar BN -> FC -> logit BN on maxima ``a, b`` ``[Q, G, N]``; returns ``[Q, G]``.

        Follows the module's mode (batch statistics in training).
        """
        q, g, n = a.shape
        both = torch.stack((a, b), dim=2)  # [Q, G, 2, N]: a first, as the 1.x FC expects
        # Both directions' maxima share one scalar BN: a single mean/var over 2 * Q * G * N values.
        both = self.bn(both.reshape(-1, 1, n)).reshape(q * g, 2, n)
        if self.version == "2.1":
            # Shared Linear(N -> 1) on each direction, then the sum: y = w.(a~ + b~) + 2 beta.
            logit = self.fc(both).sum(dim=1)  # [Q * G, 1]
        else:
            logit = self.fc(both.reshape(q * g, 2 * n))  # [Q * G, 1]
        return self.logit_bn(logit).view(q, g)

    # ------------------------------------------------------------------ training / direct scoring
    def forward(self, query: Tensor, gallery: Tensor) -> Tensor:
        """Scores ``[Q, G]`` (logits, higher = more similar) of ``query [Q, C, h, w]`` against
        ``gallery [G, C, h, w]``, all at once (memory ``Q * G * N^2``; see
        :meth:`scores_in_chunks` for evaluation)."""
        return self.head(*self.maxima(query, gallery))

    scores = forward

    def pairwise(self, features: Tensor) -> Tensor:
        """Scores of a training batch ``[B, C, h, w]`` against itself: ``[B, B]``.

        The BN statistics include the B self-pairs, as in the official training.
        """
        return self(features, features)

    # ------------------------------------------------------------------ evaluation
    def eval_affine(self) -> tuple[Tensor, Tensor, Tensor]:
        """The eval-mode head folded into one affine map of the maxima (float64; callers cast).

        With running statistics both BNs are affine, so ``score = a . w_a + b . w_b + offset``.
        Returns ``(w_a [N], w_b [N], offset [])``; in 2.1 ``w_a == w_b``.
        """
        n = self.num_locations
        with torch.no_grad():
            bn, lbn = self.bn, self.logit_bn
            k1 = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            c1 = bn.bias.double() - bn.running_mean.double() * k1
            k2 = lbn.weight.double() / torch.sqrt(lbn.running_var.double() + lbn.eps)
            c2 = lbn.bias.double() - lbn.running_mean.double() * k2
            w = self.fc.weight.double().reshape(-1)
            beta = self.fc.bias.double().reshape(())
            if self.version == "2.1":
                w_a = w_b = w
                y_offset = 2 * (c1 * w.sum() + beta)  # both directions carry c1 and the bias
            else:
                w_a, w_b = w[:n], w[n:]
                y_offset = c1 * w.sum() + beta
            return k2 * k1 * w_a, k2 * k1 * w_b, (k2 * y_offset + c2).reshape(())

    @staticmethod
    def _chunk_dtypes(features: Tensor) -> tuple[torch.dtype, torch.dtype]:
        """(correlation dtype, head/output dtype) for evaluation on ``features``' device."""
        # fp16 on CUDA as the official evaluation (unit-norm inputs keep |S| <= 1, no overflow);
        # CPU half matmul is slow and gains nothing, so float32 there (float64 is kept, for tests).
        if features.device.type == "cuda":
            return torch.float16, torch.float32
        dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
        return dtype, dtype

    @torch.no_grad()
    def scores_in_chunks(
        self,
        query: Tensor,
        gallery: Tensor,
        query_chunk: int | None = None,
        gallery_chunk: int | None = None,
    ) -> Tensor:
        """Eval-mode scores ``[Q, G]`` (float32; float64 for float64 CPU inputs), memory-bounded.

        :param query: ``[Q, C, h, w]``; :param gallery: ``[G, C, h, w]`` (same device).
        :param query_chunk, gallery_chunk: pairs per block; at most one ``[q * N, g * N]``
            correlation block exists at a time. Default: 128 x 128 on CUDA;
            on CPU about 1536 x 3072 location rows (8 x 16 at N = 192).

        Always uses the running statistics (whatever ``self.training`` is): per-chunk batch
        statistics would make the scores depend on the chunking. Computed in fp16 on CUDA,
        float32 on CPU; the folded head itself runs in float32.
        """
        self._check(query, gallery)
        device = query.device
        if device.type == "cuda":
            default = _CUDA_CHUNKS
        else:
            default = tuple(max(1, rows // self.num_locations) for rows in _CPU_BLOCK_ROWS)
        qc, gc = query_chunk or default[0], gallery_chunk or default[1]
        if qc < 1 or gc < 1:
            raise ValueError(f"chunk sizes must be positive, got {qc} and {gc}")
        dtype, out_dtype = self._chunk_dtypes(query)
        n = self.num_locations
        w_a, w_b, offset = (t.to(device, out_dtype) for t in self.eval_affine())
        # Location rows once for the whole gallery: each chunk is then a contiguous row slice.
        gal_rows = _locations(gallery.to(dtype))
        num_q, num_g = query.shape[0], gallery.shape[0]
        out = torch.empty(num_q, num_g, dtype=out_dtype, device=device)
        for q0 in range(0, num_q, qc):
            q_rows = _locations(query[q0 : q0 + qc].to(dtype))
            q = q_rows.shape[0] // n
            for g0 in range(0, num_g, gc):
                g_rows = gal_rows[g0 * n : (g0 + gc) * n]
                g = g_rows.shape[0] // n
                corr = (q_rows @ g_rows.t()).view(q, n, g, n)
                # Contract each direction's maxima with its folded weights over the locations.
                a = corr.amax(dim=3).to(out_dtype)  # [q, N(s), g]
                b = corr.amax(dim=1).to(out_dtype)  # [q, g, N(r)]
                score = torch.einsum("qsg,s->qg", a, w_a) + b @ w_b
                out[q0 : q0 + q, g0 : g0 + g] = score + offset
        return out

    def distance_fn(
        self,
        query: Tensor,
        gallery: Tensor,
        query_chunk: int | None = None,
        gallery_chunk: int | None = None,
    ) -> DistanceFn:
        """Distances for ``reidgen.eval``: ``(start, stop) -> Tensor[stop - start, G]``.

        ``d = 1 - sigmoid(score / 10)`` (QAConv <= 2.1). It ranks exactly as ``-score``, and unlike
        ``-score`` it is what k-reciprocal re-ranking and TLift expect (docs/methods/qaconv.md
        §3.4, §12 item 17).
        Computed as ``sigmoid(-score / 10)``, the same value without the cancellation that would
        turn distinct large scores into tied distances of 0 in float32.
        """
        self._check(query, gallery)

        def distance(start: int, stop: int) -> Tensor:
            scores = self.scores_in_chunks(query[start:stop], gallery, query_chunk, gallery_chunk)
            return torch.sigmoid(scores.div_(-10.0))

        return distance
