"""``flexrec-bench --launcher ray``: every run of a grid as a task on a Ray cluster.

The grid runner (:func:`flexrec.benchmark.runner.run_grid`) keeps its contract — the same output
folder layout, the lock on it, resume that skips finished runs, result files written last and
atomically, the same report — and hands each wave of runs to Ray instead of a local thread pool:

- **Cluster**: the one named by ``RAY_ADDRESS`` (``ray://host:10001`` or ``host:6379``), else a
  Ray instance already running on this machine (``ray start --head``), else a local instance the
  runner starts with every CPU of the machine and stops at the end.
- **Resources**: each run is a task that asks for its cell's ``resources`` (``cpus``, ``gpus``,
  ``memory_gb``: :data:`flexrec.benchmark.grid.RESOURCES`); ``cpus`` is also the run's torch
  thread count. A run that asks for more than the whole cluster has is refused before anything
  starts (a pending task would wait for ever).
- **Files**: a task runs :func:`~flexrec.benchmark.runner.execute` on a worker, which writes into the
  output folder, so every node must see that folder at the same path (a shared file system) and
  have flexrec (and the data, ``FLEXREC_DATA_DIR``) installed — as on a local instance.
- **Progress**: one line (or the progress bar) per finished run, in the order runs finish.
- **Stopping**: SIGINT or SIGTERM cancel every unfinished task (force: its worker and the
  ``flexrec`` process it started die, the latter by :mod:`flexrec.benchmark.child`); if the runner
  is SIGKILLed, Ray ends the tasks of the dead driver. Rerunning the same command resumes.

Ray is an optional extra: ``pip install 'flexrec[ray]'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from flexrec.errors import ConfigError

Run = Any
"""A :class:`flexrec.benchmark.runner.Run` (not imported: the runner imports this module)."""

__all__ = ["ray_session", "run_on_ray"]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--launcher ray needs Ray, which is not installed: pip install 'flexrec[ray]'"
        ) from exc
    return ray


@contextmanager
def ray_session() -> Iterator[Any]:
    """Connect to ``RAY_ADDRESS`` or a running local Ray instance, else start a local one (stopped
    on exit); yields the ``ray`` module."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    address = os.environ.get("RAY_ADDRESS")
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address:
            ray.init(address=address, **options)
        else:
            try:
                ray.init(address="auto", **options)
            except ConnectionError:  # no running instance: a local one for this grid
                ray.init(include_dashboard=False, **options)
    except Exception as exc:
        where = address or "a local instance"
        raise ConfigError(f"cannot connect to Ray ({where}): {' '.join(str(exc).split())}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _options(run: Run) -> dict[str, Any]:
    res = run.cell.resources
    options: dict[str, Any] = {
        "num_cpus": res.get("cpus", 1.0),
        "num_gpus": res.get("gpus", 0.0),
        "max_retries": 0,  # a failed run is reported, and rerun by rerunning the grid
    }
    if res.get("memory_gb", 0.0) > 0:
        options["memory"] = int(res["memory_gb"] * 2**30)
    return options


def _check_fits(ray: Any, runs: Sequence[Run]) -> None:
    total = ray.cluster_resources()
    have = {
        "num_cpus": total.get("CPU", 0.0),
        "num_gpus": total.get("GPU", 0.0),
        "memory": total.get("memory", 0.0),
    }
    names = {"num_cpus": "CPUs", "num_gpus": "GPUs", "memory": "bytes of memory"}
    for run in runs:
        for key, wanted in _options(run).items():
            if key in have and wanted > have[key]:
                raise ConfigError(
                    f"cell {run.cell.name!r} asks for {wanted:g} {names[key]} per run; the Ray "
                    f"cluster has {have[key]:g}"
                )


def run_on_ray(
    ray: Any,
    runs: Sequence[Run],
    attempt: Callable[[Run, int], str | None],
    report: Callable[[Run, str | None], None],
) -> None:
    """Run ``attempt(run, threads)`` for every run as a Ray task (a module-level function, which
    workers import by name; it returns why the run failed, or None), calling ``report(run, error)``
    in the driver as each finishes, one at a time. Unfinished tasks are cancelled when this
    returns early (a signal, an error).

    Raises:
        ConfigError: a run asks for more than the cluster has.
    """
    _check_fits(ray, runs)
    task = ray.remote(attempt)
    pending = {
        task.options(**_options(run)).remote(run, max(1, int(run.cell.resources.get("cpus", 1))))
        : run
        for run in runs
    }  # fmt: skip
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                run = pending.pop(ref)
                try:
                    error = ray.get(ref)
                except Exception as exc:  # the worker died, or Ray failed the task
                    error = f"Ray task failed: {' '.join(str(exc).split())[:300]}"
                report(run, error)
    finally:
        for ref in pending:
            with suppress(Exception):
                ray.cancel(ref, force=True)
