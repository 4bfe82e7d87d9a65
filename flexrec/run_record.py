"""The run record: what every run writes next to its logs, so a result can be traced and redone.

A run directory (the first logger's ``log_dir``) holds a ``run.json`` with the resolved config, the
seed, package and plug-in versions, the git commit and the final metrics of each subcommand run
there (``{"metrics": {"fit": {...}, "test": {...}}}``). :class:`flexrec.lightning_cli.FlexRecCLI`
writes it; ``flexrec-bench`` reads it.

Next to it, ``tasks_val.csv`` (after ``fit`` with validation, or ``validate``) and
``tasks_test.csv`` (after ``test``) hold each task's own metric values from the last evaluation of
that split, one row per ranker and task (:data:`TASK_COLUMNS`, then one column per metric:
``ndcg@5``, ``ndcg@10``, ``recall@5``, ``recall@10``, ``mrr@10``, ``valid_rate``, ``top5_popularity``,
``top5_coverage``; empty where the metric skips the task). ``who`` is ``policy`` or a reference
ranking (``oracle``, ``random``, ``feature:popularity``); ``task``, ``user`` and ``cut`` come from
the tasks' provenance; ``candidates`` is a CRC-32 of the task's candidate ids in prompt order, so
two runs can check that they scored the same tasks. The mean of a metric column over a need's
``policy`` rows is the logged ``{split}/{metric}/{need}``. Single-process runs only: under
distributed training no per-task file is written.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "PACKAGES",
    "RECORDED_COMMANDS",
    "RUN_RECORD",
    "TASK_COLUMNS",
    "provenance",
    "read_task_metrics",
    "record_metrics",
    "summary_lines",
    "task_metrics_file",
    "write_json_atomic",
    "write_task_metrics",
]

RUN_RECORD = "run.json"
"""File name of the run record inside a run directory."""

RECORDED_COMMANDS = ("fit", "validate", "test")
"""The ``flexrec`` subcommands whose final metrics the run record holds (``predict`` logs none)."""

PACKAGES = ("flexrec", "torch", "lightning", "transformers", "peft", "pluggy", "torchmetrics")
"""Distributions whose versions the run record lists (those installed)."""


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file next to ``path``, then rename it into place.

    Readers never see a partial file, and a killed writer leaves at most a hidden ``.tmp`` file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


TASK_COLUMNS = ("who", "task", "user", "need", "cut", "candidates")
"""The identity columns of a per-task metrics file; every other column is a metric."""


def task_metrics_file(run_dir: Path, split: str) -> Path:
    """``run_dir/tasks_{split}.csv``."""
    return run_dir / f"tasks_{split}.csv"


def write_task_metrics(run_dir: Path, split: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write the per-task metrics of one split atomically (temporary file, then rename).

    Args:
        run_dir: the run directory.
        split: ``val`` or ``test``.
        rows: one mapping per (ranker, task) with the :data:`TASK_COLUMNS` and metric values
            (NaN or None: skipped, written as an empty field). Metric columns are the union of the
            rows' other keys, in first-seen order.

    Returns:
        The path written.
    """
    metrics = list(dict.fromkeys(k for row in rows for k in row if k not in TASK_COLUMNS))
    path = task_metrics_file(run_dir, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*TASK_COLUMNS, *metrics])
        for row in rows:
            values = [row.get(name) for name in metrics]
            writer.writerow(
                [row.get(name, "") for name in TASK_COLUMNS]
                + ["" if v is None or math.isnan(v) else repr(float(v)) for v in values]
            )
    os.replace(tmp, path)
    return path


