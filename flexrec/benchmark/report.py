"""Aggregate a grid's results: mean ± standard error over seeds, paired differences, tables, CSV
and plots.

What ``report.md`` shows, per cell, need and split (test, and validation):

- **Absolute values** (``results.csv``): the mean over seeds ± the standard error, the sample
  standard deviation over seeds (``ddof = 1``) divided by ``sqrt(n)``; with one seed it is reported
  as 0 and flagged by ``n = 1``. The relative change is ``(mean − mean_ref) / |mean_ref|`` against
  the grid's reference cell. Seeds redraw the user split, so this standard error mixes test-set
  sampling with method noise.
- **Paired differences** against the reference cell on identical tasks (``paired.csv``, the
  section "Paired differences" and ``paired_ndcgat5.png``): the mean over seeds of each seed's mean
  per-task difference, its standard error over seeds, and a 95 % percentile bootstrap interval
  that resamples users within each seed (2,000 replicates, generator seed 0: reproducible); bold
  where the interval excludes 0. See :mod:`flexrec.benchmark.paired` for the statistics. They need
  the per-task metrics that runs write (``results/<cell>/seed<k>.tasks_<split>.csv``); rows in
  brackets are the reference rankings logged by the reference cell's runs (``[feature_popularity]``
  − reference, ...). Cells whose tasks differ from the reference's (another dataset) are listed,
  not compared.
- **Area under the validation curve** (``auc.csv``, after the validation NDCG tables): per run, the
  trapezoidal area under the validation curve over training tasks seen, divided by the x range
  (:func:`flexrec.benchmark.curves.curve_auc`), then mean ± standard error over seeds.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from flexrec.benchmark.curves import curve_auc, curve_points, mean_curve
from flexrec.benchmark.grid import label
from flexrec.benchmark.paired import (
    BOOTSTRAP_REPLICATES,
    BOOTSTRAP_SEED,
    PairedSummary,
    compare_cells,
    mean_se,
    reference_map,
)
from flexrec.errors import ConfigError
from flexrec.run_record import RECORDED_COMMANDS, read_task_metrics

__all__ = [
    "Summary",
    "aggregate",
    "auc_summaries",
    "load_results",
    "load_task_tables",
    "mean_se",
    "write_report",
]

TABLE_METRICS = (
    "ndcg@5",
    "ndcg@10",
    "recall@5",
    "recall@10",
    "mrr@10",
    "top5_popularity",
    "top5_coverage",
)

PAIRED_METRICS = ("ndcg@5", "ndcg@10", "recall@5", "recall@10", "mrr@10")
"""Metrics compared pairwise (and whose validation curves get an area under the curve)."""

AUC_TABLES = ("ndcg@5", "ndcg@10")
"""Validation metrics whose area under the curve is tabulated in ``report.md``."""


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


def aggregate(
    results: list[dict[str, Any]], reference: str | Mapping[str, str] | None = None
) -> list[Summary]:
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
    refs_of = reference_map(reference, order)
    rows = []
    for (cell, split, metric, need), (mean, se) in sorted(
        means.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1:])
    ):
        ref = means.get((refs_of[cell], split, metric, need)) if cell in refs_of else None
        relative = None
        if ref is not None and ref[0] != 0:
            relative = (mean - ref[0]) / abs(ref[0])
        n = len(samples[(cell, split, metric, need)])
        rows.append(Summary(cell, split, metric, need, mean, se, n, relative))
    return rows


def _table(rows: list[Summary], split: str, metric: str, title: str | None = None) -> list[str]:
    picked = [r for r in rows if r.split == split and r.metric == metric]
    needs = sorted({r.need for r in picked})
    cells = list(dict.fromkeys(r.cell for r in picked))
    if not picked:
        return []
    by = {(r.cell, r.need): r for r in picked}
    lines = [f"### {title or f'{split} {metric}'}", "", "| cell | " + " | ".join(needs) + " |"]
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


def _plots(
    results: list[dict[str, Any]], rows: list[Summary], paired: list[PairedSummary], out: Path
) -> list[str]:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    written = []
    needs = sorted({r.need for r in rows if r.split == "val"})
    for metric in ("ndcg@5", "ndcg@10"):
        for need in needs:
            key = f"val/{metric}/{need}"
            runs: dict[str, list[list[tuple[float, float]]]] = defaultdict(list)
            by_tasks = True
            for result in results:
                points, seen = curve_points(result, key)
                if points:
                    runs[result["cell"]].append(points)
                    by_tasks &= seen or len(points) == 1
            if not runs:
                continue
            fig, ax = plt.subplots(figsize=(8, 5))
            colors = plt.cm.tab10.colors
            for i, (cell, curves) in enumerate(sorted(runs.items())):
                xs, means = zip(*mean_curve(curves), strict=True)
                # 10 colours × 3 marker styles: distinct for up to 30 cells
                color, marker = colors[i % 10], "os^"[(i // 10) % 3]
                if len(xs) == 1:  # an untrained baseline: one evaluation, drawn as a level
                    ax.axhline(means[0], linestyle="--", linewidth=1, color=color, label=cell)
                else:
                    ax.plot(xs, means, marker=marker, markersize=3, color=color, label=cell)
            xlabel = "training tasks seen" if by_tasks else "epoch"
            ax.set(xlabel=xlabel, ylabel=f"val {metric}", title=f"{need}: validation {metric}")
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
            name = f"curve_{metric}_{need}.png".replace("@", "at")
            fig.tight_layout()
            _savefig(fig, out / name)
            plt.close(fig)
            written.append(name)
    split = "test" if any(r.split == "test" for r in rows) else "val"
    picked = [r for r in rows if r.split == split and r.metric == "ndcg@5"]
    if picked:
        written.append(_bars(plt, picked, split, out))
    split = "test" if any(p.split == "test" for p in paired) else "val"
    differences = [p for p in paired if p.split == split and p.metric == "ndcg@5"]
    if differences:
        written.append(_paired_bars(plt, differences, split, out))
    return written


def _bars(plt: Any, picked: list[Summary], split: str, out: Path) -> str:
    """One panel per need, one horizontal bar per cell (same order in every panel), with the
    standard error as error bar; references (``[name]``) in grey."""
    cells = sorted(dict.fromkeys(r.cell for r in picked), key=lambda c: (c.startswith("["), c))
    needs = sorted({r.need for r in picked})
    by = {(r.cell, r.need): r for r in picked}
    fig, axes, ys = _need_panels(plt, needs, cells)
    colors = ["0.6" if c.startswith("[") else "tab:blue" for c in cells]
    for ax, need in zip(axes[0], needs, strict=True):
        ms = [by[(c, need)].mean if (c, need) in by else float("nan") for c in cells]
        es = [by[(c, need)].se if (c, need) in by else 0.0 for c in cells]
        ax.barh(ys, ms, xerr=es, color=colors, capsize=2, height=0.7)
        ax.set_title(need, fontsize=9)
        ax.set_xlabel(f"{split} NDCG@5")
        ax.set_xlim(0, 1.02)
        ax.grid(axis="x", linewidth=0.4)
    title = f"{split} NDCG@5 per need (mean ± s.e. over seeds; grey: references)"
    return _finish_panels(plt, fig, axes, ys, cells, title, out / "bars_ndcgat5.png")


def _paired_bars(plt: Any, picked: list[PairedSummary], split: str, out: Path) -> str:
    """One panel per need: each cell's paired difference to the reference with its bootstrap
    interval; coloured where the interval excludes 0."""
    cells = list(dict.fromkeys(p.cell for p in picked))
    needs = sorted({p.need for p in picked})
    by = {(p.cell, p.need): p.stats for p in picked}
    fig, axes, ys = _need_panels(plt, needs, cells)
    for ax, need in zip(axes[0], needs, strict=True):
        for y, cell in zip(ys, cells, strict=True):
            st = by.get((cell, need))
            if st is None:
                continue
            color = ("tab:green" if st.low > 0 else "tab:red") if st.excludes_zero else "0.5"
            error = [[st.mean - st.low], [st.high - st.mean]]
            ax.errorbar(st.mean, y, xerr=error, fmt="o", color=color, capsize=2, markersize=4)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title(need, fontsize=9)
        ax.set_xlabel(f"{split} NDCG@5 − reference")
        ax.grid(axis="x", linewidth=0.4)
    title = (
        f"{split} NDCG@5, paired difference to the reference (mean over seeds, 95 % bootstrap "
        "interval over users; coloured: excludes 0)"
    )
    return _finish_panels(plt, fig, axes, ys, cells, title, out / "paired_ndcgat5.png")


def _need_panels(plt: Any, needs: list[str], cells: list[str]) -> tuple[Any, Any, list[int]]:
    """A figure with one panel per need sharing the y axis (one row per cell, top to bottom);
    returns the figure, its ``[1, len(needs)]`` axes and each cell's y position."""
    fig, axes = plt.subplots(
        1,
        len(needs),
        figsize=(2.0 + 3.6 * len(needs), 1.0 + 0.28 * len(cells)),
        sharey=True,
        squeeze=False,
    )
    return fig, axes, list(range(len(cells)))[::-1]


