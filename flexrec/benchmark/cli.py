"""The ``flexrec-bench`` command.

The grid runner is not implemented yet (tracked in the benchmark issue); this entry point validates
its arguments and says so plainly rather than pretending to run anything.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from flexrec.cli import run_guarded
from flexrec.errors import ConfigError

__all__ = ["main"]


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flexrec-bench", description="Run an ablation grid.")
    parser.add_argument("--grid", required=True, type=Path, help="grid YAML file")
    args = parser.parse_args(argv)
    if not args.grid.is_file():
        raise ConfigError(f"grid file not found: {args.grid}")
    print(
        f"flexrec-bench: the grid runner is not available yet; {args.grid} was not run. "
        "Available now: the reward/estimator math (see benchmarks/README.md) and `flexrec plugins`."
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flexrec-bench`` console script."""
    return run_guarded("flexrec-bench", list(sys.argv[1:] if argv is None else argv), _main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
