"""``FlexRecModule``: the generic training loop of a ranking policy as a LightningModule.

One training step (METHOD.md §1–6), for any registered objective::

    gains, σ² = feedback.fill(batch) or observed gains          # [B, K]
    targets   = objective.targets(batch, gains, σ², policy, reward, estimator)   # no gradient
    for ppo_epochs × minibatches:                              # one optimiser step each
        for micro-batch of the minibatch:                      # one backward pass each
            logprobs = policy.log_probs(micro-batch, targets.permutations)      # [b, G, K]
            objective.loss(logprobs, targets, minibatch normaliser).backward()

The ``clipped`` objective (the default) samples rollouts, scores them with the reward, turns the
rewards into advantages with the estimator and minimises the clipped item-level policy loss;
``listmle`` trains on the gain-sorted ranking. The module only wires registry-built components:
it has no switch on which objective, reward, estimator, policy or feedback model is used.

Training stops with a one-line :class:`~flexrec.errors.PluginError` (or ``DataError``) naming the
component at the first gain, reward or advantage it cannot use: a non-finite gain or gain variance
(naming the need and the feedback model or data module), a reward or advantage of the wrong shape
or not finite (naming the reward or estimator). The checks are shape comparisons and one
``isfinite`` per tensor and batch.

Evaluation logs ``{split}/{metric}/{need}`` (and ``{split}_{reference}/...``) and keeps each task's
own values of the last evaluation of each split in :attr:`FlexRecModule.task_metrics` (the CLI
writes them next to the run record). Validation inside ``fit`` also logs ``val/tasks_seen``: the
training tasks seen so far (summed batch sizes, over all ranks; kept in checkpoints), the x axis of
learning curves.
"""

from __future__ import annotations

import math
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ParallelStrategy
from torch import Tensor

from flexrec.checkpoints import check_data_info, fingerprint
from flexrec.errors import ConfigError, DataError, FlexRecError, PluginError, check_number
from flexrec.estimators.base import check_advantages
from flexrec.metrics import RankingMetrics, check_reference, reference_ranking
from flexrec.objectives.base import Targets
from flexrec.plugin.manager import load_plugins
from flexrec.registry import registries
from flexrec.rewards.base import check_reward_output
from flexrec.types import DataInfo, RankingBatch, RewardOutput

__all__ = ["FlexRecModule", "Spec"]

Spec = str | dict[str, Any]


