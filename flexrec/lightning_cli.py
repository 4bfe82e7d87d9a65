"""The LightningCLI behind ``flexrec fit|validate|test|predict``.

:class:`FlexRecCLI` wires :class:`~flexrec.module.FlexRecModule` to any data module, adds flexrec's
defaults (CSV + TensorBoard loggers, a last-checkpoint link, a rich progress bar) and writes the run
record (:mod:`flexrec.run_record`) into the run directory after ``fit``, ``validate`` and ``test``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from flexrec.errors import ConfigError
from flexrec.module import FlexRecModule
from flexrec.run_record import record_metrics

__all__ = ["FlexRecCLI"]


def _info_dict(datamodule: Any) -> dict[str, Any]:
    return dataclasses.asdict(datamodule.info)


def _next_version(logs: Path) -> int:
    """The next free ``version_N`` under ``logs`` (shared by the CSV and TensorBoard loggers)."""
    taken = [int(p.name[8:]) for p in logs.glob("version_*") if p.name[8:].isdigit()]
    return max(taken, default=-1) + 1


class FlexRecCLI(LightningCLI):
    """The LightningCLI of flexrec: :class:`FlexRecModule` and any ``LightningDataModule``.

    The data module is given by ``data.class_path`` (``flexrec.data.FlexRecDataModule`` for the
    built-in datasets, ``flexrec.testing.synthetic.SyntheticDataModule`` for a quick synthetic task)
    and must expose an ``info`` attribute (:class:`flexrec.types.DataInfo`).

    The run directory is the trainer's ``log_dir`` (``<default_root_dir>/logs/version_N`` with the
    default loggers, a new ``N`` per command); each of ``fit``, ``validate`` and ``test``
    (:data:`flexrec.run_record.RECORDED_COMMANDS`) records its final metrics there.
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
        """Default loggers (CSV + TensorBoard), checkpoints and a rich progress bar; a missing
        ``model.init_from`` checkpoint of a fresh ``fit`` fails here, before anything is built."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        init_from = cfg.model.get("init_from") if self.subcommand == "fit" else None
        if init_from and not cfg.get("ckpt_path") and not Path(init_from).is_file():
            raise ConfigError(f"init_from {init_from!r}: no checkpoint file there")
        trainer = cfg.trainer
        root = trainer.default_root_dir or "runs"
        trainer.default_root_dir = root
        if trainer.logger in (None, True):
            # one version for both loggers, so the CSV and TensorBoard logs share a run directory
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
        config = self._parser(subcommand).dump(
            self.config[subcommand], format="json", skip_none=False
        )
        metrics = {
            k: v.item() if isinstance(v, torch.Tensor) else v
            for k, v in self.trainer.callback_metrics.items()
        }
        record_metrics(Path(log_dir), subcommand, json.loads(config), metrics)

    def after_fit(self) -> None:
        """Record the run after ``fit``."""
        self._record("fit")

    def after_validate(self) -> None:
        """Record the run after ``validate``."""
        self._record("validate")

    def after_test(self) -> None:
        """Record the run after ``test``."""
        self._record("test")
