"""Validate and run a grid: every (cell, seed) in its own processes, resumable, atomic results.

Layout under the output folder::

    OUT/grid.yaml                       copy of the grid file
    OUT/runs/<cell>/seed<k>/cell.yaml   the resolved config of the run
    OUT/runs/<cell>/seed<k>/...         Lightning logs, checkpoints, run.json
    OUT/results/<cell>/seed<k>.json     the run's metrics, written last (temp file + rename)

A run counts as finished only when its result file exists, so a killed grid leaves no partial
result; rerunning skips finished runs and restarts unfinished ones from scratch.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from flexrec.benchmark.grid import Cell, Grid
from flexrec.errors import ConfigError, FlexRecError
from flexrec.registry import ComponentSpec, Registry, registries
from flexrec.train import write_json_atomic

__all__ = ["Run", "plan", "run_grid", "validate_grid"]


@dataclass(frozen=True)
class Run:
    """One (cell, seed) of a grid."""

    cell: Cell
    seed: int
    out: Path

    @property
    def run_dir(self) -> Path:
        """Where the run's configs and logs go."""
        return self.out / "runs" / self.cell.name / f"seed{self.seed}"

    @property
    def result_path(self) -> Path:
        """The result file; its existence marks the run finished."""
        return self.out / "results" / self.cell.name / f"seed{self.seed}.json"


def plan(grid: Grid, out: Path, pattern: str | None = None) -> list[Run]:
    """Every run of the selected cells, cell-major."""
    return [Run(cell, seed, out) for cell in grid.select(pattern) for seed in grid.seeds]


def _check_spec(registry: Registry[Any], spec: Any, build: bool) -> None:
    if build:
        registry.build(spec)
        return
    parsed = ComponentSpec.parse(spec, registry.kind)
    cls = registry.get(parsed.name)
    params = Registry.parameters(cls)
    unknown = [k for k in parsed.args if k not in params]
    if unknown:
        raise ConfigError(
            f"{registry.kind} {parsed.name!r}: unknown argument {unknown[0]!r}; "
            f"valid: {', '.join(params)}"
        )


def _validate_cell(grid: Grid, cell: Cell) -> None:
    cfg = OmegaConf.to_container(cell.config(grid.base, grid.seeds[0], Path("unused")))
    assert isinstance(cfg, dict)
    model = cfg.get("model") or {}
    from flexrec.plugin.manager import load_plugins

    load_plugins(model.get("plugins") or [])
    _check_spec(registries.reward, model.get("reward", "swap"), build=True)
    _check_spec(registries.estimator, model.get("estimator", "ua_grpo"), build=True)
    if model.get("feedback") is not None:
        _check_spec(registries.feedback, model["feedback"], build=True)
    # Policies need the data's facts (and may load an LLM): check names and arguments only.
    _check_spec(registries.policy, model.get("policy", "native"), build=False)
    data = (cfg.get("data") or {}).get("init_args") or {}
    for need in data.get("needs") or []:
        _check_spec(registries.need, need, build=True)


def validate_grid(grid: Grid, pattern: str | None = None) -> int:
    """Build every selected cell's components (no data, no training).

    Returns:
        the number of cells checked.

    Raises:
        ConfigError: the first bad cell, named in the one-line message.
    """
    cells = grid.select(pattern)
    if not cells:
        raise ConfigError(f"no cell of {grid.path} matches filter {pattern!r}")
    for cell in cells:
        try:
            _validate_cell(grid, cell)
        except FlexRecError as exc:
            raise ConfigError(f"cell {cell.name!r}: {exc}") from exc
    return len(cells)


def _flexrec(args: list[str], log: Path, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    with log.open("a") as handle:
        proc = subprocess.run(
            [sys.executable, "-m", "flexrec.cli", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"`flexrec {' '.join(args[:1])}` exited {proc.returncode}; see {log}")


def _read_curves(csv_path: Path) -> dict[str, list[list[float]]]:
    """``{metric: [[epoch, value], ...]}`` for every validation metric in a Lightning CSV log."""
    curves: dict[str, list[list[float]]] = {}
    if not csv_path.is_file():
        return curves
    with csv_path.open() as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key.startswith("val") and value not in ("", None):
                    curves.setdefault(key, []).append([float(row["epoch"]), float(value)])
    return curves


def execute(run: Run, threads: int = 1) -> dict[str, Any]:
    """Run one (cell, seed) from scratch and write its result file atomically."""
    if run.run_dir.exists():
        shutil.rmtree(run.run_dir)  # leftovers of a killed attempt
    run.run_dir.mkdir(parents=True)
    grid_base = OmegaConf.load(run.out / "base.yaml")
    config = run.run_dir / "cell.yaml"
    OmegaConf.save(run.cell.config(grid_base, run.seed, run.run_dir), config)
    log = run.run_dir / "output.log"
    start = time.time()
    metrics: dict[str, dict[str, float]] = {}
    for version, command in enumerate(run.cell.commands):
        args = [command, f"--config={config}", "--trainer.enable_progress_bar=false"]
        if command != "fit" and "fit" in run.cell.commands:
            args.append(
                f"--ckpt_path={run.run_dir / 'logs' / 'version_0' / 'checkpoints' / 'last.ckpt'}"
            )
        _flexrec(args, log, threads)
        record = json.loads((run.run_dir / "logs" / f"version_{version}" / "run.json").read_text())
        metrics[command] = record["metrics"][command]
    result = {
        "cell": run.cell.name,
        "seed": run.seed,
        "overrides": run.cell.overrides,
        "commands": list(run.cell.commands),
        "metrics": metrics,
        "curves": _read_curves(run.run_dir / "logs" / "version_0" / "metrics.csv"),
        "wall_s": round(time.time() - start, 2),
    }
    write_json_atomic(run.result_path, result)
    return result


def run_grid(
    grid: Grid,
    out: Path,
    pattern: str | None = None,
    jobs: int = 1,
    progress: Any = None,
) -> tuple[int, int]:
    """Run every unfinished run of the selected cells.

    Returns:
        ``(runs executed, runs skipped because already finished)``.
    """
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grid.path, out / "grid.yaml")
    OmegaConf.save(grid.base, out / "base.yaml")
    write_json_atomic(out / "grid-meta.json", {"grid": str(grid.path), "reference": grid.reference})
    runs = plan(grid, out, pattern)
    todo = [r for r in runs if not r.result_path.exists()]
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    task = (
        progress.add_task("grid", total=len(runs), completed=len(runs) - len(todo))
        if progress
        else None
    )
    failures: list[str] = []

    def one(run: Run) -> None:
        try:
            execute(run, threads)
        except RuntimeError as exc:
            failures.append(f"{run.cell.name} seed {run.seed}: {exc}")
        if progress is not None:
            progress.advance(task)

    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        list(pool.map(one, todo))
    if failures:
        raise FlexRecError(f"{len(failures)} run(s) failed; first: {failures[0]}")
    return len(todo), len(runs) - len(todo)
