"""``FlexRecModule``: the generic autoregressive-ranking RL loop as a LightningModule.

One training step (METHOD.md §1–6)::

    rollout   = policy.sample(batch, G)                  # permutations, log-probs [B, G, K]
    gains, σ² = feedback.fill(batch) or observed gains   # [B, K]
    scored    = reward(gains, rollout, σ²)               # item rewards [B, G, K]
    A         = estimator(scored)                        # advantages [B, G, K]
    loss      = policy_loss(π_θ, π_old, A, KL to π_ref, entropy)   # ppo_epochs × minibatches

The module only wires registry-built components: it has no switch on which reward, estimator,
policy or feedback model is used.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from torch import Tensor

from flexrec.errors import ConfigError
from flexrec.metrics import RankingMetrics, check_reference, reference_ranking
from flexrec.objectives import policy_loss
from flexrec.plugin.manager import load_plugins
from flexrec.registry import registries
from flexrec.types import DataInfo, RankingBatch, Rollout

__all__ = ["FlexRecModule", "Spec"]

Spec = str | dict[str, Any]


class FlexRecModule(L.LightningModule):
    """RL post-training of a ranking policy with item-level rewards.

    Args:
        policy: the ranking policy (``native``, ``llm`` or a plug-in), as a name or
            ``{name, args}``; dataset facts (``num_items``, ``num_features``, ``num_needs``) are
            passed to its constructor when it accepts them.
        reward: item-level reward (``swap`` is FlexRec's causal swap reward).
        estimator: advantage estimator (``ua_grpo`` is FlexRec's uncertainty-aware GRPO).
        feedback: feedback model filling unobserved gains (``critic``, ``item_knn``, ...); None
            uses observed gains only (unobserved count as 0).
        group_size: rollouts per task ``G``.
        temperature: sampling temperature of the rollouts.
        ppo_epochs: passes over each batch of rollouts.
        minibatches: optimiser steps per pass (tasks are split into this many minibatches).
        lr: learning rate (AdamW).
        weight_decay: AdamW weight decay.
        clip_low: ε_low of the clipped ratio.
        clip_high: ε_high of the clipped ratio.
        kl_coef: β, weight of the exact per-step KL to the reference policy.
        entropy_coef: η, weight of the exact per-step entropy bonus.
        max_grad_norm: gradient norm clip (None disables).
        eval_ks: cutoffs of NDCG@k / Recall@k in evaluation.
        references: reference rankings evaluated next to the policy and logged as
            ``{stage}_{name}/...`` for scale: ``oracle``, ``random``, ``feature:NAME`` (e.g.
            ``feature:popularity``); see :func:`flexrec.metrics.reference_ranking`.
        plugins: extra plug-in modules to load before building components.
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
        group_size: int = 8,
        temperature: float = 1.0,
        ppo_epochs: int = 1,
        minibatches: int = 1,
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
        data_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(data_info, DataInfo):
            data_info = asdict(data_info)
        self.save_hyperparameters()
        self.automatic_optimization = False
        load_plugins(plugins or [])
        self.reward = registries.reward.build(reward)
        self.estimator = registries.estimator.build(estimator)
        self.feedback = None if feedback is None else registries.feedback.build(feedback)
        self.policy: Any = None
        self.metrics: torch.nn.ModuleDict = torch.nn.ModuleDict()
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
        if self.policy is None:
            self._build(self.trainer.datamodule.info)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self.policy.prepare(datamodule)

    # ------------------------------------------------------------------ checkpoints
    def _rebuilt_keys(self) -> list[str]:
        return (
            [] if self.policy is None else [f"policy.{k}" for k in self.policy.rebuilt_state_keys()]
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave out the policy's frozen pretrained tensors (:meth:`Policy.rebuilt_state_keys`),
        recording their number and a fingerprint instead."""
        keys = [k for k in self._rebuilt_keys() if k in checkpoint["state_dict"]]
        if keys:
            state = checkpoint["state_dict"]
            checkpoint["flexrec_rebuilt"] = {
                "count": len(keys),
                "fingerprint": _fingerprint(state, keys),
            }
            for key in keys:
                del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put back the tensors a checkpoint left out, from the freshly built policy, after
        checking that they are the ones the checkpoint was trained with."""
        saved = checkpoint.get("flexrec_rebuilt")
        if saved is None:
            return
        own = self.state_dict()
        keys = [k for k in self._rebuilt_keys() if k not in checkpoint["state_dict"]]
        if len(keys) != saved["count"] or not math.isclose(
            _fingerprint(own, keys), saved["fingerprint"], rel_tol=1e-6, abs_tol=1e-6
        ):
            raise ConfigError(
                "the checkpoint was saved without its frozen pretrained weights, and the model "
                "built from this config differs from the one it was trained with (another base "
                "model, revision or LoRA/full fine-tuning setting)"
            )
        for key in keys:
            checkpoint["state_dict"][key] = own[key]

    def on_fit_start(self) -> None:
        """Fit the feedback model on the training split (the critic pre-training stage)."""
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

    def training_step(self, batch: RankingBatch, batch_idx: int) -> Tensor:
        """Sample, score, estimate advantages and take ``ppo_epochs × minibatches`` steps."""
        hp = self.hparams
        # Rollouts depend only on (seed, step, rank), so a run resumed from a checkpoint samples
        # exactly what an uninterrupted run would have sampled.
        base = int(os.environ.get("PL_GLOBAL_SEED", "0"))
        torch.manual_seed(base * 1_000_003 + self.global_step * 7_919 + self.global_rank)
        with torch.no_grad():
            rollout = self.policy.sample(batch, hp.group_size, hp.temperature)
            gains, variance = self._gains(batch)
            scored = self.reward(gains, rollout, variance, batch)
            advantages = self.estimator(scored)
            ref_steps = None
            if hp.kl_coef > 0:
                ref_steps = self.policy.reference_log_probs(batch, rollout.permutations)[1]
        optimizer = self.optimizers()
        parts = []
        for _ in range(hp.ppo_epochs):
            order = torch.randperm(batch.batch_size, device=rollout.permutations.device)
            for index in order.chunk(min(hp.minibatches, batch.batch_size)):
                parts.append(self._update(optimizer, batch, rollout, advantages, ref_steps, index))
        n = len(parts)
        log = {
            "train/loss": sum(p.loss for p in parts) / n,
            "train/kl": sum(p.kl for p in parts) / n,
            "train/entropy": sum(p.entropy for p in parts) / n,
            "train/clip_fraction": sum(p.clip_fraction for p in parts) / n,
            "train/list_metric": scored.list_metric.mean(),
            "train/reward": scored.rewards.mean(),
        }
        self.log_dict(log, batch_size=batch.batch_size, prog_bar=False)
        self.log("train/ndcg", log["train/list_metric"], prog_bar=True, batch_size=batch.batch_size)
        return log["train/loss"]

    def _update(
        self,
        optimizer: Any,
        batch: RankingBatch,
        rollout: Rollout,
        advantages: Tensor,
        ref_steps: Tensor | None,
        index: Tensor,
    ) -> Any:
        hp = self.hparams
        logprobs, steps = self.policy.log_probs(batch.select(index), rollout.permutations[index])
        out = policy_loss(
            logprobs,
            rollout.logprobs[index],
            advantages[index],
            steps,
            None if ref_steps is None else ref_steps[index],
            clip_low=hp.clip_low,
            clip_high=hp.clip_high,
            beta=hp.kl_coef,
            eta=hp.entropy_coef,
        )
        optimizer.zero_grad()
        self.manual_backward(out.loss)
        if hp.max_grad_norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=hp.max_grad_norm)
        optimizer.step()
        return out

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, split: str, batch: RankingBatch) -> None:
        self.metrics[f"{split}_policy"].update(batch, self.policy.rank(batch))
        seed = int(batch.candidate_ids.sum())  # same random reference for the same tasks
        for name in self.hparams.references:
            ranking = reference_ranking(name, batch, self.feature_names, seed)
            self.metrics[f"{split}_{name}"].update(batch, ranking)

    def _log_epoch(self, split: str) -> None:
        for who in ("policy", *self.hparams.references):
            metrics = self.metrics[f"{split}_{who}"]
            prefix = split if who == "policy" else f"{split}_{who.replace(':', '_')}"
            values = {f"{prefix}/{key}": value for key, value in metrics.compute().items()}
            self.log_dict(values, sync_dist=True)
            metrics.reset()

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


def _fingerprint(state: dict[str, Tensor], keys: list[str]) -> float:
    """A cheap order-dependent checksum of some tensors (float64 sums, weighted by position)."""
    total = 0.0
    for i, key in enumerate(sorted(keys)):
        t = state[key].detach().double()
        total += (i + 1) * (t.sum().item() + 0.5 * t.abs().sum().item())
    return total
