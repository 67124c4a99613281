"""AlignedReID local distance against direct, loop-by-loop readings of its definition
(``docs/methods/alignedreid.md`` §1.1, §1.5, §1.6)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from reidgen.methods.alignedreid import local_distance as ld
from reidgen.methods.alignedreid.local_distance import (
    alignment_path,
    local_distance,
    local_distance_fn,
    paired_local_distance,
    paired_stripe_distances,
    shortest_path,
    stripe_distances,
)

BATCH_SHAPES = [(), (3,), (2, 3)]
STRIPES = [1, 2, 3, 5, 8]


def random_matrices(shape: tuple[int, ...], seed: int, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen, dtype=dtype)


def python_dp(d: list[list[float]]) -> float:
    """The recursion of §1.1 cell by cell, in Python floats."""
    h = len(d)
    s = [[0.0] * h for _ in range(h)]
    for i in range(h):
        for j in range(h):
            if i == 0 and j == 0:
                s[i][j] = d[0][0]
            elif i == 0:
                s[i][j] = s[i][j - 1] + d[i][j]
            elif j == 0:
                s[i][j] = s[i - 1][j] + d[i][j]
            else:
                s[i][j] = min(s[i - 1][j], s[i][j - 1]) + d[i][j]
    return s[h - 1][h - 1]


def all_monotone_paths(h: int) -> list[list[tuple[int, int]]]:
    """Every right/down path from (0, 0) to (h-1, h-1): choose which of the 2h-2 moves go down."""
    paths = []
    for downs in itertools.combinations(range(2 * h - 2), h - 1):
        i = j = 0
        cells = [(0, 0)]
        for move in range(2 * h - 2):
            if move in downs:
                i += 1
            else:
                j += 1
            cells.append((i, j))
        paths.append(cells)
    return paths


def indicator(h: int, cells: list[tuple[int, int]]) -> torch.Tensor:
    mask = torch.zeros(h, h, dtype=torch.float64)
    for i, j in cells:
        mask[i, j] = 1.0
    return mask


# ---------------------------------------------------------------------------- shortest path
@pytest.mark.parametrize("h", STRIPES)
@pytest.mark.parametrize("batch", BATCH_SHAPES)
def test_shortest_path_equals_python_dp(h: int, batch: tuple[int, ...]) -> None:
    d = random_matrices((*batch, h, h), seed=h)
    result = shortest_path(d)
    assert result.shape == batch
    assert result.dtype == torch.float64
    flat = d.reshape(-1, h, h)
    expected = torch.tensor([python_dp(m.tolist()) for m in flat], dtype=torch.float64)
    # Same float64 operations in the same order (a min, then one add per cell): bit-identical.
    assert torch.equal(result.reshape(-1), expected)
    # Float32 (the working precision) agrees up to rounding.
    result32 = shortest_path(d.float())
    assert result32.dtype == torch.float32
    torch.testing.assert_close(result32.double().reshape(-1), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("h", [1, 2, 3, 4])
def test_shortest_path_equals_exhaustive_enumeration(h: int) -> None:
    d = random_matrices((6, h, h), seed=10 + h)
    paths = all_monotone_paths(h)
    assert len(paths) == math.comb(2 * h - 2, h - 1)
    expected = torch.tensor(
        [min(sum(m[i, j].item() for i, j in p) for p in paths) for m in d], dtype=torch.float64
    )
    torch.testing.assert_close(shortest_path(d), expected, rtol=1e-12, atol=1e-12)


def test_shortest_path_simple_cases() -> None:
    d = random_matrices((4, 1, 1), seed=0)
    assert torch.equal(shortest_path(d), d[:, 0, 0])
    for h in STRIPES:
        assert shortest_path(torch.full((h, h), 0.25)).item() == pytest.approx((2 * h - 1) * 0.25)
    d = random_matrices((8, 8), seed=1)
    first_row_then_last_column = d[0].sum() + d[1:, -1].sum()
    assert shortest_path(d) <= first_row_then_last_column
    assert shortest_path(torch.zeros(0, 5, 4, 4)).shape == (0, 5)


@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 3), (5,), (0, 0)])
def test_shortest_path_rejects_non_square(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        shortest_path(torch.zeros(shape))


# ---------------------------------------------------------------------------- alignment path
@pytest.mark.parametrize("h", STRIPES)
def test_alignment_path_is_monotone_and_sums_to_shortest_path(h: int) -> None:
    for seed in range(3):
        d = random_matrices((h, h), seed=100 * h + seed, dtype=torch.float32)
        cells = alignment_path(d)
        assert len(cells) == 2 * h - 1
        assert cells[0] == (0, 0) and cells[-1] == (h - 1, h - 1)
        for (i0, j0), (i1, j1) in itertools.pairwise(cells):
            assert (i1 - i0, j1 - j0) in {(1, 0), (0, 1)}
        total = sum(d[i, j].item() for i, j in cells)
        assert total == pytest.approx(shortest_path(d).item(), rel=1e-6)


def test_alignment_path_breaks_ties_towards_the_upper_neighbour() -> None:
    # Every path of a constant matrix ties: walking back, the path always comes from above while
    # it can, i.e. forwards it runs along the first row, then down the last column.
    h = 5
    expected = [(0, j) for j in range(h)] + [(i, h - 1) for i in range(1, h)]
    assert alignment_path(torch.ones(h, h)) == expected
    with pytest.raises(ValueError):
        alignment_path(torch.ones(2, h, h))


def test_gradient_flows_only_along_the_unique_shortest_path() -> None:
    h = 6
    gen = torch.Generator().manual_seed(3)
    cells = [(0, 0), (1, 0), (1, 1), (1, 2), (2, 2), (3, 2), (3, 3), (3, 4), (4, 4), (5, 4), (5, 5)]
    on_path = indicator(h, cells)
    # Cells off the path cost more than the whole path: it is the unique optimum.
    d = torch.where(on_path.bool(), 0.05, 1.0) + 0.01 * torch.rand(h, h, generator=gen).double()
    d.requires_grad_(True)
    length = shortest_path(d)
    length.backward()
    assert torch.equal(d.grad, on_path)
    assert alignment_path(d) == cells
    assert length.item() == pytest.approx(d.detach()[on_path.bool()].sum().item())


@pytest.mark.parametrize("h", [2, 3, 8])
def test_gradient_is_the_indicator_of_the_alignment_path_even_with_ties(h: int) -> None:
    # Integer-valued matrices tie everywhere; the gradient still picks one path, the same one as
    # alignment_path, and every tie-free random matrix follows as well.
    gen = torch.Generator().manual_seed(h)
    ties = torch.randint(0, 3, (4, h, h), generator=gen).float()
    d = torch.cat([ties, torch.ones(1, h, h), torch.rand(3, h, h, generator=gen)])
    d.requires_grad_(True)
    shortest_path(d).sum().backward()
    for m, grad in zip(d.detach(), d.grad, strict=True):
        assert torch.equal(grad.double(), indicator(h, alignment_path(m)))


# ---------------------------------------------------------------------------- element distances
def direct_element_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[M, N, H, H]`` in float64: every stripe pair's Euclidean distance, then tanh(d / 2)."""
    diff = x.double()[:, None, :, None, :] - y.double()[None, :, None, :, :]
    return torch.tanh(diff.norm(dim=-1) / 2)


