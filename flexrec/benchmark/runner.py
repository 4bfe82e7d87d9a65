"""Validate and run a grid: every (cell, seed) in its own processes, resumable, atomic results.

Layout under the output folder::

    OUT/grid.yaml                       copy of the grid file
    OUT/runs/<cell>/seed<k>/cell.yaml   the resolved config of the run
    OUT/runs/<cell>/seed<k>/...         Lightning logs, checkpoints, run.json
    OUT/results/<cell>/seed<k>.tasks_<split>.csv   per-task metrics of the run (val, test)
    OUT/results/<cell>/seed<k>.json     the run's metrics, written last (temp file + rename)

A run counts as finished only when its result file exists, so a killed grid leaves no partial
result; rerunning skips finished runs and restarts unfinished ones from scratch.

Validation schedule: a cell that runs ``fit`` validates at least :data:`VALIDATION_POINTS` times,
evenly over its training batches and once more after the last one
(:class:`flexrec.lightning_cli.ValidationPoints`, added to its trainer's callbacks), unless its
config sets ``trainer.val_check_interval`` or ``trainer.check_val_every_n_epoch``, disables
validation (``trainer.limit_val_batches: 0``) or lists that callback itself. The validation set is
scored each time (with the native policy a fraction of a training epoch; a grid with a slow policy
can limit it with ``trainer.limit_val_batches`` or set its own interval).
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

from flexrec.benchmark.child import PARENT_ENV
from flexrec.benchmark.grid import Cell, Grid
from flexrec.errors import ConfigError, FlexRecError
from flexrec.plugin.manager import load_plugins
from flexrec.registry import registries
from flexrec.run_record import RUN_RECORD, task_metrics_file, write_json_atomic
from flexrec.types import DataInfo

__all__ = ["VALIDATION_POINTS", "Run", "plan", "run_grid", "validate_grid"]

VALIDATION_POINTS = 10
"""The least number of validations of a fit in a grid (see the module docstring)."""

_POINTS_CALLBACK = "flexrec.lightning_cli.ValidationPoints"

_SPLITS = {"fit": "val", "validate": "val", "test": "test"}
"""The split whose per-task metrics each recorded command writes."""


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

    def tasks_path(self, split: str) -> Path:
        """The copy of the run's per-task metrics of ``split``, next to the result file."""
        return self.result_path.with_name(f"seed{self.seed}.tasks_{split}.csv")


def plan(grid: Grid, out: Path, pattern: str | None = None) -> list[Run]:
    """Every run of the selected cells, cell-major."""
    return [Run(cell, seed, out) for cell in grid.select(pattern) for seed in grid.seeds]


def _module_defaults() -> dict[str, Any]:
    """``FlexRecModule``'s constructor defaults: what a cell gets for the model keys it omits."""
    from flexrec.module import FlexRecModule

    return {
        name: p.default
        for name, p in inspect.signature(FlexRecModule).parameters.items()
        if p.default is not p.empty
    }


def _data_context() -> dict[str, Any]:
    """The names of the data facts a policy receives at build time (values unknown before the
    data is loaded, so only their presence counts when checking a policy spec)."""
    return dict.fromkeys(DataInfo(num_items=0, num_users=0, num_features=0, needs=()).context())


