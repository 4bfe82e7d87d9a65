"""From raw labels to a :class:`~flexrec.data.dataset.LabelScale`: the rules for implicit feedback.

Needs score a candidate by its *interest*, ``clip(label − τ, 0, max − τ) / (max − τ)``, and call it
relevant at ``label ≥ relevant``; the rule below chooses τ, ``relevant`` and ``max`` for a file
whose labels come without a documented scale (:attr:`LoaderOptions.labels
<flexrec.data.options.LoaderOptions.labels>`):

- ``range``: ratings. τ at the midpoint of the smallest and largest label, relevance at the
  midpoint of τ and the largest (1–5 stars: τ = 3, relevant ≥ 4).
- ``quantile``: counts, durations, watch ratios. τ, ``relevant`` and ``max`` are quantiles of the
  labels (default the median, the 75th and the 95th percentile), so about half of all
  interactions carry interest whatever the units; a long tail (play counts up to 350,000)
  saturates at the 95th percentile instead of pushing every other label to ~0.
- ``interacted``: a bare interaction log. Every row with a positive label is an interaction
  (label 1), a row with label ≤ 0 an observed non-interaction (label 0): τ = 0, relevant = max = 1.
  Such a log says nothing to rank a user's own interactions by, so the data module mixes sampled
  non-interacted items into each task's candidates (``negatives``).
- ``auto`` (default): one distinct label → ``interacted``; ratings (at most 2 distinct values, or
  integer / half-step values spanning at most 10) → ``range``; anything else → ``quantile``.

Examples:
    >>> import numpy as np
    >>> choose_scale(np.array([1.0, 2, 3, 4, 5, 4]))[0]
    LabelScale(minimum=1.0, maximum=5.0, threshold=3.0, relevant=4.0, name='label', rule='range')
    >>> scale, why = choose_scale(np.array([1.0, 3, 8, 40, 200, 3500, 350_000]), name="plays")
    >>> (scale.rule, scale.threshold, scale.relevant, round(scale.maximum))
    ('quantile', 40.0, 1850.0, 246050)
    >>> choose_scale(np.ones(4), name="clicked")[0].rule
    'interacted'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flexrec.data.dataset import LabelScale
from flexrec.errors import DataError

__all__ = ["choose_scale", "describe_scale", "label_kind"]


def label_kind(labels: np.ndarray) -> tuple[str, str]:
    """``(rule, why)``: the rule ``auto`` picks for these labels and a phrase saying why.

    Examples:
        >>> label_kind(np.array([0.5, 3.0, 5.0]))
        ('range', '3 distinct values from 0.5 to 5 look like ratings')
        >>> label_kind(np.array([1.0, 1.0]))
        ('interacted', 'every label is 1: an interaction log without strengths')
    """
    values = np.unique(labels)
    low, high = float(values[0]), float(values[-1])
    if len(values) == 1:
        return "interacted", f"every label is {low:g}: an interaction log without strengths"
    steps = np.all(np.isclose(values * 2, np.round(values * 2)))
    if len(values) == 2 or (steps and high - low <= 10):
        return "range", f"{len(values)} distinct values from {low:g} to {high:g} look like ratings"
    kind = "counts" if np.all(values == np.round(values)) and low >= 0 else "continuous values"
    return "quantile", f"{len(values):,} distinct values from {low:g} to {high:,g} look like {kind}"


def _above(values: np.ndarray, x: float) -> float | None:
    """The smallest of the sorted ``values`` above ``x`` (None if none)."""
    i = int(np.searchsorted(values, x, side="right"))
    return float(values[i]) if i < len(values) else None


def choose_scale(
    labels: np.ndarray,
    rule: str = "auto",
    quantiles: Sequence[float] = (0.5, 0.75, 0.95),
    name: str = "label",
) -> tuple[LabelScale, str]:
    """The label scale of a rule (see the module docstring) and a one-line explanation.

    Args:
        labels: ``[N]`` finite labels (after ``interacted`` binarisation they are 0 / 1).
        rule: ``auto``, ``range``, ``quantile`` or ``interacted``.
        quantiles: quantiles of τ, relevance and saturation for ``quantile``.
        name: what the label is (prompts).

    Raises:
        DataError: labels that cannot carry interest (every label ≤ 0 under ``interacted``, a
            single value under ``range`` or ``quantile``).
    """
    labels = np.asarray(labels, dtype=np.float64)
    why = ""
    if rule == "auto":
        rule, why = label_kind(labels)
        why = f"auto: {why}"
    values = np.unique(labels)
    if rule == "interacted":
        if values[-1] <= 0:
            raise DataError(
                f"labels: every {name} is <= 0, so no row is an interaction "
                "(labels: interacted reads a positive label as one)"
            )
        positive = float(np.mean(labels > 0))
        scale = LabelScale(0.0, 1.0, 0.0, 1.0, name, rule="interacted")
        why = why or f"interacted: {positive:.0%} of the rows are interactions"
        return scale, why
    if len(values) < 2:
        raise DataError(
            f"labels: every {name} is {values[0]:g}, so no candidate is better than another; "
            "use labels: interacted (an interaction log) or give label_scale"
        )
    if rule == "range":
        low, high = float(values[0]), float(values[-1])
        tau = (low + high) / 2
        scale = LabelScale(low, high, tau, (tau + high) / 2, name, rule="range")
        return scale, why or f"range: midpoints of {low:,g}–{high:,g}"
    if rule != "quantile":
        raise DataError(f"unknown label rule {rule!r}; valid: auto, range, quantile, interacted")
    q_tau, q_rel, q_top = (float(v) for v in np.quantile(labels, list(quantiles)))
    # ties (most counts are 1, say) can put τ on the largest label or the other two on τ: keep
    # τ below some label and relevance / saturation above τ, so the rule never flattens the gains
    tau = q_tau if q_tau < values[-1] else float(values[-2])
    relevant = q_rel if q_rel > tau else _above(values, tau)
    top = q_top if q_top > tau else _above(values, tau)
    assert relevant is not None and top is not None
    top = max(top, relevant)
    scale = LabelScale(float(values[0]), top, tau, relevant, name, rule="quantile")
    if not why:
        why = "quantile"
    qs = "/".join(f"{q:g}" for q in quantiles)
    return scale, f"{why}; quantiles {qs} of the labels"


def describe_scale(scale: LabelScale) -> str:
    """One line for ``flexrec data info``: the thresholds the needs use.

    Examples:
        >>> describe_scale(LabelScale(0.5, 5.0, 3.0, 4.0, "rating"))
        'interest above τ = 3 rating, full at 5; relevant from 4 (labels from 0.5)'
    """
    return (
        f"interest above τ = {scale.threshold:,.6g} {scale.name}, full at {scale.maximum:,.6g}; "
        f"relevant from {scale.relevant:,.6g} (labels from {scale.minimum:,.6g})"
    )
