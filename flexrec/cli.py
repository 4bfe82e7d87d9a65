"""The ``flexrec`` command: training and evaluation (LightningCLI), serving, export, plug-in
listing and data commands.

User errors (bad config, bad data, broken plug-in, an output that cannot be written) print one line
``flexrec: error: ...`` and exit with status 2; ``--debug`` shows the traceback instead. Data that
works but probably not as meant (:class:`~flexrec.errors.DataWarning`) prints one line
``flexrec: warning: ...``.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TextIO

from flexrec.errors import ConfigError, DataWarning, FlexRecError, output_error
from flexrec.run_record import RECORDED_COMMANDS

__all__ = [
    "LIGHTNING_COMMANDS",
    "LIGHTNING_HELP",
    "OWN_COMMANDS",
    "argument_error",
    "main",
    "one_line_warnings",
    "run_guarded",
    "yaml_error",
]

LIGHTNING_COMMANDS = (*RECORDED_COMMANDS, "predict")
"""The ``flexrec`` subcommands handed to LightningCLI (:class:`flexrec.lightning_cli.FlexRecCLI`)."""

LIGHTNING_HELP = {
    "fit": "train a policy and validate it on the way",
    "validate": "evaluate a model on the validation tasks",
    "test": "evaluate a model on the test tasks",
    "predict": "write rankings of the dataset's test tasks",
}
"""One line of ``flexrec --help`` per LightningCLI subcommand (also their ``-h`` description)."""

OWN_COMMANDS = {
    "serve": "serve a trained model over HTTP",
    "export": "export a trained model (PEFT adapter folder or one file)",
}
"""Subcommands with their own argument parsers (:mod:`flexrec.serving`)."""


def run_guarded(prog: str, argv: list[str], body: Callable[[list[str]], int]) -> int:
    """Run ``body(argv)`` turning user errors into one line on stderr and exit status 2.

    User errors are :class:`~flexrec.errors.FlexRecError` and the ``OSError`` of a refused write
    (disk full, read-only, a path through a file: :func:`~flexrec.errors.output_error`).
    """
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return body(argv)
    except (FlexRecError, OSError) as exc:
        error = exc if isinstance(exc, FlexRecError) else output_error(exc)
        if debug or error is None:
            raise
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _plugins_command(args: argparse.Namespace) -> int:
    from flexrec.plugin.manager import disabled_plugins, load_plugins
    from flexrec.registry import registries

    if args.plugins:
        load_plugins(args.plugins)
    rows = []
    for registry in registries:
        for entry in registry.entries():
            dist = f"{entry.distribution} {entry.version}" if entry.distribution else "(module)"
            rows.append((registry.kind, entry.name, entry.module, dist))
    header = ("kind", "name", "module", "distribution")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3])
    for item in disabled_plugins():
        print(f"disabled: {item}")
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: a ConfigError (exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} -h)")


def _info_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="flexrec data info",
        description="Load a dataset and print its summary, how it was read, the label rule and "
        "thresholds the needs will use, and what stands in for time. The options are the data "
        "module's loader options (data.init_args.loader).",
    )
    parser.add_argument("dataset", nargs="?", default=None, help="name or path (ml-latest-small)")
    parser.add_argument("--config", help="a fit config: read its data.init_args dataset/loader")
    parser.add_argument("--root", help="folder of the named datasets ($FLEXREC_DATA_DIR)")
    parser.add_argument("--sep", help="separator: a character, tab, comma, ... (inferred)")
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="ROLE=NAME",
        help="map a role (user, item, label, timestamp, categories, title, text) to a column",
    )
    parser.add_argument("--category-sep", help="separator inside the categories column (|)")
    parser.add_argument("--labels", help="label rule: auto, range, quantile, interacted")
    parser.add_argument("--quantiles", nargs=3, type=float, metavar="Q", help="τ, relevant, max")
    parser.add_argument(
        "--label-scale",
        metavar="minimum=..,maximum=..,threshold=..,relevant=..",
        help="an explicit label scale (overrides --labels)",
    )
    parser.add_argument("--label-name", help="what the label is, for prompts")
    parser.add_argument("--trend-window", type=int, help="seconds, or rows without timestamps")
    return parser


def _pairs(text: str, what: str, sep: str = ",") -> dict[str, str]:
    """``a=1,b=2`` → ``{"a": "1", "b": "2"}``."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(sep))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{what}: expected KEY=VALUE, got {part!r}")
        out[key.strip()] = value.strip()
    return out