class FlexRecModule(L.LightningModule):
    """Post-training of a ranking policy: RL with item-level rewards, or another objective.

    Args:
        policy: the ranking policy (``native``, ``llm`` or a plug-in), as a name or
            ``{name, args}``; dataset facts (``num_items``, ``num_features``, ``num_needs``) are
            passed to its constructor when it accepts them.
        reward: item-level reward (``swap`` is FlexRec's causal swap reward).
        estimator: advantage estimator (``ua_grpo`` is FlexRec's uncertainty-aware GRPO).
        feedback: feedback model filling unobserved gains (``critic``, ``item_knn``, ...); None
            uses observed gains only (unobserved count as 0).
        objective: the training objective: ``clipped`` (FlexRec's RL loss, the default),
            ``listmle`` (supervised, on the gain-sorted ranking) or a plug-in. ``clip_low``,
            ``clip_high``, ``kl_coef`` and ``entropy_coef`` below are passed to its constructor
            when it accepts them and its ``args`` do not set them.
        group_size: rollouts per task ``G``.
        temperature: sampling temperature of the rollouts.
        ppo_epochs: passes over each batch of targets.
        minibatches: optimiser steps per pass (tasks are split into this many minibatches).
        micro_batch_size: tasks per forward/backward pass (None: the whole minibatch). Each
            micro-batch's loss is its exact share of the minibatch's loss and is backpropagated
            at once, so memory holds one micro-batch's graph; the gradient, the optimiser step
            and the logged values are the minibatch's.
        lr: learning rate (AdamW).
        weight_decay: AdamW weight decay.
        clip_low: ε_low of the clipped ratio (``clipped`` objective).
        clip_high: ε_high of the clipped ratio (``clipped`` objective).
        kl_coef: β, weight of the exact per-step KL to the reference policy (``clipped``).
        entropy_coef: η, weight of the exact per-step entropy bonus (``clipped``).
        max_grad_norm: gradient norm clip (None disables).
        eval_ks: cutoffs of NDCG@k / Recall@k in evaluation.
        references: reference rankings evaluated next to the policy and logged as
            ``{stage}_{name}/...`` for scale: ``oracle``, ``random``, ``feature:NAME`` (e.g.
            ``feature:popularity``); see :func:`flexrec.metrics.reference_ranking`.
        plugins: extra plug-in modules to load before building components.
        init_from: a checkpoint of another run (any objective, e.g. ``listmle``) whose policy
            weights this run starts from (warm start), without its optimiser state or step
            count. Loaded when fitting starts, unless the fit resumes from its own checkpoint;
            ``validate``/``test``/``predict`` without a ``ckpt_path`` evaluate it too.
        data_info: the data module's :class:`~flexrec.types.DataInfo` (as a dict). The CLI links
            it from ``data.info`` so the policy is built, and its arguments checked, before any
            training starts; without it the policy is built in :meth:`setup` from the trainer's
            data module.
    """

    def __init__(
        self,
        policy: Spec = "native",
        reward: Spec = "swap",
        estimator: Spec = "ua_grpo",
        feedback: Spec | None = None,
        objective: Spec = "clipped",
        group_size: int = 8,
        temperature: float = 1.0,
        ppo_epochs: int = 1,
        minibatches: int = 1,
        micro_batch_size: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        clip_low: float = 0.2,
        clip_high: float = 0.2,
        kl_coef: float = 0.01,
        entropy_coef: float = 0.005,
        max_grad_norm: float | None = 1.0,
        eval_ks: tuple[int, ...] = (5, 10),
        references: tuple[str, ...] = ("oracle", "random"),
        plugins: list[str] | None = None,
        init_from: str | None = None,
        data_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(data_info, DataInfo):
            data_info = asdict(data_info)
        self.save_hyperparameters()
        self.automatic_optimization = False
        _check_settings(self.hparams)
        load_plugins(plugins or [])
        self.reward = registries.reward.build(reward)
        self.estimator = registries.estimator.build(estimator)
        # whoever calls them (the objective), their outputs are checked and a misbehaving
        # plug-in is named (shapes and one isfinite per batch)
        self.reward.register_forward_hook(_check_reward_call, with_kwargs=True)
        self.estimator.register_forward_hook(_check_estimator_call, with_kwargs=True)
        self.feedback = None if feedback is None else registries.feedback.build(feedback)
        self.objective = registries.objective.build(
            objective,
            clip_low=clip_low,
            clip_high=clip_high,
            kl_coef=kl_coef,
            entropy_coef=entropy_coef,
        )
        self.policy: Any = None
        self.metrics: torch.nn.ModuleDict = torch.nn.ModuleDict()
        self.task_metrics: dict[str, list[dict[str, Any]]] = {}
        """Per split (``val``, ``test``), the last evaluation's rows: one per (ranker, task), with
        ``who`` (``policy`` or the reference's name) and the keys of
        :meth:`RankingMetrics.tasks <flexrec.metrics.RankingMetrics.tasks>`."""
        self.tasks_seen = 0
        """Training tasks this process has seen (summed batch sizes; kept in checkpoints)."""
        if data_info is not None:
            self._build(DataInfo(**{**data_info, "needs": tuple(data_info["needs"])}))

    # ------------------------------------------------------------------ set-up
    def _build(self, info: DataInfo) -> None:
        self.policy = registries.policy.build(self.hparams.policy, **info.context())
        self.feature_names = info.feature_names
        for name in self.hparams.references:
            try:
                check_reference(name, info.feature_names)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        popularity = (
            info.feature_names.index("popularity") if "popularity" in info.feature_names else None
        )
        for split in ("val", "test"):
            for who in ("policy", *self.hparams.references):
                self.metrics[f"{split}_{who}"] = RankingMetrics(
                    info.needs, ks=self.hparams.eval_ks, popularity_index=popularity
                )

    def setup(self, stage: str) -> None:
        """Build the policy and the metrics from the trainer's data module, unless built already,
        then let the policy prepare itself on the data module (:meth:`Policy.prepare`)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.policy is None:
            if datamodule is None:
                raise ConfigError(
                    "FlexRecModule needs `data_info` or a trainer data module with an `info` "
                    "attribute to build its policy"
                )
            self._build(datamodule.info)
        if datamodule is not None:
            self.policy.prepare(datamodule)
        if stage != "fit" and self.hparams.init_from and not self.trainer.ckpt_path:
            # validate/test/predict without a checkpoint of this run evaluate the model the run
            # starts from (e.g. a warm-start cell's 0-task point), not the bare base model
            self.load_policy_weights(self.hparams.init_from)

    # ------------------------------------------------------------------ checkpoints
    def _rebuilt_keys(self) -> list[str]:
        return (
            [] if self.policy is None else [f"policy.{k}" for k in self.policy.rebuilt_state_keys()]
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave out the policy's frozen pretrained tensors (:meth:`Policy.rebuilt_state_keys`),
        recording their number and a fingerprint instead; record :attr:`tasks_seen`."""
        checkpoint["flexrec_tasks_seen"] = self.tasks_seen
        keys = [k for k in self._rebuilt_keys() if k in checkpoint["state_dict"]]
        if keys:
            state = checkpoint["state_dict"]
            checkpoint["flexrec_rebuilt"] = {
                "count": len(keys),
                "fingerprint": fingerprint(state, keys),
            }
            for key in keys:
                del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of other data (:data:`~flexrec.checkpoints.DATA_INFO_KEYS`); put
        back the tensors it left out, from the freshly built policy, after checking that they are
        the ones it was trained with; restore :attr:`tasks_seen`."""
        check_data_info(checkpoint, self.hparams.data_info)
        if "flexrec_tasks_seen" in checkpoint:
            self.tasks_seen = int(checkpoint["flexrec_tasks_seen"])
        saved = checkpoint.get("flexrec_rebuilt")
        if saved is None:
            return
        own = self.state_dict()
        keys = [k for k in self._rebuilt_keys() if k not in checkpoint["state_dict"]]
        if len(keys) != saved["count"] or not math.isclose(
            fingerprint(own, keys), saved["fingerprint"], rel_tol=1e-6, abs_tol=1e-6
        ):
            raise ConfigError(
                "the checkpoint was saved without its frozen pretrained weights, and the model "
                "built from this config differs from the one it was trained with (another base "
                "model, revision or LoRA/full fine-tuning setting)"
            )
        for key in keys:
            checkpoint["state_dict"][key] = own[key]

    def load_policy_weights(self, path: str) -> None:
        """Load the policy's weights from the checkpoint of another run (``init_from``).

        Only the policy's tensors are read (not the optimiser state, the step count or any
        other hyperparameter), so the run may have used any objective. The frozen pretrained
        tensors a checkpoint leaves out are checked and put back as in :meth:`on_load_checkpoint`;
        every other tensor of the policy must be in the checkpoint, with its shape.

        Raises:
            ConfigError: no readable checkpoint at ``path``, or one of another policy.
        """
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
            state = checkpoint["state_dict"]
        except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError) as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError(f"init_from {path!r}: not a readable checkpoint ({detail})") from exc
        policy_state = {k: v for k, v in state.items() if k.startswith("policy.")}
        partial = {"state_dict": policy_state, "flexrec_rebuilt": checkpoint.get("flexrec_rebuilt")}
        name = type(self.policy).name
        try:
            self.on_load_checkpoint(partial)
        except ConfigError as exc:
            raise ConfigError(f"init_from {path!r}: {exc}") from exc
        loaded = {k[len("policy.") :]: v for k, v in partial["state_dict"].items()}
        own = self.policy.state_dict()
        problems = [
            *(f"missing {k}" for k in sorted(set(own) - set(loaded))),
            *(f"unexpected {k}" for k in sorted(set(loaded) - set(own))),
            *(
                f"{k} has shape {tuple(loaded[k].shape)}, not {tuple(v.shape)}"
                for k, v in own.items()
                if k in loaded and loaded[k].shape != v.shape
            ),
        ]
        if problems:
            more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
            raise ConfigError(
                f"init_from {path!r}: not a checkpoint of this run's policy {name!r}: "
                f"{'; '.join(problems[:3])}{more}"
            )
        self.policy.load_state_dict(loaded)

    def on_fit_start(self) -> None:
        """Warm-start the policy from ``init_from`` (unless resuming this run's own checkpoint),
        then fit the feedback model on the training split (the critic pre-training stage)."""
        if self.hparams.init_from and not self.trainer.ckpt_path:
            self.load_policy_weights(self.hparams.init_from)
        if self.feedback is not None and not getattr(self.feedback, "is_fitted", False):
            self.feedback.fit(self.trainer.datamodule.feedback_training_data())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW over the policy's trainable parameters."""
        params = [p for p in self.policy.trainable_parameters() if p.requires_grad]
        if not params:
            name = type(self.policy).name
            raise ConfigError(
                f"policy {name!r} has no trainable parameters: evaluate it with `validate`/`test`"
                " (or give it trainable parameters) instead of `fit`"
            )
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ------------------------------------------------------------------ training
    def _gains(self, batch: RankingBatch) -> tuple[Tensor, Tensor | None]:
        if self.feedback is None:
            return batch.gains * batch.observed, None
        return self.feedback.fill(batch)

    def _check_gains(
        self, batch: RankingBatch, batch_idx: int, gains: Tensor, variance: Tensor | None
    ) -> None:
        """Stop at the first gain (or gain variance) training cannot use, naming its need and
        where it came from: the feedback model that filled it, or the data module (a shape
        check and one ``isfinite`` per tensor and batch)."""
        tensors = (
            {"gain": gains} if variance is None else {"gain": gains, "gain variance": variance}
        )
        shape = tuple(batch.gains.shape)
        if all(tuple(t.shape) == shape and bool(torch.isfinite(t).all()) for t in tensors.values()):
            return
        source = (
            f"the feedback model {self.feedback.name!r}"
            if self.feedback is not None
            else "the data module"
        )
        error: type[FlexRecError] = PluginError if self.feedback is not None else DataError
        for what, value in tensors.items():
            if tuple(value.shape) != shape:
                raise error(
                    f"{source} gave {what}s of shape {tuple(value.shape)} in training batch "
                    f"{batch_idx}, expected {shape} ([B, K], one per candidate)"
                )
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                task, candidate = (int(i) for i in bad.nonzero()[0])
                raise error(
                    f"need {batch.need[task]!r}: non-finite {what} "
                    f"({value[task, candidate].item():g}) from {source} in training batch "
                    f"{batch_idx} (task {task}, candidate {candidate}); training stopped"
                )

    def training_step(self, batch: RankingBatch, batch_idx: int) -> Tensor:
        """Compute the objective's targets and take ``ppo_epochs × minibatches`` steps."""
        hp = self.hparams
        self.tasks_seen += batch.batch_size
        # Targets (rollouts, tie-breaks) depend only on (seed, step, rank), so a run resumed from
        # a checkpoint draws exactly what an uninterrupted run would have drawn.
        base = int(os.environ.get("PL_GLOBAL_SEED", "0"))
        torch.manual_seed(base * 1_000_003 + self.global_step * 7_919 + self.global_rank)
        with torch.no_grad():
            gains, variance = self._gains(batch)
            self._check_gains(batch, batch_idx, gains, variance)
            targets = self.objective.targets(
                batch,
                gains,
                variance,
                policy=self.policy,
                reward=self.reward,
                estimator=self.estimator,
                group_size=hp.group_size,
                temperature=hp.temperature,
            )
        optimizer = self.optimizers()
        parts = []
        for _ in range(hp.ppo_epochs):
            order = torch.randperm(batch.batch_size, device=targets.permutations.device)
            for index in order.chunk(min(hp.minibatches, batch.batch_size)):
                parts.append(self._update(optimizer, batch, targets, index))
        n = len(parts)
        log = {f"train/{key}": sum(p[key] for p in parts) / n for key in parts[0]}
        log.update({f"train/{key}": value for key, value in targets.logs.items()})
        shown = {f"train/{key}" for key in targets.prog_bar}
        for prog_bar in (False, True):
            values = {k: v for k, v in log.items() if (k in shown) == prog_bar}
            if values:
                self.log_dict(values, prog_bar=prog_bar, batch_size=batch.batch_size)
        return log["train/loss"]

    def _update(
        self, optimizer: Any, batch: RankingBatch, targets: Targets, index: Tensor
    ) -> dict[str, Tensor]:
        """One optimiser step on the minibatch ``index``, one backward pass per micro-batch."""
        hp = self.hparams
        chunks = index.split(hp.micro_batch_size) if hp.micro_batch_size else (index,)
        # a lone micro-batch is the minibatch: its loss is its own mean
        normalizer = self.objective.normalizer(targets.select(index)) if len(chunks) > 1 else None
        optimizer.zero_grad()
        logs: dict[str, Tensor] = {}
        for i, chunk in enumerate(chunks):
            sub = targets.select(chunk)
            logprobs, steps = self.policy.log_probs(
                batch.select(chunk), sub.permutations, rollout=sub.rollout
            )
            out = self.objective.loss(logprobs, steps, sub, normalizer)
            with self._gradient_sync(i == len(chunks) - 1):
                self.manual_backward(out.loss)
            for key, value in {"loss": out.loss.detach(), **out.logs}.items():
                logs[key] = logs[key] + value if key in logs else value
        optimizer.step()  # clips the gradients first (on_before_optimizer_step)
        return logs

    def _gradient_sync(self, sync: bool) -> AbstractContextManager[Any]:
        """Unless ``sync``, a backward pass without DDP's gradient all-reduce (``no_sync``): the
        micro-batches of a minibatch accumulate their gradients locally and the last one's
        backward all-reduces the sum, once per optimiser step. One device and FSDP always sync."""
        strategy = self.trainer.strategy
        if sync or not isinstance(strategy, ParallelStrategy):
            return nullcontext()
        return strategy.block_backward_sync()

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Clip the gradient norm to ``max_grad_norm`` right before each optimiser step.

        Lightning calls this hook after the mixed-precision scaler has unscaled the gradients
        (``precision=16-mixed``), so the norm is the true one; under FSDP the norm is taken over
        every shard by the sharded root module's ``clip_grad_norm_``.
        """
        max_norm = self.hparams.max_grad_norm
        if max_norm is None:
            return
        root = self.trainer.strategy.model
        if torch.distributed.is_available():
            from torch.distributed.fsdp import FullyShardedDataParallel

            if isinstance(root, FullyShardedDataParallel):
                root.clip_grad_norm_(max_norm)
                return
        self.clip_gradients(optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, split: str, batch: RankingBatch) -> None:
        self.metrics[f"{split}_policy"].update(batch, self.policy.rank(batch))
        seed = int(batch.candidate_ids.sum())  # same random reference for the same tasks
        for name in self.hparams.references:
            ranking = reference_ranking(name, batch, self.feature_names, seed)
            self.metrics[f"{split}_{name}"].update(batch, ranking)

    def _log_epoch(self, split: str) -> None:
        rows: list[dict[str, Any]] = []
        for who in ("policy", *self.hparams.references):
            metrics = self.metrics[f"{split}_{who}"]
            prefix = split if who == "policy" else f"{split}_{who.replace(':', '_')}"
            values = {f"{prefix}/{key}": value for key, value in metrics.compute().items()}
            self.log_dict(values, sync_dist=True)
            rows += [{"who": who, **row} for row in metrics.tasks()]
            metrics.reset()
        if not self.trainer.sanity_checking:
            self.task_metrics[split] = rows
        if split == "val" and self.trainer.state.fn == "fit":
            seen = float(self.tasks_seen * self.trainer.world_size)
            self.log("val/tasks_seen", seen, batch_size=1)

    def validation_step(self, batch: RankingBatch, batch_idx: int) -> None:
        """Greedy ranking of validation tasks."""
        self._evaluate("val", batch)

    def on_validation_epoch_end(self) -> None:
        """Log ``val/{metric}/{need}`` (and ``val_oracle/...``, ``val_random/...`` for scale)."""
        self._log_epoch("val")

    def test_step(self, batch: RankingBatch, batch_idx: int) -> None:
        """Greedy ranking of test tasks."""
        self._evaluate("test", batch)

    def on_test_epoch_end(self) -> None:
        """Log ``test/{metric}/{need}`` and the oracle and random references."""
        self._log_epoch("test")

    def predict_step(self, batch: RankingBatch, batch_idx: int) -> list[dict[str, Any]]:
        """Greedy rankings as item ids, with each task's provenance."""
        ranking = self.policy.rank(batch)
        items = torch.gather(batch.candidate_ids, 1, ranking)
        metas = batch.meta or [{} for _ in range(batch.batch_size)]
        return [{**meta, "ranking": row.tolist()} for meta, row in zip(metas, items, strict=True)]


def _check_reward_call(
    reward: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
) -> None:
    """Forward hook of the module's reward: :func:`~flexrec.rewards.base.check_reward_output`."""
    rollout = args[1] if len(args) > 1 else kwargs["rollout"]
    check_reward_output(reward, output, rollout)


def _check_estimator_call(
    estimator: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
) -> None:
    """Forward hook of the module's estimator: :func:`~flexrec.estimators.base.check_advantages`."""
    reward: RewardOutput = args[0] if args else kwargs["reward"]
    check_advantages(estimator, output, reward)


def _check_settings(hp: Any) -> None:
    """Refuse numeric settings that would train on nothing or on NaN (e.g. ``group_size: 0``)."""
    for name in ("group_size", "ppo_epochs", "minibatches"):
        check_number(name, hp[name], minimum=1, integer=True)
    check_number("micro_batch_size", hp.micro_batch_size, minimum=1, integer=True, allow_none=True)
    check_number("temperature", hp.temperature, above=0)
    check_number("lr", hp.lr, minimum=0)
    check_number("weight_decay", hp.weight_decay, minimum=0)
    check_number("max_grad_norm", hp.max_grad_norm, above=0, allow_none=True)
    if not hp.eval_ks:
        raise ConfigError("eval_ks is empty: give at least one cutoff")
    for k in hp.eval_ks:
        check_number("eval_ks", k, minimum=1, integer=True)
