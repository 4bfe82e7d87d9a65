"""Paired comparisons on identical tasks: per-task differences, their mean, s.e. and a bootstrap.

Two runs of a grid with the same seed score the same tasks (the seed draws the user split and the
tasks; the tasks' identities and candidate fingerprints are checked, not assumed), so a cell can be
compared with the grid's reference cell task by task. Per (cell, split, need, metric):

- **Per-task differences** ``d_t = m_cell(t) − m_ref(t)`` on every task both scored. A task that a
  metric skips (all gains 0 for NDCG, no relevant candidate for Recall and MRR) is skipped by both,
  as the rule depends only on the task's labels.
- **Paired mean**: the mean over seeds of ``D_s``, the mean of ``d_t`` over the tasks of seed ``s``
  (= the cell's logged value minus the reference's on that seed).
- **Standard error**: ``std(D_s, ddof=1) / sqrt(S)`` over the ``S`` seeds (0 with one seed). It
  covers both training randomness and the draw of the split, but rests on few seeds.
- **95 % interval**: a percentile bootstrap that resamples **users**, stratified by seed. Each of
  :data:`BOOTSTRAP_REPLICATES` replicates draws, for every seed independently, as many users as
  that seed has, with replacement, from that seed's users; every task of a drawn user comes with
  it. The replicate's statistic is the mean over seeds of the task-weighted mean difference of the
  drawn tasks: the paired mean, recomputed. The interval is the 2.5 % and 97.5 % quantiles of the
  replicates; the generator is ``numpy.random.default_rng(BOOTSTRAP_SEED)``, re-seeded for every
  interval, so a report is reproducible. A cell is marked when its interval excludes 0.

Why users: the tasks of one user share the user's tastes and history, so their differences are
correlated; resampling tasks as if independent gives intervals that are too narrow. Why stratified
by seed: each seed's test users are their own draw (own split), so a user is resampled only within
its seed, and one interval is obtained for the same statistic as the paired mean (rather than one
interval per seed). What it covers: how much the difference depends on which users are tested, for
the models these seeds trained; not the randomness of training (the standard error over seeds
includes that).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "BOOTSTRAP_LEVEL",
    "BOOTSTRAP_REPLICATES",
    "BOOTSTRAP_SEED",
    "PairedStats",
    "PairedSummary",
    "SeedDifferences",
    "bootstrap_interval",
    "compare_cells",
    "mean_se",
    "paired_differences",
    "paired_mean_se",
    "paired_stats",
    "reference_map",
]

BOOTSTRAP_REPLICATES = 2000
"""Bootstrap replicates per interval."""

BOOTSTRAP_SEED = 0
"""Seed of the bootstrap's generator (re-seeded for every interval)."""

BOOTSTRAP_LEVEL = 0.95
"""Coverage of the percentile interval."""

Key = TypeVar("Key", bound=Hashable)

SeedDifferences = tuple[Sequence[float], Sequence[Hashable]]
"""One seed's per-task differences and, aligned with them, each task's user."""


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (``std(ddof=1) / sqrt(n)``; 0 for a single value).

    Examples:
        >>> mean, se = mean_se([0.5, 0.7, 0.9])
        >>> round(mean, 6), round(se, 6)
        (0.7, 0.11547)
    """
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def paired_differences(
    cell: Mapping[Key, float], reference: Mapping[Key, float]
) -> dict[Key, float]:
    """Per-task differences ``cell − reference`` on identical tasks.

    Args:
        cell: the cell's metric value per task (NaN: the metric skips the task).
        reference: the reference's, for the same tasks.

    Returns:
        ``task → difference`` for the tasks both scored, in ``cell``'s order.

    Raises:
        ValueError: the two did not score the same tasks.

    Examples:
        >>> paired_differences({"a": 0.75, "b": 0.25, "c": float("nan")},
        ...                    {"a": 0.5, "b": 0.5, "c": float("nan")})
        {'a': 0.25, 'b': -0.25}
    """
    if cell.keys() != reference.keys():
        only = len(cell.keys() - reference.keys()) + len(reference.keys() - cell.keys())
        raise ValueError(f"the two runs scored different tasks ({only} not in both)")
    return {
        key: value - reference[key]
        for key, value in cell.items()
        if not (math.isnan(value) or math.isnan(reference[key]))
    }


def paired_mean_se(per_seed: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Mean over seeds of each seed's mean difference, and its standard error over seeds.

    Args:
        per_seed: each seed's per-task differences (non-empty).

    Examples:
        >>> paired_mean_se([[0.5, 0.0], [0.25, 0.25, 0.25]])  # seed means 0.25 and 0.25
        (0.25, 0.0)
        >>> mean, se = paired_mean_se([[0.5], [0.25], [0.0]])
        >>> mean, round(se, 6)  # std(ddof=1) = 0.25, / sqrt(3)
        (0.25, 0.144338)
    """
    return mean_se([sum(d) / len(d) for d in per_seed])


