"""Set-up checks of a task set: do the needs' gains rank anything, and what stands in for time?

A task whose candidates all have the same gain (none above the interest threshold, or all equally
good) ranks nothing: every ranking, the oracle's and a random one alike, scores the same. A label
scale that does not fit the data makes most tasks like that (play counts read with a 1–5 style
threshold, a log of bare interactions) and training then silently learns nothing. The data module
refuses a need whose tasks are all flat and warns when most are (:func:`check_gains`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flexrec.data.dataset import InteractionData
from flexrec.data.labels import describe_scale
from flexrec.data.tasks import TaskSet
from flexrec.errors import DataError
from flexrec.needs.base import Need, _window_words

__all__ = [
    "MOSTLY",
    "GainStats",
    "check_gains",
    "gain_stats",
    "info_lines",
    "row_order_note",
]

MOSTLY = 0.5
"""Share of flat tasks from which :func:`check_gains` warns."""

_TOL = 1e-6


@dataclass(frozen=True)
class GainStats:
    """How many of a need's tasks in one split rank nothing.

    Attributes:
        need: the need's name.
        split: the split.
        tasks: its tasks there.
        no_gain: tasks whose candidates all have gain 0.
        equal_gain: tasks whose candidates all have the same positive gain (all relevant).
        flat_interest: tasks whose candidates' labels all give the same interest.
        threshold: the need's interest threshold τ.
        label: what the label is.
    """

    need: str
    split: str
    tasks: int
    no_gain: int
    equal_gain: int
    flat_interest: int
    threshold: float
    label: str

    @property
    def flat(self) -> int:
        """Tasks where the oracle ranking scores no better than a random one."""
        return self.no_gain + self.equal_gain


def gain_stats(tasks: TaskSet, needs: Sequence[Need], names: Sequence[str]) -> list[GainStats]:
    """:class:`GainStats` of the needs ``names`` (bound, in the order of ``tasks.need_names``)."""
    labels = np.where(tasks.observed, tasks.true_labels, np.nan)
    out = []
    for name in names:
        index = tasks.need_names.index(name)
        mask = tasks.need == index
        gains = tasks.gains[mask]
        if not len(gains):
            continue
        need = needs[index]
        spread = gains.max(-1) - gains.min(-1)
        flat = spread <= _TOL
        interest = need.interest(labels[mask]).numpy()
        out.append(
            GainStats(
                need=name,
                split=tasks.split,
                tasks=int(mask.sum()),
                no_gain=int((flat & (gains.max(-1) <= _TOL)).sum()),
                equal_gain=int((flat & (gains.max(-1) > _TOL)).sum()),
                flat_interest=int((interest.max(-1) - interest.min(-1) <= _TOL).sum()),
                threshold=float(need.threshold if need.threshold is not None else np.nan),
                label=need.label_name,
            )
        )
    return out


def _remedy(stats: GainStats) -> str:
    where = f"τ = {stats.threshold:,.6g} {stats.label}"
    if stats.flat_interest < stats.flat:
        return (
            f"the labels are not the cause (they vary in {stats.tasks - stats.flat_interest:,} "
            "of these tasks), the need's own term is constant in this data (novelty needs item "
            "categories: map a categories column)"
        )
    if stats.no_gain >= stats.equal_gain:
        return (
            f"no candidate label is above the interest threshold {where}: lower it "
            "(loader.labels: quantile, or loader.label_scale)"
        )
    return (
        f"every candidate is above {where}, all equally relevant: raise the threshold "
        "(loader.label_scale), or read the file as bare interactions with sampled "
        "non-interacted candidates (loader.labels: interacted)"
    )


def check_gains(stats: Sequence[GainStats]) -> list[str]:
    """Refuse needs whose tasks rank nothing; the warnings (one line each) for mostly flat ones.

    Raises:
        DataError: every task of a need has the same gain for all its candidates, or the labels
            give every candidate of every task the same interest (the need then ignores them:
            ``trend_promotion`` becomes a popularity ranking).
    """
    warnings = []
    for s in stats:
        where = f"{s.tasks:,} {s.split} tasks"
        if s.flat == s.tasks:
            raise DataError(
                f"{s.need}: all {where} give every candidate the same gain, so no ranking "
                f"beats another (oracle = random); {_remedy(s)}"
            )
        if s.flat_interest == s.tasks:
            raise DataError(
                f"{s.need}: in all {where} the labels give every candidate the same interest, "
                f"so its gains ignore the labels (only its other terms rank); {_remedy(s)}"
            )
        if s.flat >= MOSTLY * s.tasks:
            warnings.append(
                f"{s.need}: {s.flat / s.tasks:.0%} of the {where} give every candidate the same "
                f"gain (oracle = random: {s.no_gain:,} with no gain, {s.equal_gain:,} all "
                f"relevant); {_remedy(s)}"
            )
        elif s.flat_interest >= MOSTLY * s.tasks:
            warnings.append(
                f"{s.need}: in {s.flat_interest / s.tasks:.0%} of the {where} the labels give "
                f"every candidate the same interest; {_remedy(s)}"
            )
    return warnings


def row_order_note(data: InteractionData) -> str | None:
    """One line when row order stands in for time (no timestamps in the source), else None.

    It also says when each user's rows look sorted by label (an export ordered by play count,
    say), which would make "later" mean "lower label".
    """
    if data.time_unit != "rows":
        return None
    note = (
        f"{data.name} has no timestamps: row order stands in for time (history order, cut "
        f"points, statistics before a cut, trend window of {data.trend_window:,} rows)"
    )
    offsets = data.user_offsets
    monotone = checked = 0
    for start, end in itertools.pairwise(offsets):
        steps = np.diff(data.label[start:end])
        if len(np.unique(data.label[start:end])) < 3:
            continue
        checked += 1
        monotone += bool(np.all(steps <= 0) or np.all(steps >= 0))
    if checked and monotone >= 0.9 * checked:
        note += (
            f"; {monotone / checked:.0%} of the users' rows are sorted by {data.scale.name}, "
            "so shuffle each user's rows or add a timestamp column"
        )
    return note


def info_lines(data: InteractionData) -> list[str]:
    """What ``flexrec data info`` prints: the summary, how the file was read, the label rule and
    thresholds, and what time is."""
    p = data.provenance
    lines = [data.summary()]
    if p.get("layout") == "generic":
        columns = ", ".join(f"{role}={column}" for role, column in p.get("columns", {}).items())
        lines.append(f"read: {p.get('source')}: {p.get('format')}; columns {columns}")
    elif p.get("source"):
        lines.append(f"read: {p.get('source')} ({p.get('layout', 'own layout')})")
    scale = data.scale
    why = p.get("labels") or f"the documented {scale.name} scale of {data.name}"
    lines.append(f"labels: {why}")
    lines.append(f"thresholds: {describe_scale(scale)}")
    if scale.rule == "interacted":
        lines.append(
            "candidates: every label is an interaction, so the data module mixes sampled "
            "non-interacted items (label 0) into each task's candidates (negatives: half by default)"
        )
    note = row_order_note(data)
    if note is None:
        first, last = (int(data.timestamp.min()), int(data.timestamp.max()))
        span = f"{np.datetime64(first, 's')} to {np.datetime64(last, 's')}"
        note = f"timestamps from {span}; trend window {_window_words(data.trend_window)}"
    lines.append(f"time: {note}")
    return lines
