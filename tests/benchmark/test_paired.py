"""Paired comparisons (differences on identical tasks, s.e., user bootstrap) and curve areas."""

from __future__ import annotations

import math

import pytest

from flexrec.benchmark.curves import curve_auc, mean_curve
from flexrec.benchmark.paired import (
    bootstrap_interval,
    compare_cells,
    paired_differences,
    paired_mean_se,
    paired_stats,
    reference_map,
)

NAN = math.nan


def _rows(who: str, values: dict[int, tuple[str, float]], need: str = "a") -> list[dict]:
    """Per-task rows as a run writes them: task index → (user, ndcg@5)."""
    return [
        {"who": who, "task": str(t), "user": u, "need": need, "cut": "", "candidates": "c",
         "ndcg@5": v}
        for t, (u, v) in values.items()
    ]  # fmt: skip


def test_paired_mean_and_standard_error_of_a_tiny_table_by_hand() -> None:
    # seed 0: tasks 0, 1, 2 (users x, x, y); seed 1: tasks 0, 1 (users x, y)
    ref = {
        ("ref", 0, "test"): _rows("policy", {0: ("x", 0.5), 1: ("x", 0.25), 2: ("y", 0.75)}),
        ("ref", 1, "test"): _rows("policy", {0: ("x", 0.5), 1: ("y", 0.5)}),
    }
    new = {
        ("new", 0, "test"): _rows("policy", {0: ("x", 0.75), 1: ("x", 0.5), 2: ("y", 0.5)}),
        ("new", 1, "test"): _rows("policy", {0: ("x", 1.0), 1: ("y", 0.5)}),
    }
    (row,), differ = compare_cells({**ref, **new}, "ref", ["ndcg@5"], replicates=200)
    assert differ == [] and (row.cell, row.split, row.metric, row.need) == (
        "new",
        "test",
        "ndcg@5",
        "a",
    )
    # differences: seed 0 (+0.25, +0.25, -0.25) → mean 1/12; seed 1 (+0.5, 0) → mean 0.25
    d0, d1 = 0.25 / 3, 0.25
    assert row.stats.mean == pytest.approx((d0 + d1) / 2)
    sd = math.sqrt(((d0 - (d0 + d1) / 2) ** 2 + (d1 - (d0 + d1) / 2) ** 2) / 1)
    assert row.stats.se == pytest.approx(sd / math.sqrt(2))
    assert (row.stats.seeds, row.stats.tasks, row.stats.users) == (2, 5, 4)
    assert row.stats.low <= row.stats.mean <= row.stats.high
    assert paired_mean_se([[0.25, 0.25, -0.25], [0.5, 0.0]]) == pytest.approx(
        (row.stats.mean, row.stats.se)
    )


def test_skipped_tasks_are_left_out_and_different_tasks_are_refused() -> None:
    assert paired_differences({1: 0.5, 2: NAN}, {1: 0.25, 2: NAN}) == {1: 0.25}
    with pytest.raises(ValueError, match="different tasks"):
        paired_differences({1: 0.5, 2: 0.5}, {1: 0.25, 3: 0.5})
    tables = {
        ("ref", 0, "test"): _rows("policy", {0: ("x", 0.5), 1: ("y", 0.5)}),
        ("other_data", 0, "test"): _rows("policy", {0: ("x", 0.5), 7: ("y", 0.5)}),
        ("same", 0, "test"): _rows("policy", {0: ("x", 0.75), 1: ("y", NAN)}),
    }
    rows, differ = compare_cells(tables, "ref", ["ndcg@5"], replicates=100)
    assert differ == ["other_data"]
    (row,) = rows
    assert row.cell == "same" and row.stats.mean == pytest.approx(0.25) and row.stats.tasks == 1


def test_reference_rankings_of_the_reference_runs_are_compared_too() -> None:
    rows = _rows("policy", {0: ("x", 0.5), 1: ("y", 0.75)})
    rows += _rows("feature:popularity", {0: ("x", 0.25), 1: ("y", 0.25)})
    compared, _ = compare_cells({("ref", 0, "val"): rows}, "ref", ["ndcg@5"], replicates=100)
    (row,) = compared
    assert row.cell == "[feature_popularity]" and row.split == "val"
    assert row.stats.mean == pytest.approx(-0.375)