def test_stripe_distances_are_tanh_of_half_the_euclidean_distance() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 4, 6, generator=gen), torch.randn(5, 4, 6, generator=gen)
    d = stripe_distances(x, y)
    assert d.shape == (3, 5, 4, 4) and d.dtype == torch.float32
    expected = direct_element_distances(x, y)
    torch.testing.assert_close(d.double(), expected, rtol=1e-5, atol=1e-6)
    # The paper's form, where it does not overflow, is the same function.
    e = (torch.cdist(x.double().reshape(-1, 6), y.double().reshape(-1, 6))).exp()
    paper = ((e - 1) / (e + 1)).reshape(3, 4, 5, 4).permute(0, 2, 1, 3)
    torch.testing.assert_close(d.double(), paper, rtol=1e-5, atol=1e-6)
    assert ((d >= 0) & (d < 1)).all()
    local = local_distance(x, y)
    assert local.shape == (3, 5)
    assert ((local >= 0) & (local < 2 * 4 - 1)).all()


def test_stripe_distances_stay_finite_for_huge_distances() -> None:
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 4, 8, generator=gen) * 1e4).requires_grad_(True)
    y = (torch.randn(3, 4, 8, generator=gen) * 1e4).requires_grad_(True)
    euclidean = torch.cdist(x.detach().reshape(-1, 8), y.detach().reshape(-1, 8))
    assert (euclidean > 100).all()
    literal = (euclidean.exp() - 1) / (euclidean.exp() + 1)
    assert literal.isnan().all()  # inf / inf: why the element distance is written as tanh
    d = stripe_distances(x, y)
    assert torch.isfinite(d).all() and torch.equal(d, torch.ones_like(d))
    local_distance(x, y).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    # Identical stripes: the clamp before the square root keeps the gradient finite at 0.
    z = torch.randn(2, 4, 8, generator=gen).requires_grad_(True)
    paired_local_distance(z, z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_paired_versions_equal_the_diagonal_of_the_full_ones() -> None:
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 8, 16, generator=gen), torch.randn(6, 8, 16, generator=gen)
    full = stripe_distances(x, y)
    own = torch.arange(6)
    paired = paired_stripe_distances(x, y)
    assert paired.shape == (6, 8, 8)
    torch.testing.assert_close(paired, full[own, own], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        paired_local_distance(x, y), local_distance(x, y).diagonal(), rtol=1e-5, atol=1e-5
    )
    # Autocast does not lower the precision of either.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert paired_local_distance(x, y).dtype == torch.float32
        assert local_distance(x, y).dtype == torch.float32
    with pytest.raises(ValueError):
        paired_stripe_distances(x, y[:5])
    with pytest.raises(ValueError):
        stripe_distances(x, y[:, :7])


