"""The ``flexrec-bench`` command: validate, run and report an ablation grid.

Usage::

    flexrec-bench --grid benchmarks/ablations.yaml [--out DIR] [--jobs N] [--filter TEXT] [--dry-run]
    flexrec-bench report DIR

Every cell is validated before any runs; a bad cell fails with one line naming it (exit 2). Runs
are resumable: a rerun skips finished runs. Failed runs exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

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
    path = write_report(args.out, meta.get("reference"), title=title)
    print(f"report: {path}")
    return 0


def _run(argv: list[str]) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from flexrec.benchmark.grid import load_grid
    from flexrec.benchmark.report import write_report
    from flexrec.benchmark.runner import plan, run_grid, validate_grid
    from flexrec.errors import FlexRecError

    parser = argparse.ArgumentParser(
        prog="flexrec-bench",
        description="Run an ablation grid (see flexrec.benchmark.grid for the file format).",
        epilog="`flexrec-bench report DIR` rebuilds the report of a finished or partial run.",
    )
    parser.add_argument("--grid", required=True, type=Path, help="grid YAML file")
    parser.add_argument(
        "--out", type=Path, help="output folder (default benchmarks/results/<grid>)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
    parser.add_argument("--filter", default=None, help="only cells whose name contains this")
    parser.add_argument("--dry-run", action="store_true", help="validate every cell, run nothing")
    args = parser.parse_args(argv)
    grid = load_grid(args.grid)
    checked = validate_grid(grid, args.filter)
    out = args.out or Path("benchmarks") / "results" / args.grid.stem
    runs = plan(grid, out, args.filter)
    if args.dry_run:
        print(
            f"{args.grid}: {checked} cells × {len(grid.seeds)} seeds = {len(runs)} runs, all valid"
        )
        return 0
    columns = (
        *Progress.get_default_columns()[:1],
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns) as progress:
            done, skipped = run_grid(grid, out, args.filter, args.jobs, progress)
    except FlexRecError as exc:
        print(f"flexrec-bench: {exc}", file=sys.stderr)
        return 1
    report = write_report(out, grid.reference, title=f"flexrec-bench: {args.grid}")
    print(f"{done} runs done, {skipped} already finished; report: {report}")
    return 0


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "report":
        return _report(argv[1:])
    return _run(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flexrec-bench`` console script."""
    return run_guarded("flexrec-bench", list(sys.argv[1:] if argv is None else argv), _main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
