"""The vectorised rewards against slow references that literally swap items and re-evaluate NDCG."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
import torch

from flexrec.rewards import functional as F

Gains = list[float]


def ref_discount(position: int, cutoff: int | None) -> float:
    """D(p) for a 1-based position."""
    if cutoff is not None and position > cutoff:
        return 0.0
    return 1.0 / math.log2(position + 1)


def ref_dcg(gains: Gains, cutoff: int | None) -> float:
    total = 0.0
    for i, g in enumerate(gains):
        total += g * ref_discount(i + 1, cutoff)
    return total


def ref_ndcg(gains: Gains, cutoff: int | None) -> float:
    ideal = ref_dcg(sorted(gains, reverse=True), cutoff)
    if ideal <= 0:
        return 0.0
    return ref_dcg(gains, cutoff) / ideal


def ref_swap(gains: Gains, cutoff: int | None, causal: bool) -> Gains:
    """Mean over partners of R(y) - R(y with positions k and j swapped)."""
    k_len = len(gains)
    base = ref_ndcg(gains, cutoff)
    out = []
    for k in range(k_len):
        partners = [j for j in range(k_len) if (j > k if causal else j != k)]
        total = 0.0
        for j in partners:
            swapped = list(gains)
            swapped[k], swapped[j] = swapped[j], swapped[k]
            total += base - ref_ndcg(swapped, cutoff)
        out.append(total / len(partners) if partners else 0.0)
    return out


def ref_independent(gains: Gains, cutoff: int | None) -> Gains:
    ideal = ref_dcg(sorted(gains, reverse=True), cutoff)
    if ideal <= 0:
        return [0.0] * len(gains)
    return [g * ref_discount(i + 1, cutoff) / ideal for i, g in enumerate(gains)]


def ref_rank_dcg(gains: Gains, cutoff: int | None) -> Gains:
    items = ref_independent(gains, cutoff)
    return [sum(items[k:]) for k in range(len(items))]


def random_case(rng: random.Random) -> tuple[Gains, int | None]:
    """A random list: binary, graded-with-ties, continuous, sparse or all-zero gains; any cutoff."""
    k = rng.randint(1, 12)
    kind = rng.choice(["binary", "graded", "continuous", "sparse", "zero"])
    if kind == "binary":
        gains = [float(rng.random() < 0.4) for _ in range(k)]
    elif kind == "graded":
        gains = [float(rng.randint(0, 4)) for _ in range(k)]
    elif kind == "continuous":
        gains = [rng.uniform(0.0, 5.0) for _ in range(k)]
    elif kind == "sparse":
        gains = [rng.uniform(0.0, 2.0) if rng.random() < 0.2 else 0.0 for _ in range(k)]
    else:
        gains = [0.0] * k
    cutoff = None if rng.random() < 0.4 else rng.randint(1, k + 2)
    return gains, cutoff


CASES = [random_case(random.Random(seed)) for seed in range(1200)]

PAIRS: list[tuple[str, Callable[..., torch.Tensor], Callable[[Gains, int | None], Gains]]] = [
    ("swap", F.swap_rewards, lambda g, c: ref_swap(g, c, causal=True)),
    ("swap_noncausal", F.swap_noncausal_rewards, lambda g, c: ref_swap(g, c, causal=False)),
    ("independent", F.independent_rewards, ref_independent),
    ("rank_dcg", F.rank_dcg_rewards, ref_rank_dcg),
    ("sequence", F.sequence_rewards, lambda g, c: [ref_ndcg(g, c)] * len(g)),
]


def test_cases_cover_cutoffs_ties_and_zeros() -> None:
    assert sum(c is None for _, c in CASES) > 300
    assert sum(c is not None and c < len(g) for g, c in CASES) > 300
    assert sum(all(x == 0 for x in g) for g, _ in CASES) > 100
    assert sum(len(set(g)) < len(g) for g, _ in CASES) > 300


@pytest.mark.parametrize(("name", "fast", "slow"), PAIRS, ids=[p[0] for p in PAIRS])
def test_matches_reference_on_random_lists(
    name: str,
    fast: Callable[..., torch.Tensor],
    slow: Callable[[Gains, int | None], Gains],
) -> None:
    worst = 0.0
    for gains, cutoff in CASES:
        got = fast(torch.tensor(gains, dtype=torch.float64), cutoff)
        expected = torch.tensor(slow(gains, cutoff), dtype=torch.float64)
        worst = max(worst, (got - expected).abs().max().item())
    assert worst <= 1e-9, f"{name}: max abs error {worst:g}"


def test_ndcg_matches_reference() -> None:
    for gains, cutoff in CASES:
        got = F.ndcg(torch.tensor(gains, dtype=torch.float64), cutoff).item()
        assert got == pytest.approx(ref_ndcg(gains, cutoff), abs=1e-12)


@pytest.mark.parametrize("cutoff", [None, 3])
def test_batched_swap_matches_reference(cutoff: int | None) -> None:
    rng = random.Random(7)
    rows = [[float(rng.randint(0, 3)) for _ in range(8)] for _ in range(2 * 5)]
    got = F.swap_rewards(torch.tensor(rows, dtype=torch.float64).reshape(2, 5, 8), cutoff)
    expected = torch.tensor([ref_swap(r, cutoff, causal=True) for r in rows], dtype=torch.float64)
    torch.testing.assert_close(got.reshape(10, 8), expected, atol=1e-9, rtol=0.0)
