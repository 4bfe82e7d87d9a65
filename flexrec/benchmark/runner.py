"""Validate and run a grid: every (cell, seed) in its own processes, resumable, atomic results.

Layout under the output folder::

    OUT/grid.yaml                       copy of the grid file
    OUT/runs/<cell>/seed<k>/cell.yaml   the resolved config of the run
    OUT/runs/<cell>/seed<k>/...         Lightning logs, checkpoints, run.json
    OUT/results/<cell>/seed<k>.tasks_<split>.csv   per-task metrics of the run (val, test)
    OUT/results/<cell>/seed<k>.json     the run's metrics, written last (temp file + rename)

A run counts as finished only when its result file exists, so a killed grid leaves no partial
result; rerunning skips finished runs and restarts unfinished ones from scratch.

Safety: one runner at a time per output folder (a lock on ``OUT/.lock``; a second runner fails at
once with :class:`~flexrec.errors.OutputError`); the runner deletes nothing outside ``OUT/runs``
(cell names are checked when the grid is loaded, and every run folder again before it is cleared);
SIGINT or SIGTERM stops the runner and kills its training processes (each in its own process group),
and SIGKILL kills them too (:mod:`flexrec.benchmark.child`).

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
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

from flexrec.benchmark.child import PARENT_ENV
from flexrec.benchmark.grid import Cell, Grid
from flexrec.benchmark.ray_launcher import ray_session, run_on_ray
from flexrec.benchmark.validate import validate_grid
from flexrec.errors import FlexRecError, OutputError
from flexrec.run_record import RUN_RECORD, task_metrics_file, write_json_atomic

__all__ = [
    "LOCK_FILE",
    "VALIDATION_POINTS",
    "GridRunError",
    "Run",
    "output_lock",
    "plan",
    "run_grid",
    "validate_grid",
]

LOCK_FILE = ".lock"
"""The lock file in the output folder (holds the pid of the runner that has it)."""


class GridRunError(FlexRecError):
    """Some runs of a grid failed (the command exits with status 1, not 2: the grid was valid)."""


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
    return [Run(cell, seed, out) for cell in grid.select(pattern) for seed in grid.seeds_of(cell)]


class _Children:
    """The runner's training processes, so that a signal can stop them all (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self.stopping = False

    def run(self, cmd: list[str], **kwargs: Any) -> int:
        """Run ``cmd`` in a new process group to its end; -SIGKILL once :meth:`stop` was called."""
        with self._lock:
            if self.stopping:
                return -signal.SIGKILL
            # its own process group: the runner decides when its runs stop (a terminal's Ctrl-C
            # reaches the runner only), and stopping a run kills whatever the run started too
            proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
            self._procs.add(proc)
        try:
            return proc.wait()
        finally:
            with self._lock:
                self._procs.discard(proc)

    def stop(self) -> None:
        """Start no more processes and SIGKILL the process group of every running one."""
        with self._lock:
            self.stopping = True
            procs = list(self._procs)
        for proc in procs:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


