"""The ``flexrec-bench`` command: validate, run and report an ablation grid.

Usage::

    flexrec-bench --grid benchmarks/ablations.yaml [--out DIR] [--jobs N] [--filter TEXT] [--dry-run]
    flexrec-bench report DIR

Every cell is validated before any runs; a bad cell fails with one line naming it (exit 2). Runs
are resumable: a rerun skips finished runs. Failed runs exit with status 1; an output folder in use
by another runner, or one that cannot be written, exits with status 2; SIGINT or SIGTERM stops the
runs and exits with status 130. On a terminal a progress bar shows the runs; otherwise (CI logs)
one line is printed per finished run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flexrec.cli import run_guarded

__all__ = ["main"]


def _report(argv: list[str]) -> int:
    import json

    from flexrec.benchmark.report import write_report

    parser = argparse.ArgumentParser(prog="flexrec-bench report", description="Rebuild a report.")
    parser.add_argument("out", type=Path, help="output folder of a grid run")
    args = parser.parse_args(argv)
    meta_file = args.out / "grid-meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    title = f"flexrec-bench: {meta.get('grid', args.out.name)}"
    path = write_report(args.out, meta.get("reference") or meta.get("references"), title=title)
    print(f"report: {path}")
    return 0


def _run(argv: list[str]) -> int:
    from flexrec.benchmark.grid import load_grid
    from flexrec.benchmark.report import write_report
    from flexrec.benchmark.runner import GridRunError, Run, plan, run_grid, validate_grid

    parser = argparse.ArgumentParser(
        prog="flexrec-bench",
        description="Run an ablation grid (see flexrec.benchmark.grid for the file format).",
        epilog="`flexrec-bench report DIR` rebuilds the report of a finished or partial run.",
    )
    parser.add_argument("--grid", required=True, type=Path, help="grid YAML file")
    parser.add_argument(
        "--out", type=Path, help="output folder (default benchmarks/results/<grid>)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs in parallel (default 1; local launcher)"
    )
    parser.add_argument(
        "--launcher",
        choices=("local", "ray"),
        default="local",
        help="where runs execute: local processes (default) or tasks on the Ray cluster of "
        "RAY_ADDRESS / a local Ray instance (pip install 'flexrec[ray]')",
    )
    parser.add_argument("--filter", default=None, help="only cells whose name contains this")
    parser.add_argument("--dry-run", action="store_true", help="validate every cell, run nothing")
    args = parser.parse_args(argv)
    grid = load_grid(args.grid)
    checked = validate_grid(grid, args.filter)
    out = args.out or Path("benchmarks") / "results" / args.grid.stem
    runs = plan(grid, out, args.filter)
    if args.dry_run:
        if len(runs) == checked * len(grid.seeds):
            print(
                f"{args.grid}: {checked} cells × {len(grid.seeds)} seeds = {len(runs)} runs, all valid"
            )
        else:  # some cells run a subset of the seeds
            print(
                f"{args.grid}: {checked} cells, {len(runs)} runs over seeds {grid.seeds}, all valid"
            )
        return 0
    try:
        if sys.stdout.isatty():
            done, skipped = _run_with_bar(grid, out, args.filter, args.jobs, args.launcher)
        else:
            todo = sum(not r.result_path.exists() for r in runs)
            print(f"{len(runs)} runs, {len(runs) - todo} already finished", flush=True)
            finished = [len(runs) - todo]

            def line(run: Run, error: str | None) -> None:
                finished[0] += 1
                status = "done" if error is None else f"FAILED: {error}"
                print(
                    f"[{finished[0]}/{len(runs)}] {run.cell.name} seed {run.seed}: {status}",
                    flush=True,
                )

            done, skipped = run_grid(
                grid, out, args.filter, args.jobs, on_finish=line, launcher=args.launcher
            )
    except GridRunError as exc:
        print(f"flexrec-bench: {exc}", file=sys.stderr)
        return 1
    report = write_report(out, grid.report_reference, title=f"flexrec-bench: {args.grid}")
    print(f"{done} runs done, {skipped} already finished; report: {report}")
    return 0


def _run_with_bar(
    grid: Any, out: Path, pattern: str | None, jobs: int, launcher: str
) -> tuple[int, int]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from flexrec.benchmark.runner import run_grid

    columns = (
        *Progress.get_default_columns()[:1],
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress:
        return run_grid(grid, out, pattern, jobs, progress, launcher=launcher)


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "report":
        return _report(argv[1:])
    return _run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flexrec-bench`` console script."""
    return run_guarded("flexrec-bench", list(sys.argv[1:] if argv is None else argv), _main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
