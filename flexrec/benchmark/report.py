"""Aggregate a grid's results: mean ± standard error over seeds, tables, CSV and plots.

The standard error is the sample standard deviation over seeds (``ddof = 1``) divided by
``sqrt(n)``; with one seed it is reported as 0 and flagged by ``n = 1``. The relative change is
``(mean − mean_ref) / |mean_ref|`` against the grid's reference cell.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexrec.benchmark.grid import label
from flexrec.errors import ConfigError
from flexrec.run_record import RECORDED_COMMANDS

__all__ = ["Summary", "aggregate", "load_results", "mean_se", "write_report"]

TABLE_METRICS = (
    "ndcg@5",
    "ndcg@10",
    "recall@5",
    "recall@10",
    "mrr@10",
    "top5_popularity",
    "top5_coverage",
)


def mean_se(values: list[float]) -> tuple[float, float]:
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


@dataclass(frozen=True)
class Summary:
    """One row of the report: a cell's metric on one need and split, over seeds."""

    cell: str
    split: str
    metric: str
    need: str
    mean: float
    se: float
    n: int
    relative: float | None


def load_results(out: Path) -> list[dict[str, Any]]:
    """Every finished run's result under ``out/results``."""
    files = sorted((out / "results").glob("*/seed*.json"))
    if not files:
        raise ConfigError(f"no finished runs under {out / 'results'}")
    return [json.loads(f.read_text()) for f in files]


def _final_values(result: dict[str, Any]) -> dict[tuple[str, str, str, str], float]:
    """``(who, split, metric, need) → value`` from a run's final fit/validate/test metrics.

    ``who`` is ``""`` for the policy and the reference's name (``oracle``, ``random``,
    ``feature_popularity``) for the reference rankings logged next to it.
    """
    values: dict[tuple[str, str, str, str], float] = {}
    for command in RECORDED_COMMANDS:
        for key, value in result["metrics"].get(command, {}).items():
            parts = key.split("/")
            if len(parts) != 3:
                continue
            split, _, who = parts[0].partition("_")
            if split in ("val", "test"):
                values[(who, split, parts[1], parts[2])] = float(value)
    return values


def _merge_references(
    values: dict[str, dict[str, dict[tuple[Any, ...], float]]],
) -> dict[str, dict[tuple[Any, ...], float]]:
    """Name the reference cells: ``[who]`` when every data configuration that logged ``who``
    agrees wherever they overlap to 1e-6 (same tasks → same reference values up to float32
    summation order; their keys are united),
    else ``[who] <data labels>`` per configuration."""
    cells: dict[str, dict[tuple[Any, ...], float]] = {}
    for who, per_data in values.items():
        merged: dict[tuple[Any, ...], float] = {}
        agree = True
        for samples in per_data.values():
            for key, value in samples.items():
                if key in merged and abs(merged[key] - value) > 1e-6:  # float32 sums
                    agree = False
                merged.setdefault(key, value)
        if agree or len(per_data) == 1:
            cells[f"[{who}]"] = merged
        else:
            for data, samples in per_data.items():
                cells[f"[{who}]" + (f" {data}" if data else "")] = samples
    return cells


def aggregate(results: list[dict[str, Any]], reference: str | None = None) -> list[Summary]:
    """Mean ± standard error over seeds per (cell, split, metric, need).

    Reference rankings logged by the runs become extra cells named ``[oracle]``, ``[random]``,
    ``[feature_popularity]``, ... (one sample per seed: every cell of a data configuration logs
    the same values). When the grid varies the data and the configurations' references differ,
    the labels of the cell's ``data.*`` overrides are appended (e.g. ``[oracle] ml-100k``).
    """
    samples: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    order: list[str] = []
    refs: dict[str, dict[str, dict[tuple[Any, ...], float]]] = defaultdict(dict)
    for result in results:
        if result["cell"] not in order:
            order.append(result["cell"])
        data = "+".join(
            label(v)
            for k, v in sorted(result.get("overrides", {}).items())
            if k.startswith("data.")
        )
        for (who, split, metric, need), value in _final_values(result).items():
            if who:  # references depend only on the tasks: keep the first value per seed
                refs[who].setdefault(data, {}).setdefault(
                    (result["seed"], split, metric, need), value
                )
            else:
                samples[(result["cell"], split, metric, need)].append(value)
    for cell, values in _merge_references(refs).items():
        order.append(cell)
        for (_, split, metric, need), value in sorted(values.items(), key=lambda kv: kv[0]):
            samples[(cell, split, metric, need)].append(value)
    means = {key: mean_se(vals) for key, vals in samples.items()}
    rows = []
    for (cell, split, metric, need), (mean, se) in sorted(
        means.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1:])
    ):
        ref = means.get((reference, split, metric, need)) if reference else None
        relative = None
        if ref is not None and ref[0] != 0:
            relative = (mean - ref[0]) / abs(ref[0])
        n = len(samples[(cell, split, metric, need)])
        rows.append(Summary(cell, split, metric, need, mean, se, n, relative))
    return rows


