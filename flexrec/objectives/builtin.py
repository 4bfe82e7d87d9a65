"""Built-in training objectives (the ``objective`` registry).

- ``clipped``: FlexRec's RL objective (METHOD.md §6): sample ``G`` rollouts, score them with the
  reward, turn rewards into advantages with the estimator, minimise the item-level clipped
  surrogate with exact KL and entropy terms (:func:`~flexrec.objectives.functional.policy_loss`).
- ``listmle``: listwise supervised learning: the Plackett–Luce negative log-likelihood of the
  gain-sorted permutation under the policy's own autoregressive factorisation
  (:func:`~flexrec.objectives.functional.listmle_loss`). No reward, estimator or reference policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flexrec.objectives import functional as F
from flexrec.objectives.base import Objective, ObjectiveLoss, Targets
from flexrec.plugin.spec import hookimpl
from flexrec.types import RankingBatch, gather_placed

if TYPE_CHECKING:
    from flexrec.estimators.base import AdvantageEstimator
    from flexrec.policies.base import Policy
    from flexrec.rewards.base import Reward

__all__ = ["ClippedObjective", "ListMLEObjective", "flexrec_register_objectives"]

NORMALIZATIONS = ("item", "task")


class ClippedObjective(Objective):
    """FlexRec's item-level clipped policy-gradient objective (PPO/GRPO style, METHOD.md §6).

    Targets: ``G`` rollouts per task sampled from the policy at ``temperature``, their
    log-probabilities (``pi_old``), the advantages ``estimator(reward(gains, rollout))`` and, when
    ``kl_coef > 0``, the reference policy's per-step log-probabilities. Loss:
    ``-mean[min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A)] + kl_coef KL - entropy_coef H``,
    every mean over the ``B x G x K`` placed items. Logs ``kl``, ``entropy``, ``clip_fraction``,
    the mean item ``reward`` and the rollouts' list metric (``ndcg`` for the built-in rewards, in
    the progress bar).

    The four coefficients default to :class:`~flexrec.module.FlexRecModule`'s arguments of the
    same names (``model.kl_coef`` etc.); ``args`` of the objective override them. Conventions:
    ``clip_low = clip_high = 0.2``, exact per-step KL and entropy.

    Args:
        clip_low: ``eps_low``; the ratio's lower bound is ``1 - clip_low``.
        clip_high: ``eps_high``; the ratio's upper bound is ``1 + clip_high``.
        kl_coef: ``beta``, weight of the exact per-step KL to the reference policy (paper 0.01).
        entropy_coef: ``eta``, weight of the exact per-step entropy bonus (paper 0.005).
    """

    name = "clipped"

    def __init__(
        self,
        clip_low: float = 0.2,
        clip_high: float = 0.2,
        kl_coef: float = 0.01,
        entropy_coef: float = 0.005,
    ) -> None:
        super().__init__()
        if clip_low < 0 or clip_high < 0:
            raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")
        self.clip_low = clip_low
        self.clip_high = clip_high
        self.kl_coef = kl_coef
        self.entropy_coef = entropy_coef

    def targets(
        self,
        batch: RankingBatch,
        gains: Tensor,
        variance: Tensor | None,
        *,
        policy: Policy,
        reward: Reward,
        estimator: AdvantageEstimator,
        group_size: int,
        temperature: float,
    ) -> Targets:
        """Rollouts, their advantages and the reference log-probs (see the class docstring)."""
        rollout = policy.sample(batch, group_size, temperature)
        scored = reward(gains, rollout, variance, batch)
        tensors = {"old_logprobs": rollout.logprobs, "advantages": estimator(scored)}
        if self.kl_coef > 0:
            tensors["ref_step_logprobs"] = policy.reference_log_probs(
                batch, rollout.permutations, rollout=rollout
            )[1]
        metric = reward.list_metric_name
        return Targets(
            permutations=rollout.permutations,
            rollout=rollout,
            tensors=tensors,
            logs={"reward": scored.rewards.mean(), metric: scored.list_metric.mean()},
            prog_bar=(metric,),
        )

    def normalizer(self, targets: Targets) -> Tensor:
        """The number of placed items, ``B x G x K``."""
        return torch.tensor(float(targets.permutations.numel()), device=targets.permutations.device)

    def loss(
        self,
        logprobs: Tensor,
        step_logprobs: Tensor,
        targets: Targets,
        normalizer: Tensor | None = None,
    ) -> ObjectiveLoss:
        """The clipped surrogate with KL and entropy terms (see the class docstring)."""
        out = F.policy_loss(
            logprobs,
            targets.tensors["old_logprobs"],
            targets.tensors["advantages"],
            step_logprobs,
            targets.tensors.get("ref_step_logprobs"),
            clip_low=self.clip_low,
            clip_high=self.clip_high,
            beta=self.kl_coef,
            eta=self.entropy_coef,
            normalizer=normalizer,
        )
        logs = {"kl": out.kl, "entropy": out.entropy, "clip_fraction": out.clip_fraction}
        return ObjectiveLoss(out.loss, {key: value.detach() for key, value in logs.items()})


class ListMLEObjective(Objective):
    """Listwise supervised learning: ListMLE on the gain-sorted permutation.

    The target of each task is the permutation sorting its candidates by gain, descending (the
    observed gains, or those the feedback model fills in), ``G = 1`` per task; the loss is its
    negative log-likelihood under the policy's own autoregressive factorisation,
    ``-sum_k log pi(a_k | x, a_<k)``: the Plackett–Luce likelihood (ListMLE) when the policy's
    steps are a softmax over the remaining candidates, as every flexrec policy's are. The reward,
    the estimator and the reference policy are not used; nothing is sampled.

    Conventions (constructor arguments, so a grid can ablate them):

    - **Ties** (equal gains, including the zero-gain tail) are ordered at random, drawn from the
      global torch RNG that the module seeds from the run's seed and the step (as it does for RL
      sampling), so a rerun or a resumed run sees the same targets. Over steps the policy is
      trained towards the average over the tied orders instead of one arbitrary order (the
      candidates' listing order, which an LLM would otherwise learn as a position bias).
    - **Truncation** (``truncate=True``): only positions up to the last positive gain count,
      the "top-k" Plackett–Luce likelihood that the positive items come first, in gain order. The
      order of the zero-gain tail is arbitrary (random ties), so fitting it would only push the
      policy towards uniform among the irrelevant items, diluting the signal; tasks without a
      positive gain then contribute nothing. ``truncate=False`` scores all ``K`` positions.
    - **Normalisation** (``normalize="item"``): the mean over every included position of the
      batch, the per-item mean of the ``clipped`` objective, so the loss is a per-decision NLL
      whose scale does not grow with the number of relevant items and learning rates transfer
      between the two objectives. ``"task"``: the per-task sum averaged over the tasks with at
      least one included position (Xia et al.'s ListMLE per list). The two weight every
      position of a batch equally and differ only by a batch-level factor.

    Logs ``positions``: the mean number of included positions per task.

    Args:
        truncate: stop each list's likelihood after its last positive gain.
        normalize: ``"item"`` or ``"task"`` (see above).
    """

    name = "listmle"

    def __init__(self, truncate: bool = True, normalize: str = "item") -> None:
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(
                f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}"
            )
        self.truncate = truncate
        self.normalize = normalize

    def targets(
        self,
        batch: RankingBatch,
        gains: Tensor,
        variance: Tensor | None,
        *,
        policy: Policy,
        reward: Reward,
        estimator: AdvantageEstimator,
        group_size: int,
        temperature: float,
    ) -> Targets:
        """The gain-sorted permutations ``[B, 1, K]`` and the mask of included positions."""
        permutations = F.gain_sorted_permutations(gains).unsqueeze(1)
        mask = F.positive_prefix_mask(gather_placed(gains, permutations), self.truncate)
        return Targets(
            permutations=permutations,
            tensors={"mask": mask},
            logs={"positions": mask.sum(-1).to(gains.dtype).mean()},
            prog_bar=("loss",),
        )

    def normalizer(self, targets: Targets) -> Tensor:
        """Included positions (``normalize="item"``) or tasks with one (``"task"``), at least 1."""
        mask = targets.tensors["mask"]
        units = mask if self.normalize == "item" else mask.any(-1)
        return units.sum().clamp(min=1).to(torch.get_default_dtype())

    def loss(
        self,
        logprobs: Tensor,
        step_logprobs: Tensor,
        targets: Targets,
        normalizer: Tensor | None = None,
    ) -> ObjectiveLoss:
        """The ListMLE negative log-likelihood (see the class docstring)."""
        if normalizer is None:
            normalizer = self.normalizer(targets)
        return ObjectiveLoss(F.listmle_loss(logprobs, targets.tensors["mask"], normalizer))


@hookimpl
def flexrec_register_objectives() -> list[type[Objective]]:
    """The built-in objectives."""
    return [ClippedObjective, ListMLEObjective]
