"""flexrec-example: a third-party flexrec plug-in (entry point ``example``).

Registers, through :mod:`flexrec_example.plugin`:

- reward ``diverse_swap`` (:class:`~flexrec_example.rewards.DiverseSwap`);
- estimator ``rloo_ua`` (:class:`~flexrec_example.estimators.RLOOUncertainty`);
- need ``hidden_gems`` (:class:`~flexrec_example.needs.HiddenGems`);
- objective ``pairwise_logistic`` (:class:`~flexrec_example.objectives.PairwiseLogistic`).
"""

from __future__ import annotations

from flexrec_example.estimators import RLOOUncertainty
from flexrec_example.needs import HiddenGems
from flexrec_example.objectives import PairwiseLogistic
from flexrec_example.rewards import DiverseSwap

__all__ = ["DiverseSwap", "HiddenGems", "PairwiseLogistic", "RLOOUncertainty"]
__version__ = "0.1.0"
