"""Grid files: a base config, axes whose values replace whole config nodes, seeds, extra cells.

A grid YAML::

    base: ../configs/quickstart.yaml      # relative to the grid file
    seeds: [0, 1, 2]
    commands: [fit, test]                 # flexrec subcommands run per cell (default)
    set:                                  # overrides applied to every cell
      trainer.max_epochs: 5
    axes:                                 # the cross product of these is the grid
      model.reward: [{name: sequence}, {name: swap}]
      model.estimator: [grpo, ua_grpo]
    cells:                                # extra named cells, not crossed with the axes
      popularity:
        set: {model.policy: {name: popularity}}
        commands: [validate, test]
      supervised:
        set: {model.objective: listmle}
      supervised_then_rl:                 # warm start: fit from the `supervised` cell's fit
        init_from: supervised             # checkpoint of the same seed (model.init_from)
        seeds: [0, 1]                     # a cell may run a subset of the grid's seeds
    resources: {cpus: 1, gpus: 0}         # per run, for --launcher ray (cells may override)
    reference: swap+ua_grpo               # relative changes in the report are against this cell
                                          # (or {model.estimator: grpo}: each cell against the
                                          # cell with the same labels but grpo on that axis)

Each axis value replaces the whole node at its dotted key (``OmegaConf.update(merge=False)``).
A cell's name joins its axis labels with ``+``; a label is the value's ``name`` (plus its ``args``,
if any), the last component of a path (``/data/ml-100k`` → ``ml-100k``), or the value itself.
Cell names become folder names: they may hold letters, digits and ``_ . , + = ( ) @ : -`` only,
must not start with ``.`` and are at most 200 characters (see :data:`CELL_NAME`); seeds are
distinct integers in ``[0, 2**32)``. An axis given as a mapping instead of a list is a *bundle* axis: each
entry is a label and the overrides (dotted key → value) that the label stands for::

    axes:
      data.init_args.dataset: [ml-100k, kuairec-sim]
      method:
        flexrec: {model.reward: swap, model.estimator: ua_grpo}
        grpo: {model.reward: sequence, model.estimator: grpo}
        popularity: {model.policy: popularity, commands: [validate, test]}

An extra cell with ``init_from: OTHER`` starts its ``fit`` from the last checkpoint of cell
``OTHER``'s ``fit`` of the same seed (``model.init_from``, e.g. RL after a supervised fit); the
runner runs it after that run (:attr:`Grid.waves`). An extra cell may run a subset of the grid's
seeds (``seeds: [0, 1]``, e.g. an expensive learning-curve cell); a cell it starts from must run
those seeds too. Paired differences against the reference use the seeds both cells ran.

``reference`` is a cell name (every other cell is compared with it) or ``{AXIS: LABEL}``: each
axis cell is compared with the cell that has the same labels on the other axes and ``LABEL`` on
``AXIS``, e.g. ``reference: {method: sequence}`` in a grid over ``K × G × method`` pairs
``K=50+G=4+swap`` with ``K=50+G=4+sequence`` (:attr:`Grid.references`; extra cells then have no
reference).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, cast

import yaml
from omegaconf import DictConfig, OmegaConf

from flexrec.cli import yaml_error
from flexrec.errors import ConfigError
from flexrec.run_record import RECORDED_COMMANDS

__all__ = ["CELL_NAME", "RESOURCES", "Cell", "Grid", "label", "load_grid"]

CELL_NAME = re.compile(r"(?!\.)[A-Za-z0-9_.,+=()@:-]{1,200}")
"""What a cell name must match: it becomes a folder name under the output folder, so no path
separator, no ``..`` or hidden name and no character a shell or file system treats specially."""


def label(value: Any) -> str:
    """A short, stable label for an axis value.

    Examples:
        >>> label({"name": "grpo", "args": {"scale": "none"}})
        'grpo(scale=none)'
        >>> label(["maximize_interest", "trend_promotion"])
        'maximize_interest,trend_promotion'
        >>> label("/data/movielens/ml-100k/")
        'ml-100k'
    """
    if isinstance(value, dict) and "name" in value:
        args = value.get("args") or {}
        inner = ",".join(f"{k}={label(v)}" for k, v in sorted(args.items()))
        return f"{value['name']}({inner})" if inner else str(value["name"])
    if isinstance(value, list | tuple):
        return ",".join(label(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={label(v)}" for k, v in sorted(value.items()))
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return PurePath(value.replace("\\", "/")).name or value  # a path: its last component
    return str(value)


@dataclass(frozen=True)
class Cell:
    """One configuration of the grid (run once per seed).

    Attributes:
        name: unique cell name.
        overrides: dotted key → value applied on top of the base config.
        commands: flexrec subcommands to run, in order.
        init_from: the cell whose ``fit`` checkpoint (same seed) this cell's ``fit`` starts
            from, or None.
        seeds: the seeds this cell runs, a subset of the grid's (None: all of them).
        resources: what one run of the cell needs from a Ray cluster (``cpus``, ``gpus``,
            ``memory_gb``; see :data:`RESOURCES`); the local launcher ignores them.
    """

    name: str
    overrides: dict[str, Any]
    commands: tuple[str, ...]
    init_from: str | None = None
    seeds: tuple[int, ...] | None = None
    resources: dict[str, float] = field(default_factory=dict)

    def config(self, base: DictConfig, seed: int, run_dir: Path) -> DictConfig:
        """The resolved config of this cell for one seed, writing under ``run_dir``."""
        cfg = base.copy()
        for key, value in self.overrides.items():
            OmegaConf.update(cfg, key, value, merge=False)
        OmegaConf.update(cfg, "seed_everything", seed, merge=False)
        if OmegaConf.select(cfg, "data.init_args") is not None:
            # the seed also draws the user split and the tasks, so the standard error over seeds
            # covers data sampling as well as training randomness
            OmegaConf.update(cfg, "data.init_args.seed", seed, merge=False)
        OmegaConf.update(cfg, "trainer.default_root_dir", str(run_dir), merge=False)
        return cfg


@dataclass
class Grid:
    """A parsed grid file."""

    path: Path
    base_path: Path
    base: DictConfig
    seeds: list[int]
    cells: list[Cell]
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    """Each cell's reference cell (every other cell → ``reference``, or per axis, see the module
    docstring); cells without one are absent."""

    @property
    def report_reference(self) -> str | dict[str, str] | None:
        """What the report compares against: the single reference cell, or the per-cell map."""
        return self.reference if self.reference is not None else (self.references or None)

    def seeds_of(self, cell: Cell) -> list[int]:
        """The seeds ``cell`` runs: its own subset, or the grid's seeds."""
        return self.seeds if cell.seeds is None else list(cell.seeds)

    def select(self, pattern: str | None) -> list[Cell]:
        """Cells whose name contains ``pattern`` (all when None)."""
        return [c for c in self.cells if pattern is None or pattern in c.name]

    def depth(self, cell: Cell) -> int:
        """How many ``init_from`` links lead from ``cell`` to a cell that starts from scratch."""
        by_name = {c.name: c for c in self.cells}
        depth = 0
        while cell.init_from is not None:
            cell, depth = by_name[cell.init_from], depth + 1
        return depth


