"""Validation learning curves of a grid's runs, and the area under them.

A run's result holds ``curves``: for each validation metric, one point per validation pass of its
first command, ``[epoch, value, tasks_seen]``; ``tasks_seen`` is the number of training tasks the
model had seen (``val/tasks_seen``), missing in results of older runs, whose points are
``[epoch, value]`` and are placed by epoch instead. The grid runner validates at least 10 times per
fit (:class:`flexrec.lightning_cli.ValidationPoints`), the last time after the last batch.

The **area under the validation curve** summarises a whole run in one number on the metric's
scale: the trapezoidal integral of the curve over its x range divided by that range (the curve's
mean level over training; the value itself for a one-point curve). It rewards learning fast as well
as ending high. Its x range runs from the first validation to the last, not from 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

__all__ = ["curve_auc", "curve_points", "mean_curve"]


def curve_auc(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Trapezoidal area under ``ys`` over ``xs``, divided by the x range.

    Points are sorted by x first. A single point, or points sharing one x, give the mean of ``ys``.

    Examples:
        >>> curve_auc([0, 1, 3], [0.0, 1.0, 1.0])  # (0.5 + 2) / 3
        0.8333333333333334
        >>> curve_auc([5], [0.4])
        0.4
    """
    if not xs or len(xs) != len(ys):
        raise ValueError(f"a curve needs as many x as y values and at least one: {xs!r}, {ys!r}")
    points = sorted(zip(xs, ys, strict=True))
    width = points[-1][0] - points[0][0]
    if width == 0:
        return sum(ys) / len(ys)
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(points))
    return area / width


def curve_points(result: dict[str, Any], key: str) -> tuple[list[tuple[float, float]], bool]:
    """A run's curve for ``key`` as ``(x, value)`` points, and whether x is training tasks seen
    (else the epoch: results of runs made before ``val/tasks_seen`` was logged)."""
    raw = result.get("curves", {}).get(key, [])
    by_tasks = bool(raw) and all(len(p) > 2 and p[2] is not None for p in raw)
    return [(float(p[2] if by_tasks else p[0]), float(p[1])) for p in raw], by_tasks


def mean_curve(curves: Sequence[Sequence[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Average curves point by point: the ``i``-th point is the mean x and the mean value of the
    ``i``-th points of the curves that have one (seeds of a cell validate at the same task counts
    when their training sets have the same size).

    Examples:
        >>> mean_curve([[(10, 0.5), (20, 0.7)], [(10, 0.3), (20, 0.5), (30, 0.6)]])
        [(10.0, 0.4), (20.0, 0.6), (30.0, 0.6)]
    """
    length = max((len(c) for c in curves), default=0)
    out = []
    for i in range(length):
        points = [c[i] for c in curves if len(c) > i]
        n = len(points)
        out.append((sum(p[0] for p in points) / n, sum(p[1] for p in points) / n))
    return out
