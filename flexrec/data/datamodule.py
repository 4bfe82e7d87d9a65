"""``FlexRecDataModule``: datasets → tasks → :class:`~flexrec.types.RankingBatch` batches."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from flexrec.data.checks import check_gains, gain_stats, row_order_note
from flexrec.data.dataset import InteractionData
from flexrec.data.features import FEATURE_NAMES
from flexrec.data.feedback import FeedbackData
from flexrec.data.loaders import DATASETS, load_dataset
from flexrec.data.options import LoaderOptions, loader_options
from flexrec.data.sampler import EpochShuffleSampler
from flexrec.data.tasks import EVAL_INSTRUCTIONS, TaskSet, build_tasks
from flexrec.errors import ConfigError, DataError, DataWarning, check_number
from flexrec.needs.base import TEXT_STYLES, ItemStats, Need
from flexrec.registry import registries
from flexrec.types import DataInfo, RankingBatch

__all__ = ["FlexRecDataModule", "TaskCollator"]


class TaskCollator:
    """Turn a list of task indices of a :class:`TaskSet` into a :class:`RankingBatch`.

    Args:
        tasks: the split's tasks.
        data: the dataset (titles, years, categories for the prompt text).
        needs: the bound needs, in the order of ``tasks.need_names``.
        with_text: build ``history_text`` / ``candidate_text`` (off for native policies: faster).
    """

    def __init__(
        self, tasks: TaskSet, data: InteractionData, needs: Sequence[Need], with_text: bool = True
    ) -> None:
        self.tasks, self.data, self.needs, self.with_text = tasks, data, list(needs), with_text
        self.item_categories = [
            [data.categories[c] for c in np.flatnonzero(row)] for row in data.item_categories
        ]

    def _stats(self, item: int, **values: Any) -> ItemStats:
        d = self.data
        return ItemStats(
            str(d.titles[item]), int(d.years[item]), self.item_categories[item], **values
        )

    def __call__(self, indices: Sequence[int]) -> RankingBatch:
        t, idx = self.tasks, np.asarray(indices, dtype=np.int64)
        labels = np.where(t.observed[idx], t.true_labels[idx], np.nan)
        batch = RankingBatch(
            candidate_ids=torch.from_numpy(t.candidates[idx]),
            gains=torch.from_numpy(t.gains[idx]).float(),
            observed=torch.from_numpy(t.observed[idx]),
            relevant=torch.from_numpy(t.relevant[idx]),
            need=[t.need_names[i] for i in t.need[idx]],
            instruction=[t.instruction[i] for i in idx],
            history_ids=torch.from_numpy(t.history[idx]),
            history_labels=torch.from_numpy(t.history_labels[idx]).float(),
            user_ids=torch.from_numpy(t.users[idx]),
            need_index=torch.from_numpy(t.need[idx]),
            labels=torch.from_numpy(labels).float(),
            candidate_features=torch.from_numpy(t.features[idx]),
            candidate_categories=torch.from_numpy(self.data.item_categories[t.candidates[idx]]),
            meta=[
                {
                    "dataset": self.data.name,
                    "split": t.split,
                    "task": int(i),
                    "user": _plain_id(self.data.user_ids[t.users[i]]),
                    "cut": int(t.cut[i]),
                    "seed": t.seed,
                }
                for i in idx
            ],
        )
        if self.with_text:
            batch.history_text = [self._history(i) for i in idx]
            batch.candidate_text = [self._candidates(i) for i in idx]
        return batch

    def _history(self, i: int) -> list[str]:
        need, t = self.needs[self.tasks.need[i]], self.tasks
        return [
            need.history_text(self._stats(int(item), label=float(lab)))
            for item, lab in zip(t.history[i], t.history_labels[i], strict=True)
            if item >= 0
        ]

    def _candidates(self, i: int) -> list[str]:
        need, t = self.needs[self.tasks.need[i]], self.tasks
        return [
            need.item_text(self._stats(int(item), count=int(c), mean_label=float(m), recent=int(r)))
            for item, c, m, r in zip(
                t.candidates[i], t.count[i], t.mean_label[i], t.recent[i], strict=True
            )
        ]


def _plain_id(value: Any) -> Any:
    """A raw id as a Python value (numpy integers → int; strings stay strings)."""
    return value.item() if isinstance(value, np.generic) else value


class FlexRecDataModule(L.LightningDataModule):
    """Ranking tasks of a dataset for one or several needs (joint batches mix needs).

    Args:
        dataset: a dataset name (``ml-latest-small``, ``ml-100k``, ``kuairec-sim``, ...) or path.
        root: folder of the named datasets (default ``$FLEXREC_DATA_DIR``).
        needs: need specs (names or ``{name, args}``) to train on; tasks are built for every need.
        eval_needs: need specs val / test are scored on (default: ``needs``). Needs listed here but
            not in ``needs`` are never trained on (generalisation to unseen needs); they join the
            need vocabulary after the training needs. Needs in ``needs`` but not here are trained
            on and not evaluated.
        eval_instructions: the paraphrase of val / test tasks: ``canonical`` (each need's first
            instruction, the default) or ``held_out`` (paraphrases training never sees).
        history_len: ``L``.
        num_candidates: ``K``.
        train_cuts_per_user: cuts per train user.
        eval_cuts_per_user: cuts per val / test user: the latest, plus up to this many minus one
            distinct earlier ones (more evaluation tasks without more users; see
            :func:`~flexrec.data.tasks.build_tasks`).
        sparse_p: keep each train label with this probability (None: dense).
        seed: seed of the split, cuts, shuffles, sparse mask and the train loader's order.
        batch_size: training tasks per batch.
        eval_batch_size: val / test tasks per batch (default ``batch_size``).
        max_train_tasks: keep a seeded random subset of this many train tasks.
        max_eval_tasks: keep about this many val and test tasks per split: the first users'
            tasks, the same users for every need.
        with_text: build prompt text (needed by LLM policies).
        text_style: prompt text of items: ``full`` (self-describing) or ``compact`` (title without
            year or alternative title, categories and short statistics: ~30 % fewer prompt tokens
            on ML-100K), see :meth:`~flexrec.needs.base.Need.item_text`.
        num_workers: DataLoader workers.
        loader: how a dataset file is read and its labels understood
            (:class:`~flexrec.data.options.LoaderOptions`: ``sep``, ``columns``, ``labels``,
            ``quantiles``, ``label_scale``, ``label_name``, ``trend_window``, ...).
        negatives: candidates per task that are sampled items the user never interacted with
            (label 0); None: ``num_candidates // 2`` when the labels are bare interactions
            (label rule ``interacted``), else 0.

    Set-up refuses a need whose tasks all give every candidate the same gain (the oracle then
    ranks no better than random) and warns when most do, or when row order stands in for time
    (:mod:`flexrec.data.checks`).
    """

    def __init__(
        self,
        dataset: str = "ml-latest-small",
        root: str | None = None,
        needs: Sequence[str | dict[str, Any]] = ("maximize_interest",),
        eval_needs: Sequence[str | dict[str, Any]] | None = None,
        eval_instructions: str = "canonical",
        history_len: int = 10,
        num_candidates: int = 20,
        train_cuts_per_user: int = 4,
        eval_cuts_per_user: int = 1,
        sparse_p: float | None = None,
        seed: int = 0,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        max_train_tasks: int | None = None,
        max_eval_tasks: int | None = None,
        with_text: bool = True,
        text_style: Literal["full", "compact"] = "full",
        num_workers: int = 0,
        loader: LoaderOptions = LoaderOptions(),  # noqa: B008 (frozen: never mutated)
        negatives: int | None = None,
    ) -> None:
        super().__init__()
        self.loader = loader_options(loader)
        self.save_hyperparameters()
        # plain values: checkpoints are read with weights_only=True
        self.hparams["loader"] = self.loader.as_dict()
        _check_settings(self.hparams)
        self.data: InteractionData | None = None
        self.needs: list[Need] = []
        self.train_needs: tuple[str, ...] = ()
        self.eval_needs: tuple[str, ...] = ()
        self.tasks: dict[str, TaskSet] = {}

    def setup(self, stage: str | None = None) -> None:
        """Load the dataset and build every split's tasks (once)."""
        if self.tasks:
            return
        hp = self.hparams
        root = Path(hp.root) if hp.root else None
        self.data = load_dataset(hp.dataset, root, self.loader)
        train = [registries.need.build(spec) for spec in hp.needs]
        evaluated = (
            train if hp.eval_needs is None else [registries.need.build(s) for s in hp.eval_needs]
        )
        for key, group in (("needs", train), ("eval_needs", evaluated)):
            names = [n.name for n in group]
            if len(set(names)) != len(names):
                raise ConfigError(f"{key} must be distinct, got {names}")
        train_names = {n.name for n in train}
        self.needs = [
            need.bind(self.data.scale, self.data.trend_window, hp.text_style, self.data.time_unit)
            for need in train + [n for n in evaluated if n.name not in train_names]
        ]
        self.train_needs = tuple(n.name for n in train)
        self.eval_needs = tuple(n.name for n in evaluated)
        tasks = build_tasks(
            self.data,
            self.needs,
            hp.history_len,
            hp.num_candidates,
            hp.train_cuts_per_user,
            hp.sparse_p,
            hp.seed,
            eval_instructions=hp.eval_instructions,
            eval_cuts_per_user=hp.eval_cuts_per_user,
            negatives=self.negatives,
        )
        _check_tasks(tasks, self.data, hp, self.negatives)
        stats = gain_stats(tasks["train"], self.needs, self.train_needs)
        stats += gain_stats(tasks["val"], self.needs, self.eval_needs)
        notes = [row_order_note(self.data), *check_gains(stats)]
        for note in notes:
            if note:
                warnings.warn(note, DataWarning, stacklevel=2)
        self.tasks = tasks

    @property
    def negatives(self) -> int:
        """Sampled non-interacted candidates per task (``negatives``, or its default for the
        loaded labels)."""
        if self.hparams.negatives is not None:
            return int(self.hparams.negatives)
        interacted = self.data is not None and self.data.scale.rule == "interacted"
        return self.hparams.num_candidates // 2 if interacted else 0

    @property
    def info(self) -> DataInfo:
        """Facts for model construction (loads the data on first use); the dataset's categories
        and raw ids are on :attr:`data`."""
        self.setup()
        assert self.data is not None
        return DataInfo(
            num_items=self.data.num_items,
            num_users=self.data.num_users,
            num_features=len(FEATURE_NAMES),
            needs=tuple(n.name for n in self.needs),
            feature_names=FEATURE_NAMES,
        )

    def _indices(self, split: str) -> list[int]:
        """The split's task indices: training needs for ``train``, evaluated needs otherwise
        (tasks are stored need after need, ``per_need`` each)."""
        names = [n.name for n in self.needs]
        used = self.train_needs if split == "train" else self.eval_needs
        blocks = [names.index(name) for name in used]
        per_need = len(self.tasks[split]) // max(len(names), 1)
        if split == "train":
            n = len(blocks) * per_need
            picked = range(n)
            if self.hparams.max_train_tasks is not None:
                rng = np.random.default_rng([self.hparams.seed, 41])
                picked = sorted(rng.permutation(n)[: self.hparams.max_train_tasks].tolist())
            # position p of the kept training tasks → block blocks[p // per_need]
            return [blocks[p // per_need] * per_need + p % per_need for p in picked]
        keep = per_need
        if self.hparams.max_eval_tasks is not None:
            keep = min(per_need, max(self.hparams.max_eval_tasks // len(blocks), 1))
        return [j * per_need + i for j in blocks for i in range(keep)]

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Any]:
        self.setup()
        assert self.data is not None
        hp = self.hparams
        size = hp.batch_size if split == "train" else (hp.eval_batch_size or hp.batch_size)
        indices = self._indices(split)
        # an epoch-seeded sampler: a run resumed from a checkpoint sees the same batches
        sampler = EpochShuffleSampler(len(indices), hp.seed) if shuffle else None
        return DataLoader(
            indices,
            batch_size=size,
            sampler=sampler,
            collate_fn=TaskCollator(self.tasks[split], self.data, self.needs, hp.with_text),
            num_workers=hp.num_workers,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled (seeded) training tasks."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation tasks in a fixed order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[Any]:
        """Test tasks in a fixed order."""
        return self._loader("test", shuffle=False)

    def feedback_training_data(self) -> FeedbackData:
        """What a feedback model may learn from: the train users' observed labels."""
        self.setup()
        assert self.data is not None
        return FeedbackData.from_tasks(self.data, self.tasks["train"], self.needs)


def _check_settings(hp: Any) -> None:
    """Refuse settings that cannot give batches, before any data is read; an unknown dataset
    name that is not a path either fails here too."""
    check_number("history_len", hp.history_len, minimum=0, integer=True)
    check_number("num_candidates", hp.num_candidates, minimum=2, integer=True)
    check_number("train_cuts_per_user", hp.train_cuts_per_user, minimum=1, integer=True)
    check_number("eval_cuts_per_user", hp.eval_cuts_per_user, minimum=1, integer=True)
    check_number("batch_size", hp.batch_size, minimum=1, integer=True)
    check_number("eval_batch_size", hp.eval_batch_size, minimum=1, integer=True, allow_none=True)
    check_number("max_train_tasks", hp.max_train_tasks, minimum=1, integer=True, allow_none=True)
    check_number("max_eval_tasks", hp.max_eval_tasks, minimum=1, integer=True, allow_none=True)
    check_number("sparse_p", hp.sparse_p, above=0, maximum=1, allow_none=True)
    check_number("num_workers", hp.num_workers, minimum=0, integer=True)
    check_number("negatives", hp.negatives, minimum=0, integer=True, allow_none=True)
    if hp.negatives is not None and hp.negatives >= hp.num_candidates:
        raise ConfigError(
            f"negatives must be < num_candidates ({hp.num_candidates}): a task needs at least "
            f"one interaction among its candidates, got {hp.negatives}"
        )
    if hp.text_style not in TEXT_STYLES:
        raise ConfigError(f"text_style must be one of {TEXT_STYLES}, got {hp.text_style!r}")
    if hp.eval_instructions not in EVAL_INSTRUCTIONS:
        raise ConfigError(
            f"eval_instructions must be one of {list(EVAL_INSTRUCTIONS)}, "
            f"got {hp.eval_instructions!r}"
        )
    for key in ("needs", "eval_needs"):
        if hp[key] is not None and len(hp[key]) == 0:
            raise ConfigError(f"{key} is empty: name at least one need")
    name = str(hp.dataset)
    if name not in DATASETS and not Path(name).exists():
        raise DataError(
            f"unknown dataset {name!r}: not a file or folder; valid names: {', '.join(DATASETS)}"
        )


def _check_tasks(
    tasks: dict[str, TaskSet], data: InteractionData, hp: Any, negatives: int = 0
) -> None:
    """Every split has tasks: a user gives tasks only with ``num_candidates`` interactions
    (less the sampled ``negatives``) after a history, so a large ``num_candidates`` leaves none
    (and training would silently do nothing)."""
    for split, taskset in tasks.items():
        if len(taskset) == 0:
            most = int(np.diff(data.user_offsets).max(initial=0))
            positives = hp.num_candidates - negatives
            raise ConfigError(
                f"no {split} tasks: num_candidates={hp.num_candidates} needs users with at least "
                f"{positives + 1} interactions (the most any user of {data.name} has is "
                f"{most}); lower num_candidates"
            )
