"""``flexrec-bench --dry-run``: check every cell of a grid before anything runs.

:func:`validate_grid` parses each cell's config as ``flexrec`` would, builds the model without its
policy and constructs the data module without its data, so misspelt keys, values of the wrong type,
bad numeric settings and unknown dataset names fail with one line naming the cell. The runner
(:mod:`flexrec.benchmark.runner`) calls it before any run.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from flexrec.benchmark.grid import Cell, Grid
from flexrec.errors import ConfigError, FlexRecError
from flexrec.plugin.manager import load_plugins
from flexrec.registry import registries
from flexrec.types import DataInfo

__all__ = ["validate_grid"]


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


class _ParserBuilt(Exception):
    def __init__(self, cli: Any) -> None:
        self.cli = cli


@functools.cache
def _command_parser(command: str) -> Any:
    """The parser of ``flexrec COMMAND`` (LightningCLI's, built once without parsing anything)."""
    from flexrec.lightning_cli import FlexRecCLI

    class _ParserOnly(FlexRecCLI):
        def parse_arguments(self, parser: Any, args: Any) -> None:
            raise _ParserBuilt(self)

    try:
        _ParserOnly(args=[])
    except _ParserBuilt as built:
        return built.cli._parser(command)
    raise AssertionError("LightningCLI parsed before building its parser")  # pragma: no cover


def _parse(command: str, cfg: dict[str, Any]) -> Any:
    """``cfg`` parsed as ``flexrec COMMAND --config`` would parse it: a misspelt key (an axis or
    ``set`` key that is not a config path) or a value of the wrong type is a :class:`ConfigError`."""
    from jsonargparse import ArgumentError

    try:
        return _command_parser(command).parse_object(cfg)
    except ArgumentError as exc:
        message = " ".join(str(exc).split())
        # a data module's own error is buried in the union-of-subclasses message
        start = message.find("Problem with given class_path")
        if start >= 0:
            message = message[start:].split(" - ")[0]
        raise ConfigError(message) from exc


def _validate_cell(grid: Grid, cell: Cell) -> None:
    raw = OmegaConf.to_container(cell.config(grid.base, grid.seeds_of(cell)[0], Path("unused")))
    assert isinstance(raw, dict)
    cfg: dict[str, Any] = {str(key): value for key, value in raw.items()}
    defaults = _module_defaults()
    given = cfg.get("model") or {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown model argument {unknown[0]!r}; valid: {', '.join(defaults)}")
    model = {**defaults, **given}
    load_plugins(model["plugins"] or [])
    parsed = _parse(cell.commands[0], cfg)
    # Build what is cheap to build, so bad argument values fail here too: the model without its
    # policy (its reward, estimator, objective and feedback model; its numeric settings), and the
    # data module without its data (its settings, the dataset's name). Policies need the data's
    # facts (and may load an LLM), so only their names and arguments are checked.
    from flexrec.module import FlexRecModule

    FlexRecModule(**{k: v for k, v in model.items() if k != "data_info"})
    registries.policy.check(model["policy"], **_data_context())
    data = parsed.get("data")
    if data is not None and data.get("class_path"):
        module, _, name = data.class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        init_args = data.get("init_args")
        cls(**(init_args.as_dict() if init_args is not None else {}))
        for need in (cfg.get("data") or {}).get("init_args", {}).get("needs") or []:
            registries.need.build(need)


def _check_distinct(grid: Grid, cells: list[Cell]) -> None:
    """No two cells are the same computation (resolved config, commands and warm start), which
    would spend runs on a duplicate row and double-count it in the comparisons."""
    seen: dict[str, str] = {}
    for cell in cells:
        resolved = OmegaConf.to_container(cell.config(grid.base, 0, Path("unused")))
        key = json.dumps([resolved, cell.commands, cell.init_from], sort_keys=True, default=str)
        if key in seen:
            raise ConfigError(
                f"{grid.path}: cells {seen[key]!r} and {cell.name!r} are the same computation "
                "(identical resolved config, commands and init_from)"
            )
        seen[key] = cell.name


def validate_grid(grid: Grid, pattern: str | None = None) -> int:
    """Check every selected cell before anything runs (no data, no training).

    Each cell's config is parsed as ``flexrec`` would parse it (a misspelt key or a value of the
    wrong type fails); the model is built without its policy (its reward, estimator, objective,
    feedback model and numeric settings are checked); the data module is constructed, which checks
    its settings but loads no data (a data module should do its heavy work in ``setup``), and the
    data's needs are built; the policy's spec is checked by :meth:`Registry.check
    <flexrec.registry.Registry.check>` (it is built only with the data, which may mean loading an
    LLM).

    Two cells that resolve to the same config, commands and ``init_from`` are refused.

    Returns:
        the number of cells checked.

    Raises:
        ConfigError: the first bad cell, named in the one-line message.
    """
    cells = grid.select(pattern)
    if not cells:
        raise ConfigError(f"no cell of {grid.path} matches filter {pattern!r}")
    _check_distinct(grid, cells)
    for cell in cells:
        try:
            _validate_cell(grid, cell)
        except FlexRecError as exc:
            raise ConfigError(f"cell {cell.name!r}: {exc}") from exc
    return len(cells)