def _info_options(args: argparse.Namespace) -> tuple[str, str | None, dict[str, Any]]:
    """``(dataset, root, loader options)`` from ``--config`` and the options (which win)."""
    dataset, root, options = "ml-latest-small", None, {}
    if args.config:
        import yaml

        try:
            config = yaml.safe_load(Path(args.config).read_text()) or {}
        except yaml.YAMLError as exc:
            raise yaml_error(args.config, exc) from exc
        except OSError as exc:
            raise ConfigError(f"{args.config}: cannot read the config ({exc.strerror})") from exc
        init = (
            ((config.get("data") or {}).get("init_args") or {}) if isinstance(config, dict) else {}
        )
        dataset = init.get("dataset", dataset)
        root = init.get("root")
        options = dict(init.get("loader") or {})
    dataset = args.dataset or dataset
    root = args.root or root
    flags = {
        "sep": args.sep,
        "category_sep": args.category_sep,
        "labels": args.labels,
        "quantiles": args.quantiles,
        "label_name": args.label_name,
        "trend_window": args.trend_window,
    }
    options |= {key: value for key, value in flags.items() if value is not None}
    if args.column:
        columns = dict(options.get("columns") or {})
        for spec in args.column:
            columns |= _pairs(spec, "--column")
        options["columns"] = columns
    if args.label_scale:
        scale: dict[str, Any] = _pairs(args.label_scale, "--label-scale")
        for key, value in scale.items():
            if key != "name":
                try:
                    scale[key] = float(value)
                except ValueError:
                    raise ConfigError(f"--label-scale: {key} is not a number ({value!r})") from None
        options["label_scale"] = scale
    return dataset, root, options


def _info_main(argv: list[str]) -> int:
    from flexrec.data.checks import info_lines
    from flexrec.data.loaders import load_dataset
    from flexrec.data.options import loader_options

    parser = _info_parser()
    args = parser.parse_args(argv)
    dataset, root, options = _info_options(args)
    data = load_dataset(dataset, root, loader_options(options))
    print("\n".join(info_lines(data)))
    return 0


def _data_command(args: argparse.Namespace) -> int:
    if args.action == "download":
        from flexrec.data.download import download_main

        return download_main(args.rest)
    return _info_main(args.rest)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flexrec",
        description="Post-train LLM recommenders with RL for flexible needs.",
        epilog="Add --debug to any command to see tracebacks of user errors.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    plugins = sub.add_parser("plugins", help="list every registered component and its origin")
    plugins.add_argument(
        "--plugins", nargs="*", default=[], help="extra plug-in modules to load (import paths)"
    )
    plugins.set_defaults(func=_plugins_command)
    data = sub.add_parser(
        "data",
        help="download or describe datasets",
        description="`flexrec data download NAME [--dest DIR] [--url URL] [--sha256 HEX] "
        "[--force]` or `flexrec data info [NAME_OR_PATH] [--sep SEP] [--column ROLE=NAME] "
        "[--labels RULE] ...` (see `flexrec data info -h`).",
    )
    data.add_argument("action", choices=["download", "info"])
    data.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the action")
    data.set_defaults(func=_data_command)
    for command, text in LIGHTNING_HELP.items():
        sub.add_parser(command, help=f"{text} (LightningCLI; see `flexrec {command} -h`)")
    for command, text in OWN_COMMANDS.items():
        sub.add_parser(command, help=f"{text} (see `flexrec {command} -h`)")
    return parser


