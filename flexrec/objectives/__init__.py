"""Training objectives: what a training step minimises (the ``objective`` registry).

- :mod:`flexrec.objectives.functional`: the pure loss functions (the clipped item-level policy
  loss with exact KL and entropy, ListMLE), re-exported here.
- :mod:`flexrec.objectives.base`: the :class:`~flexrec.objectives.base.Objective` interface,
  :class:`~flexrec.objectives.base.Targets` and :class:`~flexrec.objectives.base.ObjectiveLoss`.
- :mod:`flexrec.objectives.builtin`: the built-in ``clipped`` (RL) and ``listmle`` (supervised)
  objectives.

Examples:
    >>> import torch
    >>> from flexrec.objectives import listmle_loss, plackett_luce_logprobs
    >>> scores, target = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0, 2, 1])
    >>> round(listmle_loss(plackett_luce_logprobs(scores, target).view(1, 1, 3)).item(), 4)
    0.2403
"""

from __future__ import annotations

from flexrec.objectives.functional import (
    gain_sorted_permutations,
    listmle_loss,
    masked_mean,
    plackett_luce_logprobs,
    policy_loss,
    positive_prefix_mask,
    step_entropy,
    step_kl,
)

__all__ = [
    "gain_sorted_permutations",
    "listmle_loss",
    "masked_mean",
    "plackett_luce_logprobs",
    "policy_loss",
    "positive_prefix_mask",
    "step_entropy",
    "step_kl",
]
