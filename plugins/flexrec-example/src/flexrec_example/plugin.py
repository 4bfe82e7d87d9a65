"""The module named by the ``example`` entry point: one hook implementation per component kind."""

from __future__ import annotations

from flexrec.plugin import hookimpl
from flexrec_example.estimators import RLOOUncertainty
from flexrec_example.needs import HiddenGems
from flexrec_example.objectives import PairwiseLogistic
from flexrec_example.rewards import DiverseSwap


@hookimpl
def flexrec_register_rewards() -> list[type]:
    """``diverse_swap``."""
    return [DiverseSwap]


@hookimpl
def flexrec_register_advantage_estimators() -> list[type]:
    """``rloo_ua``."""
    return [RLOOUncertainty]


@hookimpl
def flexrec_register_needs() -> list[type]:
    """``hidden_gems``."""
    return [HiddenGems]


@hookimpl
def flexrec_register_objectives() -> list[type]:
    """``pairwise_logistic``."""
    return [PairwiseLogistic]