RESOURCES = {"cpus": 1.0, "gpus": 0.0, "memory_gb": 0.0}
"""The per-run resources a grid may declare (``resources:`` at the top or in a cell) and their
defaults: CPUs (also the run's torch threads), GPUs and memory in GiB (0: not reserved). Used by
``flexrec-bench --launcher ray`` (:mod:`flexrec.benchmark.ray_launcher`)."""


def _resources(value: Any, where: str, defaults: dict[str, float]) -> dict[str, float]:
    """``defaults`` updated with a ``resources`` mapping of non-negative numbers (cpus > 0)."""
    if value is None:
        return dict(defaults)
    bad = not isinstance(value, dict) or set(value) - set(RESOURCES)
    numbers = {} if bad else value
    if bad or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in numbers.values()
    ):
        raise ConfigError(
            f"{where}: resources must map {', '.join(RESOURCES)} to numbers >= 0, got {value!r}"
        )
    merged = {**defaults, **{k: float(v) for k, v in numbers.items()}}
    if merged["cpus"] <= 0:
        raise ConfigError(f"{where}: resources.cpus must be > 0, got {merged['cpus']}")
    return merged


def _commands(value: Any, where: str) -> tuple[str, ...]:
    commands = tuple(value)
    # a grid reads each command's metrics from the run record, so only recorded commands qualify
    bad = [c for c in commands if c not in RECORDED_COMMANDS]
    if not commands or bad:
        raise ConfigError(
            f"{where}: bad commands {list(commands)}; valid: {', '.join(RECORDED_COMMANDS)}"
        )
    return commands


