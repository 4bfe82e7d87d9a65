"""The LightningCLI behind ``flexrec fit|validate|test|predict``.

:class:`FlexRecCLI` wires :class:`~flexrec.module.FlexRecModule` to any data module, adds flexrec's
defaults (CSV + TensorBoard loggers, a last-checkpoint link, a rich progress bar) and writes the run
record (:mod:`flexrec.run_record`) into the run directory after ``fit``, ``validate`` and ``test``,
with the per-task metrics of the split evaluated (``tasks_val.csv``, ``tasks_test.csv``), and
prints a summary: the split's main metrics per need next to the references, and the paths of the
run folder, the checkpoints, the logs and the record (:meth:`FlexRecCLI.summary`).
:class:`ValidationPoints` spreads validation over a fit (learning curves; ``flexrec-bench`` adds it).

Checkpoints are written atomically (:class:`~flexrec.checkpoints.AtomicCheckpointIO`). A
``--ckpt_path`` that is missing or unreadable, or whose saved settings contradict the run's
(:func:`~flexrec.checkpoints.setting_conflicts`), fails before anything is built.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningCLI

from flexrec.checkpoints import (
    AtomicCheckpointIO,
    is_checkpoint_file_path,
    read_checkpoint,
    setting_conflicts,
)
from flexrec.errors import ConfigError
from flexrec.module import FlexRecModule
from flexrec.plugin.manager import load_plugins
from flexrec.run_record import (
    RUN_RECORD,
    record_metrics,
    summary_lines,
    task_metrics_file,
    write_task_metrics,
)

__all__ = ["DESCRIPTIONS", "FlexRecCLI", "ValidationPoints", "quiet_known_noise"]

_EVALUATED = {"fit": "val", "validate": "val", "test": "test"}
"""The split whose per-task metrics each recorded command leaves behind."""

_COMMON = (
    " Settings come from --config files (YAML) and dotted overrides (--model.lr=0.01,"
    " --data.init_args.batch_size=64); --print_config prints the resolved configuration."
)
DESCRIPTIONS = {
    "fit": "Train a policy, validating it on the way. At the end it prints the last validation's"
    " metrics per need next to the references (oracle, random, popularity) and where the run"
    " went: run folder, checkpoints, logs." + _COMMON,
    "validate": "Evaluate a model on the validation tasks (--ckpt_path: a checkpoint of a fit) and"
    " print its metrics per need next to the references." + _COMMON,
    "test": "Evaluate a model on the test tasks (--ckpt_path: a checkpoint of a fit) and print its"
    " metrics per need next to the references; --verbose=true also prints every logged value."
    + _COMMON,
    "predict": "Rank the test tasks of the dataset and return the rankings as item ids (see"
    " `flexrec serve` to rank requests of your own)." + _COMMON,
}
"""The ``flexrec fit|validate|test|predict -h`` descriptions."""

_DATA_GROUP = (
    "The data module: data.class_path names it (flexrec.data.datamodule.FlexRecDataModule for the"
    " datasets, flexrec.testing.synthetic.SyntheticDataModule for the synthetic task) and"
    " data.init_args its settings; --data.help CLASS_PATH lists them"
)


class _DropMessages(logging.Filter):
    """Drop the log records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


_LIGHTNING_TIPS = _DropMessages("💡 Tip: For seamless cloud logging")


def quiet_known_noise() -> None:
    """Silence the messages of Lightning and torch that a flexrec user cannot act on, each by its
    own text (every other warning still shows):

    - "Found N module(s) in eval mode at the start of training": flexrec keeps its frozen
      reference policies (and a pretrained model's dropout-free modules) in eval mode on purpose;
    - "The dirpath has changed from ...": each command writes a new ``version_N`` run folder, so a
      checkpoint is always read from another folder than the one the run writes to;
    - "`isinstance(treespec, LeafSpec)` is deprecated": raised inside Lightning by torch >= 2.10
      (Lightning's to fix);
    - Lightning's tip advertising its cloud logger.
    """
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start")
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from ")
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _LIGHTNING_TIPS not in logger.filters:
            logger.addFilter(_LIGHTNING_TIPS)