def bootstrap_interval(
    per_seed: Sequence[SeedDifferences],
    replicates: int = BOOTSTRAP_REPLICATES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile interval of the paired mean, resampling users within each seed.

    See the module docstring. Passing each task's own index as its user resamples tasks instead.

    Args:
        per_seed: per seed, the per-task differences and each task's user (non-empty, aligned).
        replicates: bootstrap replicates.
        level: coverage of the interval.
        seed: seed of the generator.

    Returns:
        ``(low, high)``; NaN for no seeds.

    Examples:
        >>> low, high = bootstrap_interval([([0.25, 0.5, 0.75], ["u1", "u1", "u2"])])
        >>> 0.25 <= low < high <= 0.75
        True
    """
    if not per_seed:
        return math.nan, math.nan
    strata = []
    for differences, users in per_seed:
        _, user = np.unique(np.asarray([str(u) for u in users]), return_inverse=True)
        sums = np.bincount(user, weights=np.asarray(differences, dtype=np.float64))
        strata.append((sums, np.bincount(user).astype(np.float64)))
    total = np.zeros(replicates)
    for (sums, counts), drawn in zip(
        strata, _draws(seed, replicates, tuple(len(s) for s, _ in strata)), strict=True
    ):
        total += sums[drawn].sum(1) / counts[drawn].sum(1)
    total /= len(per_seed)
    tail = (1.0 - level) / 2
    low, high = np.quantile(total, [tail, 1.0 - tail])
    return float(low), float(high)


@functools.lru_cache(maxsize=4)
def _draws(seed: int, replicates: int, sizes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """The bootstrap's user draws (``[replicates, n]`` indices per stratum of ``n`` users): the
    same for every comparison with the same strata (a report's cells share their tasks), so they
    are drawn once (read-only; 8 kB per user and stratum at 2,000 replicates)."""
    rng = np.random.default_rng(seed)
    draws = tuple(rng.integers(0, n, size=(replicates, n), dtype=np.int32) for n in sizes)
    for drawn in draws:
        drawn.flags.writeable = False
    return draws


@dataclass(frozen=True)
class PairedStats:
    """A paired comparison over seeds.

    Attributes:
        mean: mean over seeds of the per-seed mean difference.
        se: its standard error over seeds.
        low: lower end of the bootstrap interval.
        high: upper end.
        seeds: seeds compared.
        tasks: tasks compared, over all seeds.
        users: users (per seed), over all seeds.
    """

    mean: float
    se: float
    low: float
    high: float
    seeds: int
    tasks: int
    users: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of 0."""
        return self.low > 0 or self.high < 0


def paired_stats(
    per_seed: Sequence[SeedDifferences], replicates: int = BOOTSTRAP_REPLICATES
) -> PairedStats:
    """Paired mean, standard error and bootstrap interval (seeds without tasks are dropped).

    Examples:
        >>> stats = paired_stats([([0.5, 0.0], ["a", "b"]), ([0.25], ["a"])])
        >>> stats.mean, stats.seeds, stats.tasks, stats.users
        (0.25, 2, 3, 3)
    """
    kept = [(list(d), list(u)) for d, u in per_seed if len(d)]
    if not kept:
        return PairedStats(math.nan, math.nan, math.nan, math.nan, 0, 0, 0)
    mean, se = paired_mean_se([d for d, _ in kept])
    low, high = bootstrap_interval(kept, replicates)
    users = sum(len({str(x) for x in u}) for _, u in kept)
    return PairedStats(mean, se, low, high, len(kept), sum(len(d) for d, _ in kept), users)


@dataclass(frozen=True)
class PairedSummary:
    """One row of a report's paired section: a cell against its reference on one need and split."""

    cell: str
    reference: str
    split: str
    metric: str
    need: str
    stats: PairedStats


Table = Sequence[Mapping[str, Any]]
"""Per-task rows of one run and split (:func:`flexrec.run_record.read_task_metrics`)."""

_IDENTITY = ("task", "user", "need", "cut", "candidates")


def _index(rows: Table) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """Rows by (ranker, need)."""
    index: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        index[(str(row["who"]), str(row["need"]))].append(row)
    return index


def _values(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[tuple[str, ...], float]:
    return {tuple(str(row[k]) for k in _IDENTITY): float(row.get(metric, math.nan)) for row in rows}


def reference_map(
    reference: str | Mapping[str, str] | None, cells: Sequence[str] | set[str]
) -> dict[str, str]:
    """Each cell's reference cell: one cell for all (``reference`` a name), or per cell (a mapping,
    :attr:`Grid.references <flexrec.benchmark.grid.Grid.references>`); cells without one are
    left out.

    Examples:
        >>> reference_map("ref", ["a", "ref", "b"])
        {'a': 'ref', 'b': 'ref'}
        >>> reference_map({"swap+K=20": "sequence+K=20"}, ["swap+K=20", "sequence+K=20"])
        {'swap+K=20': 'sequence+K=20'}
    """
    if reference is None:
        return {}
    if isinstance(reference, str):
        return {cell: reference for cell in cells if cell != reference}
    return {cell: ref for cell, ref in reference.items() if cell in cells and cell != ref}


def _compare(
    cell: str,
    reference: str,
    split: str,
    seeds: Mapping[int, tuple[Mapping[tuple[str, str], list[Any]], str]],
    refs: Mapping[tuple[int, str], Mapping[tuple[str, str], list[Any]]],
    metrics: Sequence[str],
    replicates: int,
) -> list[PairedSummary] | None:
    """One (cell, split) against the reference on every need and metric; None when the tasks of
    some seed and need differ from the reference's."""
    needs = sorted({need for index, who in seeds.values() for w, need in index if w == who})
    out = []
    for need in needs:
        for metric in metrics:
            per_seed: list[SeedDifferences] = []
            for seed in sorted(s for s in seeds if (s, split) in refs):
                index, who = seeds[seed]
                mine = _values(index.get((who, need), []), metric)
                theirs = _values(refs[(seed, split)].get(("policy", need), []), metric)
                try:
                    diffs = paired_differences(mine, theirs)
                except ValueError:
                    return None
                per_seed.append((list(diffs.values()), [key[1] for key in diffs]))
            if any(len(d) for d, _ in per_seed):
                out.append(
                    PairedSummary(
                        cell, reference, split, metric, need, paired_stats(per_seed, replicates)
                    )
                )
    return out


def compare_cells(
    tables: Mapping[tuple[str, int, str], Table],
    reference: str | Mapping[str, str],
    metrics: Sequence[str],
    replicates: int = BOOTSTRAP_REPLICATES,
) -> tuple[list[PairedSummary], list[str]]:
    """Every cell against its reference on identical tasks (see the module docstring).

    The cells are each table's ``policy`` rows; with a single reference cell, also the reference
    rankings that its runs logged (``[oracle]``, ``[random]``, ``[feature_popularity]``, ...: same
    tasks by construction). A task is identified by its index, user, need, cut and candidate
    fingerprint; a (cell, split) whose tasks on some seed and need differ from its reference's is
    not compared. Seeds the reference did not run are left out.

    Args:
        tables: per-task rows by (cell, seed, split).
        reference: the reference cell of every other cell, or each cell's reference cell
            (:func:`reference_map`).
        metrics: metric columns to compare.
        replicates: bootstrap replicates.

    Returns:
        The comparisons, in table order; and the names of the cells not compared because their
        tasks differ.
    """
    mapping = reference_map(reference, {cell for cell, _, _ in tables})
    targets = {reference} if isinstance(reference, str) else set(mapping.values())
    refs = {
        (cell, seed, split): _index(rows)
        for (cell, seed, split), rows in tables.items()
        if cell in targets
    }
    groups: dict[tuple[str, str, str], dict[int, tuple[dict[tuple[str, str], list[Any]], str]]] = {}
    for (cell, seed, split), rows in tables.items():
        if cell in mapping:
            key = (cell, mapping[cell], split)
            groups.setdefault(key, {})[seed] = (_index(rows), "policy")
    if len(targets) == 1:
        for (ref, seed, split), index in refs.items():
            for who in sorted({who for who, _ in index} - {"policy"}):
                key = (f"[{who.replace(':', '_')}]", ref, split)
                groups.setdefault(key, {})[seed] = (index, who)
    out: list[PairedSummary] = []
    differ: set[str] = set()
    for (cell, ref, split), seeds in groups.items():
        own = {(seed, sp): index for (rc, seed, sp), index in refs.items() if rc == ref}
        compared = _compare(cell, ref, split, seeds, own, metrics, replicates)
        if compared is None:
            differ.add(cell)
        else:
            out += compared
    return out, sorted(differ)