def test_bootstrap_interval_contains_zero_for_a_symmetric_case() -> None:
    # per seed, 10 users gain 0.1 and 10 lose 0.1: the paired mean is 0 and the interval straddles it
    users = [f"u{i}" for i in range(20)]
    per_seed = [([0.1] * 10 + [-0.1] * 10, users) for _ in range(3)]
    stats = paired_stats(per_seed)
    assert stats.mean == pytest.approx(0.0, abs=1e-12)
    assert stats.low < 0 < stats.high and not stats.excludes_zero


def test_bootstrap_interval_excludes_zero_when_every_difference_is_positive() -> None:
    # every replicate averages positive differences only: its mean is ≥ the smallest, 0.01
    per_seed = [([0.01, 0.02, 0.3, 0.05], ["a", "b", "c", "d"]), ([0.04, 0.01], ["a", "e"])]
    low, high = bootstrap_interval(per_seed)
    assert 0.01 <= low < high <= 0.3
    assert paired_stats(per_seed).excludes_zero


def test_bootstrap_is_reproducible() -> None:
    per_seed = [([0.1, -0.3, 0.2, 0.05, 0.0], ["a", "b", "c", "d", "e"])]
    assert bootstrap_interval(per_seed) == bootstrap_interval(per_seed)
    assert bootstrap_interval(per_seed, seed=1) != bootstrap_interval(per_seed)


def test_resampling_users_keeps_the_correlation_of_their_tasks() -> None:
    # 10 users × 20 tasks; a user's tasks share its difference (+1 or -1): only 10 independent
    # units. Resampling tasks as if independent (200 units) gives an interval ~sqrt(20) narrower.
    differences, users = [], []
    for user in range(10):
        differences += [1.0 if user % 2 else -1.0] * 20
        users += [f"u{user}"] * 20
    by_user = bootstrap_interval([(differences, users)])
    by_task = bootstrap_interval([(differences, list(range(200)))])
    width_user, width_task = by_user[1] - by_user[0], by_task[1] - by_task[0]
    assert width_user > 3 * width_task
    # normal approximations: 2 × 1.96 × 1/sqrt(10) ≈ 1.24 and 2 × 1.96 × 1/sqrt(200) ≈ 0.28
    assert width_user == pytest.approx(1.24, abs=0.25)
    assert width_task == pytest.approx(0.28, abs=0.06)


def test_area_under_the_curve_by_hand() -> None:
    # trapezoids over x = tasks seen: 100 × (0.2 + 0.6)/2 + 200 × (0.6 + 0.4)/2 = 140, / 300
    assert curve_auc([300, 0, 100], [0.4, 0.2, 0.6]) == pytest.approx(140 / 300)
    assert curve_auc([64], [0.7]) == 0.7
    assert curve_auc([10, 10], [0.2, 0.4]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="at least one"):
        curve_auc([], [])
    assert mean_curve([[(1, 0.25)], [(3, 0.75)]]) == [(2.0, 0.5)]


def test_each_cell_against_its_own_reference_cell() -> None:
    tables = {
        ("swap+K=20", 0, "test"): _rows("policy", {0: ("x", 0.75), 1: ("y", 0.5)}),
        ("seq+K=20", 0, "test"): _rows("policy", {0: ("x", 0.5), 1: ("y", 0.5)}),
        ("swap+K=50", 0, "test"): _rows("policy", {0: ("u", 0.25), 1: ("v", 0.25)}),
        ("seq+K=50", 0, "test"): _rows("policy", {0: ("u", 0.5), 1: ("v", 0.75)}),
    }
    tables[("seq+K=20", 0, "test")] += _rows("oracle", {0: ("x", 1.0), 1: ("y", 1.0)})
    mapping = {"swap+K=20": "seq+K=20", "swap+K=50": "seq+K=50"}
    rows, differ = compare_cells(tables, mapping, ["ndcg@5"], replicates=100)
    assert differ == []
    # one row per paired cell, against its own reference; no bracketed rows with several
    assert {(r.cell, r.reference): r.stats.mean for r in rows} == {
        ("swap+K=20", "seq+K=20"): pytest.approx(0.125),
        ("swap+K=50", "seq+K=50"): pytest.approx(-0.375),
    }
    assert reference_map("seq+K=20", ["swap+K=20", "seq+K=20"]) == {"swap+K=20": "seq+K=20"}