def _table(rows: list[Summary], split: str, metric: str) -> list[str]:
    picked = [r for r in rows if r.split == split and r.metric == metric]
    needs = sorted({r.need for r in picked})
    cells = list(dict.fromkeys(r.cell for r in picked))
    if not picked:
        return []
    by = {(r.cell, r.need): r for r in picked}
    lines = [f"### {split} {metric}", "", "| cell | " + " | ".join(needs) + " |"]
    lines.append("|---|" + "---|" * len(needs))
    for cell in cells:
        entries = []
        for need in needs:
            r = by.get((cell, need))
            if r is None:
                entries.append("–")
                continue
            rel = "" if r.relative is None else f" ({r.relative:+.1%})"
            entries.append(f"{r.mean:.4f} ± {r.se:.4f}{rel}")
        lines.append(f"| {cell} | " + " | ".join(entries) + " |")
    return [*lines, ""]


def _plots(results: list[dict[str, Any]], rows: list[Summary], out: Path) -> list[str]:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    written = []
    needs = sorted({r.need for r in rows if r.split == "val"})
    for metric in ("ndcg@5", "ndcg@10"):
        for need in needs:
            key = f"val/{metric}/{need}"
            curves: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
            for result in results:
                for epoch, value in result.get("curves", {}).get(key, []):
                    curves[result["cell"]][epoch].append(value)
            if not curves:
                continue
            fig, ax = plt.subplots(figsize=(8, 5))
            colors = plt.cm.tab10.colors
            for i, (cell, points) in enumerate(sorted(curves.items())):
                epochs = sorted(points)
                means = [sum(points[e]) / len(points[e]) for e in epochs]
                # 10 colours × 3 marker styles: distinct for up to 30 cells
                color, marker = colors[i % 10], "os^"[(i // 10) % 3]
                if len(epochs) == 1:  # an untrained baseline: one evaluation, drawn as a level
                    ax.axhline(means[0], linestyle="--", linewidth=1, color=color, label=cell)
                else:
                    ax.plot(epochs, means, marker=marker, color=color, label=cell)
            ax.set(xlabel="epoch", ylabel=f"val {metric}", title=f"{need}: validation {metric}")
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
            name = f"curve_{metric}_{need}.png".replace("@", "at")
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            written.append(name)
    split = "test" if any(r.split == "test" for r in rows) else "val"
    picked = [r for r in rows if r.split == split and r.metric == "ndcg@5"]
    if picked:
        written.append(_bars(plt, picked, split, out))
    return written


def _bars(plt: Any, picked: list[Summary], split: str, out: Path) -> str:
    """One panel per need, one horizontal bar per cell (same order in every panel), with the
    standard error as error bar; references (``[name]``) in grey."""
    cells = sorted(dict.fromkeys(r.cell for r in picked), key=lambda c: (c.startswith("["), c))
    needs = sorted({r.need for r in picked})
    by = {(r.cell, r.need): r for r in picked}
    fig, axes = plt.subplots(
        1,
        len(needs),
        figsize=(2.0 + 3.6 * len(needs), 1.0 + 0.28 * len(cells)),
        sharey=True,
        squeeze=False,
    )
    ys = list(range(len(cells)))[::-1]
    colors = ["0.6" if c.startswith("[") else "tab:blue" for c in cells]
    for ax, need in zip(axes[0], needs, strict=True):
        ms = [by[(c, need)].mean if (c, need) in by else float("nan") for c in cells]
        es = [by[(c, need)].se if (c, need) in by else 0.0 for c in cells]
        ax.barh(ys, ms, xerr=es, color=colors, capsize=2, height=0.7)
        ax.set_title(need, fontsize=9)
        ax.set_xlabel(f"{split} NDCG@5")
        ax.set_xlim(0, 1.02)
        ax.grid(axis="x", linewidth=0.4)
    axes[0][0].set_yticks(ys, cells, fontsize=7)
    fig.suptitle(f"{split} NDCG@5 per need (mean ± s.e. over seeds; grey: references)", fontsize=9)
    fig.tight_layout()
    name = "bars_ndcgat5.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def write_report(out: Path, reference: str | None = None, title: str = "flexrec-bench") -> Path:
    """Write ``report.md``, ``results.csv`` and PNG plots into ``out`` from its results."""
    results = load_results(out)
    rows = aggregate(results, reference)
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "split", "metric", "need", "mean", "se", "n", "relative_change"])
        for r in rows:
            rel = "" if r.relative is None else f"{r.relative:.6f}"
            writer.writerow(
                [r.cell, r.split, r.metric, r.need, f"{r.mean:.6f}", f"{r.se:.6f}", r.n, rel]
            )
    plots = _plots(results, rows, out)
    seeds = sorted({r["seed"] for r in results})
    wall = sum(r.get("wall_s", 0.0) for r in results)
    lines = [
        f"# {title}",
        "",
        f"{len(results)} finished runs, seeds {seeds}, {wall / 60:.1f} min of run time. "
        "Cells: mean ± standard error over seeds"
        + (f"; in brackets the relative change against `{reference}`." if reference else "."),
        "Validation numbers are from the last epoch (no early stopping); test numbers from the "
        "last checkpoint.",
        "",
    ]
    for split in ("test", "val"):
        for metric in TABLE_METRICS:
            lines += _table(rows, split, metric)
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
    path = out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path