# ---------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("chunk_size", [None, 1, 3, 4, 10, 25])
def test_local_distance_fn_rows_equal_the_full_local_distance(chunk_size: int | None) -> None:
    gen = torch.Generator().manual_seed(4)
    query, gallery = torch.randn(7, 5, 8, generator=gen), torch.randn(10, 5, 8, generator=gen)
    full = local_distance(query, gallery)
    distance = local_distance_fn(query, gallery, chunk_size)
    for start, stop in [(0, 7), (2, 5), (6, 7), (3, 3)]:
        rows = distance(start, stop)
        assert rows.shape == (stop - start, 10) and rows.dtype == torch.float32
        torch.testing.assert_close(rows, full[start:stop], rtol=1e-5, atol=1e-5)


def test_local_distance_fn_splits_queries_and_gallery_within_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gen = torch.Generator().manual_seed(5)
    query, gallery = torch.randn(9, 4, 8, generator=gen), torch.randn(11, 4, 8, generator=gen)
    full = local_distance(query, gallery)
    # Room for 6 pairs of 4 x 4 stripes per block (3 float32 copies): more rows than pairs give
    # blocks of 6 queries x 1 gallery item, chunk_size=3 blocks of 2 queries x 3 gallery items.
    monkeypatch.setattr(ld, "MEMORY_BUDGET", 6 * 3 * 4 * 16)
    assert ld._block_sizes(9, 11, 4, None) == (6, 1)
    assert ld._block_sizes(2, 11, 4, None) == (2, 3)
    assert ld._block_sizes(9, 11, 4, 3) == (2, 3)
    shapes: list[tuple[int, int]] = []

    def recording(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shapes.append((len(x), len(y)))
        return local_distance(x, y)

    monkeypatch.setattr(ld, "local_distance", recording)
    for chunk_size, (start, stop) in itertools.product((None, 3), [(0, 9), (3, 5)]):
        rows = local_distance_fn(query, gallery, chunk_size)(start, stop)
        torch.testing.assert_close(rows, full[start:stop], rtol=1e-5, atol=1e-5)
    assert shapes and all(q * g <= 6 for q, g in shapes)


def test_local_distance_fn_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        local_distance_fn(torch.zeros(2, 4, 8), torch.zeros(3, 4, 8), chunk_size=0)
    with pytest.raises(ValueError):
        local_distance_fn(torch.zeros(2, 4, 8), torch.zeros(3, 5, 8))
    empty = local_distance_fn(torch.zeros(2, 4, 8), torch.zeros(0, 4, 8))(0, 2)
    assert empty.shape == (2, 0)


# ---------------------------------------------------------------------------- alignment at work
# Hand-made people, one part per stripe: orthogonal part features, so different parts are at
# Euclidean distance 4 * sqrt(2) (element distance tanh(2 * sqrt(2)) ~ 0.99) and equal parts at 0.
HEAD, TORSO, LEGS, FEET, BACKGROUND, OTHER_SHIRT = range(6)
PARTS = 4.0 * torch.eye(8)
PERSON = [HEAD, HEAD, TORSO, TORSO, TORSO, LEGS, LEGS, FEET]


def stripes(parts: list[int]) -> torch.Tensor:
    return PARTS[parts]


def unaligned(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The "unaligned" ablation: the sum of the element distances of stripes i and i."""
    return stripe_distances(x, y).diagonal(dim1=-2, dim2=-1).sum(-1)


def test_alignment_ranks_a_person_shifted_by_one_stripe_before_another_person() -> None:
    person = stripes(PERSON)[None]
    shifted = stripes([BACKGROUND, *PERSON[:-1]])  # the same person, one stripe lower
    other = stripes([HEAD, HEAD, OTHER_SHIRT, OTHER_SHIRT, OTHER_SHIRT, LEGS, LEGS, FEET])
    gallery = torch.stack([shifted, other])
    # Stripe by stripe, the shifted copy mismatches at each of its 4 part boundaries and the
    # other person only at the 3 shirt stripes: the unaligned sum ranks the wrong person first.
    same, different = unaligned(person, gallery)[0]
    assert same > different
    # The path slides along the shifted parts; the other person's shirt matches nothing.
    same, different = local_distance(person, gallery)[0]
    assert same < different
    path = alignment_path(stripe_distances(person, shifted[None])[0, 0])
    assert (2, 3) in path and (5, 6) in path  # torso on torso, legs on legs, one stripe apart


def test_two_stripe_shift_costs_less_aligned_than_unaligned() -> None:
    # With a one-stripe shift the matched cells (i, i+1) are joined through the cells (i, i),
    # so the path also pays the whole diagonal: aligned ~ unaligned there. Two stripes lower,
    # the path joins the matched cells (i, i+2) through neighbouring-stripe cells instead.
    person = stripes(PERSON)[None]
    shifted = stripes([BACKGROUND, BACKGROUND, *PERSON[:-2]])[None]
    aligned, plain = local_distance(person, shifted).item(), unaligned(person, shifted).item()
    assert aligned < plain - 1.5
    one_lower = stripes([BACKGROUND, *PERSON[:-1]])[None]
    assert local_distance(person, one_lower).item() == pytest.approx(
        unaligned(person, one_lower).item(), abs=1e-4
    )
