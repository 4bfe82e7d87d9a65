"""The run record: what every run writes next to its logs, so a result can be traced and redone.

A run directory (the first logger's ``log_dir``) holds a ``run.json`` with the resolved config, the
seed, package and plug-in versions, the git commit and the final metrics of each subcommand run
there (``{"metrics": {"fit": {...}, "test": {...}}}``). :class:`flexrec.lightning_cli.FlexRecCLI`
writes it; ``flexrec-bench`` reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "PACKAGES",
    "RECORDED_COMMANDS",
    "RUN_RECORD",
    "provenance",
    "record_metrics",
    "write_json_atomic",
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