_children = _Children()


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
        returncode = _children.run(
            [sys.executable, "-m", "flexrec.benchmark.child", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    if returncode != 0:
        raise RuntimeError(f"`flexrec {' '.join(args[:1])}` exited {returncode}; see {log}")


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
    read from the ``fit`` command's CSV log (the first command's, without ``fit``); a ``validate``
    before ``fit`` gives every curve its 0-task point (the model the fit starts from). A cell
    with ``init_from`` gets ``model.init_from`` = the last checkpoint of that cell's ``fit`` of
    the same seed (a ``RuntimeError`` if it has none yet).
    """
    _check_inside(run)
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
    commands = run.cell.commands
    if "fit" in commands:
        curves = _read_curves(log_dirs["fit"] / "metrics.csv")
        if "validate" in commands[: commands.index("fit")]:
            # a validate before fit scores the starting model: the curve's 0-task point
            before_fit = _read_curves(log_dirs["validate"] / "metrics.csv")
            for key, points in before_fit.items():
                curves[key] = [[0.0, points[-1][1], 0.0], *curves.get(key, [])]
    else:
        curves = _read_curves(log_dirs[commands[0]] / "metrics.csv")
    result = {
        "cell": run.cell.name,
        "seed": run.seed,
        "overrides": run.cell.overrides,
        "commands": list(run.cell.commands),
        "init_from": run.cell.init_from,
        "log_dirs": {command: str(path) for command, path in log_dirs.items()},
        "metrics": metrics,
        "curves": curves,
        "task_files": _copy_task_files(run, log_dirs),
        "wall_s": round(time.time() - start, 2),
    }
    write_json_atomic(run.result_path, result)
    return result


def attempt(run: Run, threads: int = 1) -> str | None:
    """:func:`execute` a run; why it failed (a command exited non-zero, no checkpoint to start
    from), or None. A grid launcher's unit of work (also the Ray task)."""
    try:
        execute(run, threads)
    except RuntimeError as exc:
        return str(exc)
    return None


def _check_inside(run: Run) -> None:
    """Refuse a run whose folders are not strictly inside the output folder's ``runs`` and
    ``results`` (a symbolic link on the way, or a cell name that slipped past the grid's check):
    the runner clears a run's folder before running it."""
    for path, parent in ((run.run_dir, "runs"), (run.result_path.parent, "results")):
        root = (run.out / parent).resolve()
        target = path.resolve()
        if target == root or not target.is_relative_to(root) or path.is_symlink():
            raise OutputError(f"run folder {path} is not inside {root}: refusing to write there")


def _copy_atomic(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the lock of the output folder ``out`` (created if needed) while the block runs.

    Raises:
        OutputError: another process holds it (its pid is named).
    """
    out.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":  # pragma: no cover - no flock there
        yield
        return
    import fcntl

    with (out / LOCK_FILE).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise OutputError(
                f"{out} is in use by another flexrec-bench (pid {holder}); wait for it to end "
                "or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield  # closing the file releases the lock


@contextmanager
def _stop_children_on_signals() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM kill the running training processes, start no
    more and raise ``KeyboardInterrupt`` in the main thread (only there can handlers be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        _children.stop()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    on_finish: Callable[[Run, str | None], None] | None = None,
    launcher: str = "local",
) -> tuple[int, int]:
    """Run every unfinished run of the selected cells, holding the output folder's lock.

    Args:
        grid: the grid.
        out: the output folder.
        pattern: only cells whose name contains this.
        jobs: runs in parallel.
        progress: a ``rich.progress.Progress`` to advance after each run, or None.
        on_finish: called after each run with the run and None, or the reason it failed (one
            call at a time).
        launcher: ``local`` (a pool of ``jobs`` threads, each running one run's processes on
            this machine) or ``ray`` (every run a Ray task with its cell's resources; ``jobs``
            is ignored: :mod:`flexrec.benchmark.ray_launcher`).

    Returns:
        ``(runs executed, runs skipped because already finished)``.

    Raises:
        OutputError: another runner holds the output folder, or a run folder is not inside it.
        ConfigError: ``--launcher ray`` without Ray, or a run asks for more than the cluster has.
        GridRunError: some runs failed (the others are finished).
        KeyboardInterrupt: SIGINT or SIGTERM (the running training processes are killed).
    """
    runs = plan(grid, out, pattern)
    _children.stopping = False
    with output_lock(out), _stop_children_on_signals():
        for run in runs:
            _check_inside(run)
        _copy_atomic(grid.path, out / "grid.yaml")
        tmp = out / f".base.yaml.{os.getpid()}.tmp"
        OmegaConf.save(grid.base, tmp)
        os.replace(tmp, out / "base.yaml")
        meta = {"grid": str(grid.path), "reference": grid.reference, "references": grid.references}
        write_json_atomic(out / "grid-meta.json", meta)
        todo = [r for r in runs if not r.result_path.exists()]
        threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
        task = (
            progress.add_task("grid", total=len(runs), completed=len(runs) - len(todo))
            if progress
            else None
        )
        failures: list[str] = []
        reporting = threading.Lock()

        def report(run: Run, error: str | None) -> None:
            if error is not None:
                failures.append(f"{run.cell.name} seed {run.seed}: {error}")
            if _children.stopping:
                return
            with reporting:  # one report at a time, in the order the runs finish
                if progress is not None:
                    progress.advance(task)
                if on_finish is not None:
                    on_finish(run, error)

        def one(run: Run) -> None:
            if not _children.stopping:
                report(run, attempt(run, threads))

        session = ray_session() if launcher == "ray" else nullcontext(None)
        with session as ray:
            # cells that start from another cell's checkpoint run after it (one wave per depth)
            for depth in sorted({grid.depth(r.cell) for r in todo}):
                wave = [r for r in todo if grid.depth(r.cell) == depth]
                if ray is not None:
                    run_on_ray(ray, wave, attempt, report)
                    continue
                pool = ThreadPoolExecutor(max_workers=max(jobs, 1))
                try:
                    list(pool.map(one, wave))
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
    if failures:
        raise GridRunError(f"{len(failures)} run(s) failed; first: {failures[0]}")
    return len(todo), len(runs) - len(todo)
