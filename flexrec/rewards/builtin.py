"""Built-in item-level rewards (the ``reward`` registry).

Each class configures one pure function of :mod:`flexrec.rewards.functional`; the formulas use
1-based ranks, ``D(k) = 1 / log2(k + 1)`` up to the cutoff ``c`` (0 beyond), and
``IDCG`` = the DCG of the gains sorted descending (rewards are 0 where ``IDCG = 0``). The cutoff
``c`` defaults to the full list ``K`` (*convention*). Names follow METHOD.md §3; the paper's
"causal swap" is ``swap`` and its "non-causal swap" is ``swap_noncausal``.
"""

from __future__ import annotations

from torch import Tensor

from flexrec.plugin.spec import hookimpl
from flexrec.rewards import functional as F
from flexrec.rewards.base import Reward
from flexrec.types import RankingBatch

__all__ = [
    "IndependentReward",
    "RankDCGReward",
    "SequenceReward",
    "SwapNonCausalReward",
    "SwapReward",
    "flexrec_register_rewards",
]


class SequenceReward(Reward):
    """Sequence-level reward (GRPO / Rec-R1 baseline): ``r_k = R(y) = NDCG@c(y)`` for every ``k``.

    With the ``grpo`` estimator this is exactly standard GRPO. Convention: the cutoff ``c``.

    Args:
        cutoff: NDCG cutoff ``c``; ``None`` means the full list.
    """

    name = "sequence"

    def item_rewards(self, placed_gains: Tensor, batch: RankingBatch | None = None) -> Tensor:
        """``[B, G, K]`` rewards from gains in placed order ``[B, G, K]``."""
        return F.sequence_rewards(placed_gains, self.cutoff)


class SwapReward(Reward):
    """FlexRec's causal swap reward (the paper's "causal swap").

    ``r_k = (1/(K-k)) sum_{j>k} [R(y) - R(y^{k<->j})] = (1/(K-k)) sum_{j>k} (g_k - g_j)(D_k - D_j) / IDCG``
    and ``r_K = 0``: the partners are the items still in the pool when ``a_k`` was chosen (paper).
    Conventions: the sign (a well-placed item gets a positive reward), the mean (not the sum) over
    partners, and the cutoff ``c``. Computed in closed form with suffix sums, O(K) per list.

    Args:
        cutoff: NDCG cutoff ``c``; ``None`` means the full list.
    """

    name = "swap"

    def item_rewards(self, placed_gains: Tensor, batch: RankingBatch | None = None) -> Tensor:
        """``[B, G, K]`` rewards from gains in placed order ``[B, G, K]``."""
        return F.swap_rewards(placed_gains, self.cutoff)


class SwapNonCausalReward(Reward):
    """Non-causal swap reward (ablation, paper Table 7): partners are all other positions.

    ``r_k = (1/(K-1)) sum_{j != k} (g_k - g_j)(D_k - D_j) / IDCG``. Conventions as for ``swap``.

    Args:
        cutoff: NDCG cutoff ``c``; ``None`` means the full list.
    """

    name = "swap_noncausal"

    def item_rewards(self, placed_gains: Tensor, batch: RankingBatch | None = None) -> Tensor:
        """``[B, G, K]`` rewards from gains in placed order ``[B, G, K]``."""
        return F.swap_noncausal_rewards(placed_gains, self.cutoff)


class IndependentReward(Reward):
    """Independent item reward (ablation, paper Table 7): ``r_k = g_k D_k / IDCG``.

    No counterfactual; the rewards of a list sum to its NDCG. Convention: the cutoff ``c``.

    Args:
        cutoff: NDCG cutoff ``c``; ``None`` means the full list.
    """

    name = "independent"

    def item_rewards(self, placed_gains: Tensor, batch: RankingBatch | None = None) -> Tensor:
        """``[B, G, K]`` rewards from gains in placed order ``[B, G, K]``."""
        return F.independent_rewards(placed_gains, self.cutoff)


class RankDCGReward(Reward):
    """Rank-GRPO-style causal suffix reward (peer baseline): ``r_k = sum_{j>=k} g_j D_j / IDCG``.

    Each item is credited with the normalised DCG of the list from its rank on. Convention: the
    cutoff ``c`` and the IDCG normalisation.

    Args:
        cutoff: NDCG cutoff ``c``; ``None`` means the full list.
    """

    name = "rank_dcg"

    def item_rewards(self, placed_gains: Tensor, batch: RankingBatch | None = None) -> Tensor:
        """``[B, G, K]`` rewards from gains in placed order ``[B, G, K]``."""
        return F.rank_dcg_rewards(placed_gains, self.cutoff)


@hookimpl
def flexrec_register_rewards() -> list[type[Reward]]:
    """The built-in rewards."""
    return [SequenceReward, SwapReward, SwapNonCausalReward, IndependentReward, RankDCGReward]
