"""Benchmark: vectorised causal swap reward vs. re-evaluating NDCG for every swap.

Target (EVALUATION.md §6): 4,096 lists x K = 30 in <= 10 ms, >= 100x faster than re-evaluating NDCG
per swap, equal to 1e-6 (float64).

Baselines:

- *naive, batched per swap*: for every pair (k, j > k) swap columns k and j of all lists and
  recompute NDCG (IDCG included) with one batched tensor call, i.e. K(K-1)/2 NDCG evaluations;
- *naive, pure Python*: the same per list with plain loops, timed on a subset of lists and
  extrapolated linearly to all lists (printed as such).

Run: ``python benchmarks/perf/swap_reward.py [--lists 4096 --k 30 --repeats 20]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from flexrec.rewards.functional import ndcg, swap_rewards

TARGET_MS = 10.0
TARGET_SPEEDUP = 100.0


def naive_batched(placed_gains: Tensor, cutoff: int | None = None) -> Tensor:
    """Causal swap rewards by swapping two columns and recomputing NDCG, one pair at a time.

    Args:
        placed_gains: ``[N, K]`` gains in placed order.
        cutoff: NDCG cutoff or None.

    Returns:
        ``[N, K]`` rewards.
    """
    k_len = placed_gains.shape[-1]
    base = ndcg(placed_gains, cutoff)
    out = torch.zeros_like(placed_gains)
    for k in range(k_len - 1):
        for j in range(k + 1, k_len):
            swapped = placed_gains.clone()
            swapped[:, [k, j]] = placed_gains[:, [j, k]]
            out[:, k] += base - ndcg(swapped, cutoff)
        out[:, k] /= k_len - 1 - k
    return out


def _python_ndcg(gains: list[float], cutoff: int | None) -> float:
    def dcg(values: list[float]) -> float:
        c = len(values) if cutoff is None else cutoff
        return sum(g / math.log2(p + 2) for p, g in enumerate(values) if p < c)

    ideal = dcg(sorted(gains, reverse=True))
    return dcg(gains) / ideal if ideal > 0 else 0.0


def naive_python(rows: list[list[float]], cutoff: int | None = None) -> list[list[float]]:
    """The same reference with plain Python loops, list by list."""
    out = []
    for gains in rows:
        base = _python_ndcg(gains, cutoff)
        k_len = len(gains)
        row = []
        for k in range(k_len):
            total = 0.0
            for j in range(k + 1, k_len):
                swapped = list(gains)
                swapped[k], swapped[j] = swapped[j], swapped[k]
                total += base - _python_ndcg(swapped, cutoff)
            row.append(total / (k_len - 1 - k) if k < k_len - 1 else 0.0)
        out.append(row)
    return out


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in milliseconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def make_gains(lists: int, k: int, seed: int = 0) -> Tensor:
    """Graded gains 0..4 with ~70 % zeros (ties everywhere), ``[N, K]`` float64."""
    gen = torch.Generator().manual_seed(seed)
    graded = torch.randint(1, 5, (lists, k), generator=gen).double()
    return graded * (torch.rand(lists, k, generator=gen) < 0.3)


def main() -> None:
    """Run the benchmark and print the numbers and a one-line summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=int, default=4096)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of the fast path")
    parser.add_argument("--naive-repeats", type=int, default=5, help="timed runs of the naive path")
    parser.add_argument("--python-subset", type=int, default=32, help="lists for the Python loop")
    args = parser.parse_args()

    gains64 = make_gains(args.lists, args.k)
    gains32 = gains64.float()
    print(
        f"swap reward benchmark: {args.lists} lists x K = {args.k}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    fast32 = median_ms(lambda: swap_rewards(gains32), args.repeats)
    fast64 = median_ms(lambda: swap_rewards(gains64), args.repeats)
    print(f"  vectorised      float32: {fast32:9.3f} ms   (median of {args.repeats})")
    print(f"  vectorised      float64: {fast64:9.3f} ms   (median of {args.repeats})")

    naive64 = median_ms(lambda: naive_batched(gains64), args.naive_repeats, warmup=1)
    naive32 = median_ms(lambda: naive_batched(gains32), args.naive_repeats, warmup=1)
    print(
        f"  naive batched   float32: {naive32:9.3f} ms   (median of {args.naive_repeats}; "
        f"{args.k * (args.k - 1) // 2} NDCG re-evaluations per list)"
    )
    print(f"  naive batched   float64: {naive64:9.3f} ms   (median of {args.naive_repeats})")

    subset = gains64[: args.python_subset].tolist()
    start = time.perf_counter()
    reference = naive_python(subset)
    python_ms = (time.perf_counter() - start) * 1e3 * args.lists / len(subset)
    print(
        f"  naive Python    float64: {python_ms:9.1f} ms   (timed on {len(subset)} lists, "
        f"extrapolated linearly to {args.lists})"
    )

    fast = swap_rewards(gains64)
    diff_batched = (fast - naive_batched(gains64)).abs().max().item()
    diff_python = (fast[: len(subset)] - torch.tensor(reference, dtype=torch.float64)).abs().max()
    diff32 = (swap_rewards(gains32).double() - fast).abs().max().item()
    max_diff = max(diff_batched, diff_python.item())
    print(
        f"  max |vectorised - naive| float64: {max_diff:.2e} (batched {diff_batched:.2e}, "
        f"Python {diff_python.item():.2e}); float32 vs float64: {diff32:.2e}"
    )

    speedup64 = naive64 / fast64
    speedup32 = naive32 / fast32
    ok = max(fast32, fast64) <= TARGET_MS and min(speedup32, speedup64) >= TARGET_SPEEDUP
    ok = ok and max_diff <= 1e-6
    print(
        f"SUMMARY swap_reward {args.lists}x{args.k}: vectorised {fast32:.2f} ms (f32) / "
        f"{fast64:.2f} ms (f64), naive batched {naive32:.0f} / {naive64:.0f} ms -> "
        f"{speedup32:.0f}x / {speedup64:.0f}x (vs pure Python {python_ms / fast64:.0f}x), "
        f"max diff {max_diff:.1e}; targets <= {TARGET_MS:.0f} ms, >= {TARGET_SPEEDUP:.0f}x, "
        f"<= 1e-6: {'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