def _validate_cell(grid: Grid, cell: Cell) -> None:
    cfg = OmegaConf.to_container(cell.config(grid.base, grid.seeds[0], Path("unused")))
    assert isinstance(cfg, dict)
    defaults = _module_defaults()
    given = cfg.get("model") or {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown model argument {unknown[0]!r}; valid: {', '.join(defaults)}")
    model = {**defaults, **given}
    load_plugins(model["plugins"] or [])
    # Build what is cheap to build, so bad argument values fail here too; policies need the
    # data's facts (and may load an LLM), so only their names and arguments are checked.
    registries.reward.build(model["reward"])
    registries.estimator.build(model["estimator"])
    coefficients = ("clip_low", "clip_high", "kl_coef", "entropy_coef")
    registries.objective.build(model["objective"], **{k: model[k] for k in coefficients})
    if model["feedback"] is not None:
        registries.feedback.build(model["feedback"])
    registries.policy.check(model["policy"], **_data_context())
    data = (cfg.get("data") or {}).get("init_args") or {}
    for need in data.get("needs") or []:
        registries.need.build(need)


def validate_grid(grid: Grid, pattern: str | None = None) -> int:
    """Check every selected cell before anything runs (no data, no training).

    The model's arguments must be ``FlexRecModule``'s; its reward, estimator and feedback model and
    the data's needs are built; the policy's spec is checked by :meth:`Registry.check
    <flexrec.registry.Registry.check>` (it is built only with the data, which may mean loading an
    LLM).

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
    """Run ``flexrec ARGS`` in a child process that dies with this one (see
    :mod:`flexrec.benchmark.child`), appending its output to ``log``."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONWARNINGS": "ignore",
        PARENT_ENV: str(os.getpid()),
    }
    with log.open("a") as handle:
        proc = subprocess.run(
            [sys.executable, "-m", "flexrec.benchmark.child", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"`flexrec {' '.join(args[:1])}` exited {proc.returncode}; see {log}")


def with_validation_points(cfg: DictConfig, commands: tuple[str, ...]) -> DictConfig:
    """Add :class:`~flexrec.lightning_cli.ValidationPoints` to a fitting cell's trainer, unless
    its config chooses its own validation schedule (see the module docstring)."""
    trainer = OmegaConf.select(cfg, "trainer") or {}
    callbacks = trainer.get("callbacks")
    listed = list(callbacks) if isinstance(callbacks, list | ListConfig) else [callbacks]
    named = [str(c.get("class_path", c)) if hasattr(c, "get") else str(c) for c in listed if c]
    if (
        "fit" not in commands
        or trainer.get("val_check_interval") is not None
        or trainer.get("check_val_every_n_epoch", 1) != 1
        or trainer.get("limit_val_batches") in (0, 0.0)
        or any(n.endswith("ValidationPoints") for n in named)
    ):
        return cfg
    points = {"class_path": _POINTS_CALLBACK, "init_args": {"points": VALIDATION_POINTS}}
    OmegaConf.update(cfg, "trainer.callbacks", [*(c for c in listed if c), points], merge=False)
    return cfg


def _read_curves(csv_path: Path) -> dict[str, list[list[float]]]:
    """``{metric: [[epoch, value, tasks_seen], ...]}`` for every validation metric in a Lightning
    CSV log (``[epoch, value]`` where the log has no ``val/tasks_seen``)."""
    curves: dict[str, list[list[float]]] = {}
    if not csv_path.is_file():
        return curves
    with csv_path.open() as handle:
        for row in csv.DictReader(handle):
            seen = row.get("val/tasks_seen")
            for key, value in row.items():
                if key.startswith("val") and key != "val/tasks_seen" and value not in ("", None):
                    point = [float(row["epoch"]), float(value)]
                    curves.setdefault(key, []).append(point + ([float(seen)] if seen else []))
    return curves


def _copy_task_files(run: Run, log_dirs: dict[str, Path]) -> dict[str, str]:
    """Copy each split's per-task metrics next to the result file (temporary file + rename), from
    the last recorded command that evaluated the split (the one whose metrics the report uses).

    Returns:
        ``{split: file name}`` of the copies.
    """
    sources: dict[str, Path] = {}
    for command, split in _SPLITS.items():
        source = task_metrics_file(log_dirs[command], split) if command in log_dirs else None
        if source is not None and source.is_file():
            sources[split] = source
    names = {}
    for split, source in sources.items():
        target = run.tasks_path(split)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        names[split] = target.name
    return names


def _records(run_dir: Path) -> dict[Path, tuple[int, int]]:
    """Every run record under ``run_dir``, with its inode and modification time."""
    stamps = {}
    for path in run_dir.rglob(RUN_RECORD):
        stat = path.stat()
        stamps[path] = (stat.st_ino, stat.st_mtime_ns)  # a rewrite replaces the file (new inode)
    return stamps


def _written_record(run_dir: Path, before: dict[Path, tuple[int, int]], command: str) -> Path:
    """The run record that ``command`` just wrote: the one new or replaced since ``before``.

    The CLI writes it into the trainer's log directory, wherever the config's loggers put that.
    """
    written = [path for path, stamp in _records(run_dir).items() if before.get(path) != stamp]
    if len(written) != 1:
        raise RuntimeError(
            f"`flexrec {command}` wrote {len(written)} run records under {run_dir}; expected one"
        )
    return written[0]


def execute(run: Run, threads: int = 1) -> dict[str, Any]:
    """Run one (cell, seed) from scratch and write its result file atomically.

    Commands after ``fit`` evaluate the last checkpoint of that ``fit``. The learning curves are
    read from the first command's CSV log. A cell with ``init_from`` gets ``model.init_from`` =
    the last checkpoint of that cell's ``fit`` of the same seed (a ``RuntimeError`` if it has
    none yet).
    """
    if run.run_dir.exists():
        shutil.rmtree(run.run_dir)  # leftovers of a killed attempt
    run.run_dir.mkdir(parents=True)
    grid_base = cast(DictConfig, OmegaConf.load(run.out / "base.yaml"))  # saved by run_grid
    config = run.run_dir / "cell.yaml"
    cfg = with_validation_points(
        run.cell.config(grid_base, run.seed, run.run_dir), run.cell.commands
    )
    if run.cell.init_from is not None:
        OmegaConf.update(cfg, "model.init_from", str(_fit_checkpoint(run)), merge=False)
    OmegaConf.save(cfg, config)
    log = run.run_dir / "output.log"
    start = time.time()
    metrics: dict[str, dict[str, float]] = {}
    log_dirs: dict[str, Path] = {}
    for command in run.cell.commands:
        args = [command, f"--config={config}", "--trainer.enable_progress_bar=false"]
        if "fit" in log_dirs:
            args.append(f"--ckpt_path={log_dirs['fit'] / 'checkpoints' / 'last.ckpt'}")
        before = _records(run.run_dir)
        _flexrec(args, log, threads)
        record = _written_record(run.run_dir, before, command)
        log_dirs.setdefault(command, record.parent)
        metrics[command] = json.loads(record.read_text())["metrics"][command]
    first = log_dirs[run.cell.commands[0]]
    result = {
        "cell": run.cell.name,
        "seed": run.seed,
        "overrides": run.cell.overrides,
        "commands": list(run.cell.commands),
        "init_from": run.cell.init_from,
        "log_dirs": {command: str(path) for command, path in log_dirs.items()},
        "metrics": metrics,
        "curves": _read_curves(first / "metrics.csv"),
        "task_files": _copy_task_files(run, log_dirs),
        "wall_s": round(time.time() - start, 2),
    }
    write_json_atomic(run.result_path, result)
    return result


def _fit_checkpoint(run: Run) -> Path:
    """The last checkpoint of the ``fit`` of the cell ``run`` starts from, for the same seed."""
    assert run.cell.init_from is not None
    source = run.out / "results" / run.cell.init_from / f"seed{run.seed}.json"
    fit_dir = (
        json.loads(source.read_text()).get("log_dirs", {}).get("fit") if source.exists() else None
    )
    checkpoint = None if fit_dir is None else Path(fit_dir) / "checkpoints" / "last.ckpt"
    if checkpoint is None or not checkpoint.exists():
        raise RuntimeError(
            f"cell {run.cell.init_from!r} seed {run.seed} has no finished fit to start from"
        )
    return checkpoint.resolve()


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

    # cells that start from another cell's checkpoint run after it (one wave per init_from depth)
    for depth in sorted({grid.depth(r.cell) for r in todo}):
        with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
            list(pool.map(one, [r for r in todo if grid.depth(r.cell) == depth]))
    if failures:
        raise FlexRecError(f"{len(failures)} run(s) failed; first: {failures[0]}")
    return len(todo), len(runs) - len(todo)