def _own(command: str, argv: list[str]) -> int:
    """``flexrec serve`` and ``flexrec export``: their own parsers, in :mod:`flexrec.serving`."""
    if command == "serve":
        from flexrec.serving.server import serve_main

        return serve_main(argv)
    from flexrec.serving.export import export_main

    return export_main(argv)


def _lightning(argv: list[str]) -> int:
    """``flexrec fit|validate|test|predict`` through LightningCLI (YAML configs, dotted overrides)."""
    import logging
    import warnings

    from jsonargparse import ArgumentError

    from flexrec.lightning_cli import FlexRecCLI

    _check_config_files(argv)
    # argv is passed explicitly (``--debug`` removed), which LightningCLI warns about needlessly.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    try:
        FlexRecCLI(args=argv)
    except ArgumentError as exc:
        raise ConfigError(argument_error(str(exc))) from exc
    except Exception as exc:
        # jsonargparse wraps errors raised while instantiating (e.g. a missing data path found by
        # the data module): report the user error at the root of the chain, not the wrapper.
        cause = _user_error_in_chain(exc)
        if cause is None:
            raise
        raise cause from exc
    return 0


def argument_error(message: str) -> str:
    """jsonargparse's message in one line, with the problem of an optional class argument (the
    data module's) pulled out of the list of union members it did not match.

    Examples:
        >>> argument_error(
        ...     'Parser key "data": Does not validate against any of the Union subtypes '
        ...     "Subtypes: [<class 'LightningDataModule'>, <class 'NoneType'>] Errors: - Problem "
        ...     "with given class_path 'flexrec.data.datamodule.FlexRecDataModule': unrecognized "
        ...     "arguments: --loader.sepp=1 - Expected a <class 'NoneType'> Given value type: x"
        ... )
        'data (FlexRecDataModule): unrecognized arguments: --loader.sepp=1'
    """
    message = " ".join(message.split())
    match = re.search(
        r'^Parser key "([^"]+)": Does not validate.*?Problem with given class_path '
        r"'([\w.]+)': (.*?) - Expected a <class 'NoneType'>",
        message,
    )
    if match is None:
        return message
    key, path, problem = match.groups()
    return f"{key} ({path.rsplit('.', 1)[-1]}): {problem}"


def yaml_error(path: str, exc: Exception) -> ConfigError:
    """A one-line error naming the YAML file, the line and column, and the problem."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return ConfigError(f"{path}: not valid YAML{where}: {problem}")


def _check_config_files(argv: list[str]) -> None:
    """Read every ``--config`` file first, so a YAML error names its file (jsonargparse's own
    message names no file)."""
    import yaml

    files = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    files += [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in ("--config", "-c")]
    for name in files:
        path = Path(name)
        if not path.is_file():
            continue  # jsonargparse reports a missing file, or reads the value as inline YAML
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise yaml_error(name, exc) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}: cannot read the config ({exc})") from exc


def _user_error_in_chain(exc: BaseException) -> FlexRecError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, FlexRecError):
            return current
        if isinstance(current, OSError) and (refused := output_error(current)) is not None:
            return refused
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _main(argv: list[str]) -> int:
    if argv and argv[0] in LIGHTNING_COMMANDS:
        return _lightning(argv)
    if argv and argv[0] in OWN_COMMANDS:
        return _own(argv[0], argv[1:])
    parser = _build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


@contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Show :class:`~flexrec.errors.DataWarning` as one line ``{prog}: warning: ...`` (other
    warnings as usual) while the command runs."""
    shown = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, DataWarning):
            print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flexrec`` console script."""
    with one_line_warnings("flexrec"):
        return run_guarded("flexrec", list(sys.argv[1:] if argv is None else argv), _main)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