def _seeds(value: Any, path: Path) -> list[int]:
    """The grid's seeds: a non-empty list of distinct integers in ``[0, 2**32)``."""
    ok = isinstance(value, list) and bool(value)
    ok = ok and all(
        isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in value
    )
    if not ok:
        raise ConfigError(
            f"{path}: seeds must be a non-empty list of integers in [0, 2**32), got {value!r}"
        )
    if len(set(value)) != len(value):
        raise ConfigError(f"{path}: seeds must be distinct, got {value}")
    return list(value)


def _cell_seeds(value: Any, grid_seeds: list[int], where: str) -> tuple[int, ...] | None:
    """A cell's own seeds: a non-empty subset of the grid's seeds (None when not given)."""
    if value is None:
        return None
    ok = isinstance(value, list) and bool(value) and all(s in grid_seeds for s in value)
    if not ok or len(set(value)) != len(value):
        raise ConfigError(
            f"{where}: seeds must be distinct seeds of the grid {grid_seeds}, got {value!r}"
        )
    return tuple(value)


def _check_init_from(path: Path, cells: list[Cell], grid_seeds: list[int]) -> None:
    """Every ``init_from`` names another fitting cell that runs the same seeds, and the links
    form no cycle."""
    by_name = {c.name: c for c in cells}
    for cell in cells:
        if cell.init_from is None:
            continue
        other = by_name.get(cell.init_from)
        where = f"{path}: cell {cell.name!r}: init_from {cell.init_from!r}"
        if other is None:
            raise ConfigError(f"{where} is not a cell of the grid; cells: {list(by_name)}")
        if "fit" not in cell.commands or "fit" not in other.commands:
            raise ConfigError(f"{where}: both cells must run `fit`")
        missing = sorted(set(cell.seeds or grid_seeds) - set(other.seeds or grid_seeds))
        if missing:
            raise ConfigError(f"{where} does not run seeds {missing}")
        seen = {cell.name}
        while other.init_from is not None:
            if other.name in seen:
                raise ConfigError(f"{where}: the init_from links form a cycle")
            seen.add(other.name)
            other = by_name[other.init_from]


def _references(
    path: Path,
    reference: Any,
    names: list[str],
    axis_keys: list[str],
    axes: list[list[tuple[str, dict[str, Any]]]],
    axis_labels: dict[str, tuple[str, ...]],
) -> dict[str, str]:
    """Each cell's reference cell from the grid's ``reference``: a cell name, or ``{axis: label}``
    (the cell with the same labels on the other axes)."""
    if reference is None:
        return {}
    if not isinstance(reference, dict):
        if reference not in names:
            raise ConfigError(
                f"{path}: reference cell {reference!r} is not in the grid; cells: {names}"
            )
        return {name: str(reference) for name in names if name != reference}
    if len(reference) != 1 or next(iter(reference)) not in axis_keys:
        raise ConfigError(
            f"{path}: reference must be a cell name or {{AXIS: LABEL}} for one of the axes "
            f"{axis_keys}, got {reference!r}"
        )
    key, value = next(iter(reference.items()))
    index = axis_keys.index(key)
    labels = [name for name, _ in axes[index]]
    if str(value) not in labels:
        raise ConfigError(
            f"{path}: reference label {value!r} is not a label of axis {key!r}: {labels}"
        )
    return {
        name: "+".join((*own[:index], str(value), *own[index + 1 :]))
        for name, own in axis_labels.items()
        if own[index] != str(value)
    }