def _finish_panels(
    plt: Any, fig: Any, axes: Any, ys: list[int], cells: list[str], title: str, path: Path
) -> str:
    """Label the cells, title, save (atomically) and close a :func:`_need_panels` figure;
    returns the file name."""
    axes[0][0].set_yticks(ys, cells, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return path.name


def load_task_tables(
    out: Path, results: list[dict[str, Any]]
) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    """The per-task metrics of every run that saved them: ``(cell, seed, split) → rows``."""
    tables = {}
    for result in results:
        for split, name in (result.get("task_files") or {}).items():
            path = out / "results" / result["cell"] / name
            if path.is_file():
                tables[(result["cell"], result["seed"], split)] = read_task_metrics(path)
    return tables


def auc_summaries(
    results: list[dict[str, Any]], reference: str | Mapping[str, str] | None = None
) -> list[Summary]:
    """Mean ± standard error over seeds of each run's area under its validation curve
    (:func:`~flexrec.benchmark.curves.curve_auc`) per (cell, metric, need); split ``val``."""
    samples: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for result in results:
        for key in result.get("curves", {}):
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "val" and parts[1] in PAIRED_METRICS:
                points, _ = curve_points(result, key)
                xs, ys = zip(*points, strict=True)
                samples[(result["cell"], parts[1], parts[2])].append(curve_auc(xs, ys))
    means = {key: mean_se(values) for key, values in samples.items()}
    order = list(dict.fromkeys(r["cell"] for r in results))
    refs_of = reference_map(reference, order)
    rows = []
    for (cell, metric, need), (mean, se) in sorted(
        means.items(),
        key=lambda kv: (order.index(kv[0][0]), PAIRED_METRICS.index(kv[0][1]), kv[0][2]),
    ):
        ref = means.get((refs_of[cell], metric, need)) if cell in refs_of else None
        relative = (mean - ref[0]) / abs(ref[0]) if ref is not None and ref[0] != 0 else None
        n = len(samples[(cell, metric, need)])
        rows.append(Summary(cell, "val", metric, need, mean, se, n, relative))
    return rows


@contextmanager
def _replacing(path: Path, newline: str | None = None) -> Iterator[TextIO]:
    """Write ``path`` through a temporary file renamed into place (readers never see half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline=newline) as handle:
        yield handle
    os.replace(tmp, path)


def _savefig(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[Summary]) -> None:
    with _replacing(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "split", "metric", "need", "mean", "se", "n", "relative_change"])
        for r in rows:
            rel = "" if r.relative is None else f"{r.relative:.6f}"
            writer.writerow(
                [r.cell, r.split, r.metric, r.need, f"{r.mean:.6f}", f"{r.se:.6f}", r.n, rel]
            )


PAIRED_COLUMNS = (
    *("cell", "reference", "split", "metric", "need", "mean_difference", "se", "ci_low"),
    *("ci_high", "excludes_zero", "seeds", "tasks", "users"),
)
"""Columns of ``paired.csv``."""


def _write_paired_csv(path: Path, rows: list[PairedSummary]) -> None:
    with _replacing(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PAIRED_COLUMNS)
        for p in rows:
            st = p.stats
            numbers = [f"{v:.6f}" for v in (st.mean, st.se, st.low, st.high)]
            flags = [int(st.excludes_zero), st.seeds, st.tasks, st.users]
            writer.writerow([p.cell, p.reference, p.split, p.metric, p.need, *numbers, *flags])


def _paired_section(paired: list[PairedSummary], differ: list[str], against: str) -> list[str]:
    lines = [
        f"## Paired differences against {against}",
        "",
        "Cell − reference on identical tasks (same seed: same split and tasks): mean over seeds of "
        "each seed's mean per-task difference ± its standard error over seeds; in brackets the "
        f"95 % bootstrap interval resampling users within each seed ({BOOTSTRAP_REPLICATES} "
        f"replicates, generator seed {BOOTSTRAP_SEED}). **Bold**: the interval excludes 0. "
        "Rows in brackets are reference rankings scored in the reference cell's runs.",
        "",
    ]
    if differ:
        lines += [
            f"Not compared (their tasks differ from the reference's): {', '.join(differ)}.",
            "",
        ]
    if not paired:
        return [*lines, "No per-task metrics to compare (runs of an older flexrec).", ""]
    for split in ("test", "val"):
        for metric in PAIRED_METRICS:
            picked = [p for p in paired if p.split == split and p.metric == metric]
            if not picked:
                continue
            needs = sorted({p.need for p in picked})
            by = {(p.cell, p.need): p.stats for p in picked}
            ref_of = {p.cell: p.reference for p in picked}
            many = len(set(ref_of.values())) > 1
            lines += [f"### {split} {metric}: paired difference", ""]
            head = "| cell | reference | " if many else "| cell | "
            lines += [head + " | ".join(needs) + " |", "|---|" + "---|" * (len(needs) + many)]
            for cell in dict.fromkeys(p.cell for p in picked):
                entries = []
                for need in needs:
                    st = by.get((cell, need))
                    if st is None:
                        entries.append("–")
                        continue
                    text = f"{st.mean:+.4f} ± {st.se:.4f} [{st.low:+.4f}, {st.high:+.4f}]"
                    entries.append(f"**{text}**" if st.excludes_zero else text)
                first = f"| {cell} | {ref_of[cell]} | " if many else f"| {cell} | "
                lines.append(first + " | ".join(entries) + " |")
            lines.append("")
    return lines


def write_report(
    out: Path, reference: str | Mapping[str, str] | None = None, title: str = "flexrec-bench"
) -> Path:
    """Write ``report.md``, ``results.csv``, ``auc.csv``, ``paired.csv`` (with a reference) and PNG
    plots into ``out`` from its results.

    Args:
        out: the grid's output folder.
        reference: the reference cell of every other cell, or each cell's reference cell
            (:attr:`Grid.references <flexrec.benchmark.grid.Grid.references>`), or None.
        title: the report's title.
    """
    results = load_results(out)
    rows = aggregate(results, reference)
    _write_csv(out / "results.csv", rows)
    aucs = auc_summaries(results, reference)
    _write_csv(out / "auc.csv", aucs)
    paired: list[PairedSummary] = []
    differ: list[str] = []
    if reference:
        paired, differ = compare_cells(load_task_tables(out, results), reference, PAIRED_METRICS)
        _write_paired_csv(out / "paired.csv", paired)
    plots = _plots(results, rows, paired, out)
    seeds = sorted({r["seed"] for r in results})
    against = f"`{reference}`" if isinstance(reference, str) else "each cell's reference"
    wall = sum(r.get("wall_s", 0.0) for r in results)
    lines = [
        f"# {title}",
        "",
        f"{len(results)} finished runs, seeds {seeds}, {wall / 60:.1f} min of run time. "
        "Cells: mean ± standard error over seeds"
        + (f"; in brackets the relative change against {against}." if reference else "."),
        "Validation numbers are from the last validation, after the last training batch (no early "
        "stopping); test numbers from the last checkpoint. The area under the validation curve is "
        "its mean level over training tasks seen (trapezoidal, divided by the range).",
        "",
    ]
    for split in ("test", "val"):
        for metric in TABLE_METRICS:
            lines += _table(rows, split, metric)
            if split == "val" and metric in AUC_TABLES:
                lines += _table(aucs, split, metric, f"val {metric}: area under the curve")
    if reference:
        lines += _paired_section(paired, differ, against)
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
    path = out / "report.md"
    with _replacing(path) as handle:
        handle.write("\n".join(lines) + "\n")
    return path