def read_task_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a per-task metrics file: identity columns as strings, metrics as floats (NaN
    where empty)."""
    with path.open(newline="") as handle:
        return [
            {
                key: value if key in TASK_COLUMNS else float(value) if value else math.nan
                for key, value in row.items()
            }
            for row in csv.DictReader(handle)
        ]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """Provenance of a run: config, seed, versions, plug-ins and git commit.

    Args:
        config: the run's resolved config (plain containers); its ``seed_everything`` is the seed.

    Returns:
        ``{"config", "seed", "versions", "plugins", "git_commit"}``.
    """
    from flexrec.registry import registries

    plugins = sorted(
        {
            f"{e.plugin} ({e.distribution} {e.version})" if e.distribution else e.plugin
            for registry in registries
            for e in registry.entries()
        }
    )
    return {
        "config": config,
        "seed": config.get("seed_everything"),
        "versions": _versions(),
        "plugins": plugins,
        "git_commit": _git_commit(),
    }


def record_metrics(
    run_dir: Path, subcommand: str, config: dict[str, Any], metrics: Mapping[str, float]
) -> Path:
    """Write (or update) ``run_dir/run.json`` with the provenance and one subcommand's metrics.

    Metrics of other subcommands already recorded there are kept.

    Args:
        run_dir: the run directory.
        subcommand: one of :data:`RECORDED_COMMANDS`.
        config: the resolved config of the subcommand (plain containers).
        metrics: final metric values by logged key.

    Returns:
        The path of the run record.
    """
    path = run_dir / RUN_RECORD
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update(provenance(config))
    record.setdefault("metrics", {})[subcommand] = dict(sorted(metrics.items()))
    write_json_atomic(path, record)
    return path


def summary_lines(
    metrics: Mapping[str, float],
    split: str,
    references: Sequence[str],
    columns: Sequence[str],
    needs: Sequence[str] | None = None,
    tasks: Mapping[str, int] | None = None,
) -> list[str]:
    """A compact table of an evaluation: per need, the policy's main metrics next to the
    references'.

    Args:
        metrics: logged values by key (``{split}/{metric}/{need}`` for the policy,
            ``{split}_{reference}/{metric}/{need}`` for a reference, ``:`` written ``_``).
        split: ``val`` or ``test``.
        references: reference names (``oracle``, ``random``, ``feature:popularity``), shown by
            their last part (``popularity``).
        columns: metrics to show (those never logged are left out).
        needs: the needs in the order to show (default: those logged, sorted).
        tasks: per need, the number of tasks evaluated (shown when given).

    Returns:
        The lines, or no line when nothing of the split was logged.

    Examples:
        >>> values = {"val/ndcg@5/a": 0.61, "val_oracle/ndcg@5/a": 1.0, "val_feature_popularity/ndcg@5/a": 0.5}
        >>> for line in summary_lines(values, "val", ["oracle", "feature:popularity"], ["ndcg@5"]):
        ...     print(line)
        need a        ndcg@5
          policy       0.610
          oracle       1.000
          popularity   0.500
    """
    logged = sorted(
        {
            key.split("/", 2)[2]
            for key in metrics
            if key.startswith(f"{split}/") and key.count("/") == 2
        }
    )
    needs = [n for n in (needs or logged) if n in logged]
    shown = [c for c in columns if any(f"{split}/{c}/{n}" in metrics for n in needs)]
    if not needs or not shown:
        return []
    rankers = [("policy", split)] + [
        (name.split(":")[-1], f"{split}_{name.replace(':', '_')}") for name in references
    ]
    heads = [
        f"need {need}" + (f" ({tasks[need]:,} tasks)" if tasks and need in tasks else "")
        for need in needs
    ]
    width = max(len(h) for h in heads + [f"  {label}" for label, _ in rankers]) + 2
    widths = [max(len(c), 6) for c in shown]
    lines = []
    for need, head in zip(needs, heads, strict=True):
        lines.append(
            head.ljust(width) + "  ".join(c.rjust(w) for c, w in zip(shown, widths, strict=True))
        )
        for label, prefix in rankers:
            cells = []
            for column, w in zip(shown, widths, strict=True):
                value = metrics.get(f"{prefix}/{column}/{need}")
                text = "-" if value is None or math.isnan(float(value)) else f"{float(value):.3f}"
                cells.append(text.rjust(w))
            lines.append(f"  {label}".ljust(width) + "  ".join(cells))
    return lines