def load_grid(path: str | Path) -> Grid:
    """Parse and expand a grid file (see the module docstring).

    Raises:
        ConfigError: missing file, bad structure, duplicate cell names, unknown reference.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file not found: {path}")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except yaml.YAMLError as exc:
        raise yaml_error(str(path), exc) from exc
    except Exception as exc:
        raise ConfigError(f"{path}: not a valid YAML grid: {' '.join(str(exc).split())}") from exc
    if not isinstance(raw, dict) or "base" not in raw:
        raise ConfigError(f"{path}: a grid needs a 'base' config")
    keys = {"base", "seeds", "commands", "set", "axes", "cells", "reference", "resources"}
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise ConfigError(f"{path}: unknown grid keys {unknown}")
    for key in ("set", "axes", "cells"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"{path}: {key!r} must be a mapping, got {raw[key]!r}")
    base_path = (path.parent / raw["base"]).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: base config not found: {base_path}")
    try:
        base = OmegaConf.load(base_path)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: base config {yaml_error(str(base_path), exc)}") from exc
    except Exception as exc:
        raise ConfigError(
            f"{path}: base config {base_path} is not valid YAML: {' '.join(str(exc).split())}"
        ) from exc
    if not isinstance(base, DictConfig):
        raise ConfigError(f"{path}: base config {base_path} is not a mapping")
    for key, value in (raw.get("set") or {}).items():
        OmegaConf.update(base, key, value, merge=False)
    seeds = _seeds(raw.get("seeds", [0]), path)
    commands = _commands(raw.get("commands", ["fit", "test"]), str(path))
    resources = _resources(raw.get("resources"), str(path), RESOURCES)
    axes: list[list[tuple[str, dict[str, Any]]]] = []
    axis_keys = [str(key) for key in raw.get("axes") or {}]
    for key, values in (raw.get("axes") or {}).items():
        if (
            isinstance(values, dict)
            and values
            and all(isinstance(v, dict) for v in values.values())
        ):
            axes.append([(str(name), dict(sets)) for name, sets in values.items()])
        elif isinstance(values, list) and values:
            axes.append([(label(v), {key: v}) for v in values])
        else:
            raise ConfigError(
                f"{path}: axis {key!r} must be a non-empty list, or a mapping of labels to overrides"
            )
    cells = []
    axis_labels: dict[str, tuple[str, ...]] = {}
    for combo in itertools.product(*axes):
        overrides = {k: v for _, sets in combo for k, v in sets.items()}
        name = "+".join(name for name, _ in combo) or "base"
        axis_labels[name] = tuple(name for name, _ in combo)
        # a bundle may carry its own commands (e.g. [validate, test] for an untrained baseline)
        where = f"{path}: cell {name!r}"
        cell_commands = _commands(overrides.pop("commands", commands), where)
        cell_resources = _resources(overrides.pop("resources", None), where, resources)
        cells.append(Cell(name, overrides, cell_commands, resources=cell_resources))
    for name, spec in (raw.get("cells") or {}).items():
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - {
            *("set", "commands", "init_from", "seeds", "resources")
        }:
            raise ConfigError(
                f"{path}: cell {name!r} takes only 'set', 'commands', 'init_from', 'seeds' and "
                f"'resources'; got {spec!r}"
            )
        cell_commands = _commands(spec.get("commands", commands), f"{path}: cell {name!r}")
        init_from = None if spec.get("init_from") is None else str(spec["init_from"])
        cell_seeds = _cell_seeds(spec.get("seeds"), seeds, f"{path}: cell {name!r}")
        cell_resources = _resources(spec.get("resources"), f"{path}: cell {name!r}", resources)
        cells.append(
            Cell(
                str(name),
                dict(spec.get("set") or {}),
                cell_commands,
                init_from,
                cell_seeds,
                cell_resources,
            )
        )
    names = [c.name for c in cells]
    for name in names:
        if not CELL_NAME.fullmatch(name):
            raise ConfigError(
                f"{path}: cell name {name!r} cannot be a folder name: use at most 200 of "
                "A-Z a-z 0-9 _ . , + = ( ) @ : - (not starting with '.'); label such axis values "
                "with a bundle axis (a mapping of labels to overrides)"
            )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: duplicate cell names {duplicates}")
    _check_init_from(path, cells, seeds)
    reference = raw.get("reference")
    references = _references(path, reference, names, axis_keys, axes, axis_labels)
    if isinstance(reference, dict):
        reference = None
    return Grid(
        path, base_path, base, seeds, cells, reference, cast("dict[str, Any]", raw), references
    )