def _plain(value: Any) -> Any:
    """Tuples as lists (what a YAML dump reads back as the same value)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class ValidationPoints(Callback):
    """Validate every ``N`` training batches, ``N`` chosen for at least ``points`` validations,
    and once more after the last batch (so the final validation is of the trained model).

    When training starts, ``N = max(1, T // points)`` with ``T`` the training batches of the whole
    fit (``trainer.estimated_stepping_batches``: batches per epoch × ``max_epochs``, at most
    ``max_steps``); validation then runs after batches ``N, 2N, ...`` counted across epochs
    (``val_check_interval = N``, ``check_val_every_n_epoch = None``) and after the last batch. A
    model that takes several optimiser steps per batch (``ppo_epochs`` or ``minibatches`` > 1) and
    stops at ``max_steps`` sees fewer batches than ``T``, hence fewer validations. Iterable data of
    unknown length, or no validation data, keeps Lightning's own schedule.

    Args:
        points: the least number of validations in the fit (≥ 1).
    """

    def __init__(self, points: int = 10) -> None:
        if points < 1:
            raise ConfigError(f"ValidationPoints: points must be >= 1, got {points}")
        self.points = points
        self.every: int | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Set the validation interval from the number of training batches."""
        total = trainer.estimated_stepping_batches
        if not math.isfinite(trainer.num_training_batches) or not math.isfinite(total):
            return
        if not trainer.enable_validation or not sum(trainer.num_val_batches):
            # no validation will run: keep the per-epoch schedule, which also makes the
            # checkpoint callback save at the end of each epoch instead of after validations
            return
        self.every = max(1, int(total) // self.points)
        # Lightning read the interval when it loaded the training data (just before this hook);
        # val_check_batch is what its loop checks from now on
        trainer.val_check_interval = self.every
        trainer.check_val_every_n_epoch = None
        trainer.val_check_batch = self.every

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """After the fit's last batch, ask for a final validation (Lightning validates when asked
        to stop, then stops: the fit was ending anyway)."""
        if self.every is None:
            return
        last_epoch = trainer.max_epochs not in (None, -1) and (
            trainer.current_epoch >= trainer.max_epochs - 1
            and batch_idx + 1 >= trainer.num_training_batches
        )
        if last_epoch or 0 <= trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


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
        quiet_known_noise()
        subcommands: dict[str, Any] = {k: {"description": v} for k, v in DESCRIPTIONS.items()}
        super().__init__(
            FlexRecModule,
            None,
            subclass_mode_data=True,
            args=args,
            run=run,
            seed_everything_default=0,
            parser_kwargs={"exit_on_error": False, "prog": "flexrec", **subcommands},
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> Any:
        """LightningCLI's subcommand parser; ``validate`` and ``test`` print flexrec's summary
        instead of Lightning's table of every logged value (``--verbose=true`` brings it back)."""
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in ("validate", "test"):
            parser.set_defaults(verbose=False)
        return parser

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Link the data module's facts into the model, so the policy is built up front."""
        parser.link_arguments(
            "data", "model.data_info", compute_fn=_info_dict, apply_on="instantiate"
        )
        group = getattr(parser, "groups", {}).get("data")
        if group is not None:  # LightningDataModule's docstring otherwise, cut mid-sentence
            group.title = _DATA_GROUP

    def before_instantiate_classes(self) -> None:
        """Load the ``model.plugins`` modules (the data module's needs may come from them);
        default loggers (CSV + TensorBoard), checkpoints and a rich progress bar; a missing
        ``model.init_from`` checkpoint of a fresh ``fit`` fails here, before anything is built."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        # the data module is built (and its needs looked up) before the model that names the
        # plug-ins, so a plug-in need in `data.needs` is only known if they are loaded now
        load_plugins(cfg.model.get("plugins") or [])
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

    def _parse_ckpt_path(self) -> None:
        """Read ``--ckpt_path`` (a one-line error if missing or unreadable), refuse one whose
        settings contradict the run's, then let its model hyperparameters fill the config as
        LightningCLI does (the model is rebuilt as it was trained)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not is_checkpoint_file_path(ckpt_path):
            return
        cfg = self.config[subcommand]
        checkpoint = read_checkpoint(ckpt_path, weights_only=True)
        data = cfg.get("data")
        init_args = data.get("init_args") if data is not None else None
        default = self._parser(subcommand).get_defaults().get("model.policy")
        conflicts = setting_conflicts(checkpoint, cfg.model.get("policy"), default, init_args)
        if conflicts:
            raise ConfigError(
                f"ckpt_path {str(ckpt_path)!r} was trained with other settings: "
                f"{'; '.join(conflicts)}"
            )
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if isinstance(hparams.get("data_info"), dict):
            # saved with tuples, which an untyped dict cannot dump and read back as they were
            hparams["data_info"] = _plain(hparams["data_info"])
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The trainer, writing checkpoints with :class:`AtomicCheckpointIO` unless its
        ``plugins`` hold another ``CheckpointIO``."""
        plugins = self._get(self.config_init, "trainer", default={}).get("plugins")
        listed = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        listed = [p for p in listed if p is not None]
        if "plugins" not in kwargs and not any(isinstance(p, CheckpointIO) for p in listed):
            kwargs["plugins"] = [*listed, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

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
        rows = self.model.task_metrics.get(_EVALUATED[subcommand])
        if rows and self.trainer.world_size == 1:
            write_task_metrics(Path(log_dir), _EVALUATED[subcommand], rows)
        print("\n".join(self.summary(subcommand, metrics, Path(log_dir))), flush=True)

    def summary(self, subcommand: str, metrics: dict[str, Any], log_dir: Path) -> list[str]:
        """What ``fit``, ``validate`` and ``test`` print at the end: the evaluated split's main
        metrics per need next to the references (:func:`flexrec.run_record.summary_lines`), then
        the run folder, the checkpoints and the logs."""
        split = _EVALUATED[subcommand]
        hp = self.model.hparams
        ks = sorted(hp.eval_ks)
        columns = [*(f"ndcg@{k}" for k in ks), f"recall@{ks[-1]}", "mrr@10"]
        info = hp.data_info or {}
        tasks: dict[str, int] = {}
        for row in self.model.task_metrics.get(split) or []:
            if row.get("who") == "policy":
                tasks[row["need"]] = tasks.get(row["need"], 0) + 1
        table = summary_lines(metrics, split, hp.references, columns, info.get("needs"), tasks)
        what = {"fit": "last validation", "validate": "validation", "test": "test"}[subcommand]
        lines = [""]
        if table:
            steps = (
                f" after {self.trainer.global_step:,} training steps" if subcommand == "fit" else ""
            )
            lines += [f"flexrec {subcommand}: {what} metrics{steps}", *table, ""]
        else:
            lines += [f"flexrec {subcommand}: no {split} metrics were logged", ""]
        lines.append(f"run folder   {log_dir}")
        lines += self._checkpoint_lines(subcommand)
        lines += self._log_lines(log_dir)
        written = [RUN_RECORD]
        if task_metrics_file(log_dir, split).exists():
            written.append(task_metrics_file(log_dir, split).name)
        lines.append(f"record       {', '.join(written)} (in the run folder)")
        return lines

    def _checkpoint_lines(self, subcommand: str) -> list[str]:
        if subcommand != "fit":
            ckpt = self.trainer.ckpt_path
            return [f"evaluated    {ckpt or 'the model as configured (no --ckpt_path)'}"]
        callback: Any = self.trainer.checkpoint_callback
        if callback is None or not getattr(callback, "best_model_path", ""):
            return ["checkpoints  none written"]
        best = callback.best_model_path
        if getattr(callback, "monitor", None):
            score = callback.best_model_score
            shown = f"{float(score):.4f}" if score is not None else "?"
            best_line = f"best: {best} ({callback.monitor} = {shown})"
        else:
            best_line = f"best: {best} (no metric monitored: the latest)"
        lines = [f"checkpoints  {best_line}"]
        last = getattr(callback, "last_model_path", "")
        if last:
            lines.append(f"             last: {last}")
        return lines

    def _log_lines(self, log_dir: Path) -> list[str]:
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        lines = []
        for logger in self.trainer.loggers:
            if isinstance(logger, CSVLogger):
                lines.append(f"{Path(logger.log_dir) / 'metrics.csv'} (CSV)")
            elif isinstance(logger, TensorBoardLogger):
                lines.append(f"tensorboard --logdir {logger.root_dir} (TensorBoard)")
        return [f"{'logs' if i == 0 else ''}".ljust(13) + line for i, line in enumerate(lines)]

    def after_fit(self) -> None:
        """Record the run after ``fit``."""
        self._record("fit")

    def after_validate(self) -> None:
        """Record the run after ``validate``."""
        self._record("validate")

    def after_test(self) -> None:
        """Record the run after ``test``."""
        self._record("test")
