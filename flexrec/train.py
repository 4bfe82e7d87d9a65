"""LightningCLI wiring for ``flexrec fit|validate|test|predict`` and the run record.

Every run directory (the first logger's ``log_dir``) gets a ``run.json`` with the resolved config,
the seed, package and plug-in versions, the git commit and the final metrics of each subcommand.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from flexrec.module import FlexRecModule

__all__ = ["FlexRecCLI", "run_record", "write_json_atomic"]

PACKAGES = ("flexrec", "torch", "lightning", "transformers", "peft", "pluggy", "torchmetrics")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file next to ``path``, then rename it into place."""
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


def _info_dict(datamodule: Any) -> dict[str, Any]:
    return dataclasses.asdict(datamodule.info)


def _next_version(logs: Path) -> int:
    """The next free ``version_N`` under ``logs`` (shared by the CSV and TensorBoard loggers)."""
    taken = [int(p.name[8:]) for p in logs.glob("version_*") if p.name[8:].isdigit()]
    return max(taken, default=-1) + 1


def run_record(config: dict[str, Any]) -> dict[str, Any]:
    """Provenance of a run: config, seed, versions, plug-ins and git commit."""
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


class FlexRecCLI(LightningCLI):
    """The LightningCLI of flexrec: :class:`FlexRecModule` and any ``LightningDataModule``.

    The data module is given by ``data.class_path`` (``flexrec.data.FlexRecDataModule`` for the
    built-in datasets, ``flexrec.testing.synthetic.SyntheticDataModule`` for a quick synthetic task)
    and must expose an ``info`` attribute (:class:`flexrec.types.DataInfo`).
    """

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            FlexRecModule,
            None,
            subclass_mode_data=True,
            args=args,
            run=run,
            seed_everything_default=0,
            parser_kwargs={"exit_on_error": False},
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Link the data module's facts into the model, so the policy is built up front."""
        parser.link_arguments(
            "data", "model.data_info", compute_fn=_info_dict, apply_on="instantiate"
        )

    def before_instantiate_classes(self) -> None:
        """Default loggers (CSV + TensorBoard), checkpoints and a rich progress bar."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        trainer = cfg.trainer
        root = trainer.default_root_dir or "runs"
        trainer.default_root_dir = root
        if trainer.logger in (None, True):
            version = _next_version(Path(root) / "logs")
            trainer.logger = [
                {
                    "class_path": f"lightning.pytorch.loggers.{kind}",
                    "init_args": {"save_dir": root, "name": "logs", "version": version},
                }
                for kind in ("CSVLogger", "TensorBoardLogger")
            ]
        callbacks = list(trainer.callbacks or [])
        paths = [str(getattr(c, "class_path", c)) for c in callbacks]
        if not any(p.endswith("ModelCheckpoint") for p in paths):
            callbacks.append(
                Namespace(
                    class_path="lightning.pytorch.callbacks.ModelCheckpoint",
                    init_args=Namespace(save_last="link", save_top_k=1),
                )
            )
        if (
            not any(p.endswith("ProgressBar") for p in paths)
            and trainer.enable_progress_bar is not False
        ):
            callbacks.append(Namespace(class_path="lightning.pytorch.callbacks.RichProgressBar"))
        trainer.callbacks = callbacks

    def _record(self, subcommand: str) -> None:
        log_dir = self.trainer.log_dir or self.trainer.default_root_dir
        if self.trainer.global_rank != 0 or log_dir is None:
            return
        path = Path(log_dir) / "run.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        config = self._parser(subcommand).dump(
            self.config[subcommand], format="json", skip_none=False
        )
        record.update(run_record(json.loads(config)))
        metrics = {
            k: v.item() if isinstance(v, torch.Tensor) else v
            for k, v in self.trainer.callback_metrics.items()
        }
        record.setdefault("metrics", {})[subcommand] = dict(sorted(metrics.items()))
        write_json_atomic(path, record)

    def after_fit(self) -> None:
        """Record the run after ``fit``."""
        self._record("fit")

    def after_validate(self) -> None:
        """Record the run after ``validate``."""
        self._record("validate")

    def after_test(self) -> None:
        """Record the run after ``test``."""
        self._record("test")
