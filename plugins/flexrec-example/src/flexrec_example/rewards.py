"""``diverse_swap``: FlexRec's causal swap reward minus a penalty for repeating categories.

The penalty needs each candidate's categories. :class:`~flexrec.types.RankingBatch` has no category
tensor, but flexrec's data module writes them into ``candidate_text``: every need's
:meth:`~flexrec.needs.base.Need.item_text` starts with ``"title (year) | cat1, cat2 | ..."``
(``"no category"`` when the item has none). :func:`parse_categories` reads that second
``" | "``-separated field. Where the categories are not available (no ``batch``, empty
``candidate_text`` because the data module was built with ``with_text=False``, or text in another
format such as the synthetic data module's) the penalty is 0 and the reward is exactly ``swap``.

Examples:
    >>> text = ["Heat (1995) | Action, Crime | mean rating 3.9 from 40 users"]
    >>> parse_categories(text)
    [('Action', 'Crime')]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flexrec.rewards import functional as F
from flexrec.rewards.base import Reward
from flexrec.types import RankingBatch, Rollout, gather_placed

__all__ = ["DiverseSwap", "category_matrix", "parse_categories", "redundancy"]

SEPARATOR = " | "
NO_CATEGORY = "no category"


def parse_categories(candidate_text: Sequence[str]) -> list[tuple[str, ...]] | None:
    """Categories of each candidate from flexrec's candidate text, or None if not in that format.

    A line must have at least three ``" | "``-separated fields (title, categories, statistics);
    the categories field is split on ``", "``; ``"no category"`` gives an empty tuple.

    Args:
        candidate_text: ``K`` candidate descriptions of one task.

    Returns:
        ``K`` tuples of category names, or None when any line is not in the expected format.

    Examples:
        >>> parse_categories(["A | Drama | x", "B | no category | y"])
        [('Drama',), ()]
        >>> parse_categories(["f0=0.3 f1=0.9"]) is None
        True
    """
    out: list[tuple[str, ...]] = []
    for line in candidate_text:
        fields = line.split(SEPARATOR)
        if len(fields) < 3:
            return None
        field = fields[1].strip()
        out.append(
            () if field == NO_CATEGORY else tuple(c.strip() for c in field.split(",") if c.strip())
        )
    return out


def category_matrix(
    batch: RankingBatch | None, num_candidates: int, device: torch.device | None = None
) -> Tensor | None:
    """Multi-hot categories ``[B, K, C]`` (bool, candidate order) of ``batch``'s candidates.

    ``batch.candidate_categories`` when the batch carries it (flexrec's data module fills it);
    otherwise parsed from ``batch.candidate_text``, with the vocabulary the sorted set of category
    names in the batch. A task whose text is missing
    or unparseable gets an all-False row (no penalty). Returns None when no task has categories.

    Args:
        batch: the tasks (may be None).
        num_candidates: ``K``.
        device: device of the result.
    """
    if batch is None:
        return None
    given = getattr(batch, "candidate_categories", None)
    if given is not None and given.shape[:2] == (batch.batch_size, num_candidates):
        return given.bool().to(device)  # the data module's own category vocabulary
    if len(batch.candidate_text) != batch.batch_size:
        return None
    parsed = [
        cats if cats is not None and len(cats) == num_candidates else None
        for cats in (parse_categories(text) for text in batch.candidate_text)
    ]
    vocab = sorted({c for task in parsed if task for cats in task for c in cats})
    if not vocab:
        return None
    index = {name: i for i, name in enumerate(vocab)}
    out = torch.zeros(batch.batch_size, num_candidates, len(vocab), dtype=torch.bool)
    for b, task in enumerate(parsed):
        for k, cats in enumerate(task or ()):
            for c in cats:
                out[b, k, index[c]] = True
    return out.to(device)


def redundancy(placed_categories: Tensor, cutoff: int | None = None) -> Tensor:
    """Share of each placed item's categories already covered by the items placed above it.

    ``rho_k = |C(a_k) ∩ (C(a_1) ∪ ... ∪ C(a_{k-1}))| / |C(a_k)|`` for 1-based ``k <= c``, and 0 past
    the cutoff ``c`` or for an item without categories. Causal: ``rho_k`` depends only on the
    items placed up to rank ``k``.

    Args:
        placed_categories: ``[..., K, C]`` bool multi-hot categories in placed order
            (typically ``[B, G, K, C]``).
        cutoff: ``c``; None means ``c = K``.

    Returns:
        ``[..., K]`` float in ``[0, 1]``.

    Examples:
        >>> cats = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=torch.bool)
        >>> redundancy(cats).tolist()
        [0.0, 1.0, 0.5]
        >>> redundancy(cats, cutoff=2).tolist()
        [0.0, 1.0, 0.0]
    """
    cats = placed_categories.bool()
    x = cats.to(torch.float64)
    seen = (torch.cumsum(x, dim=-2) - x) > 0  # covered by the ranks above
    repeated = (cats & seen).sum(-1).to(torch.float64)
    total = cats.sum(-1).to(torch.float64)
    rho = torch.where(total > 0, repeated / total.clamp_min(1.0), torch.zeros(()))
    if cutoff is not None and cutoff < rho.shape[-1]:
        rho[..., cutoff:] = 0.0
    return rho


class DiverseSwap(Reward):
    """Causal swap reward with a category-redundancy penalty inside the top ``c``.

    ``r_k = swap_k - lambda * rho_k``, where ``swap_k`` is FlexRec's causal swap reward
    (:func:`flexrec.rewards.functional.swap_rewards`) and ``rho_k`` (:func:`redundancy`) is the share
    of the categories of the item at rank ``k <= c`` already covered by the items placed above it
    (0 past the cutoff). The penalty is causal, like the swap reward: it only looks at the prefix
    the policy had built when it chose ``a_k``. The list metric stays NDCG@c, so validation numbers
    are comparable with ``swap``.

    Categories come from ``batch.candidate_categories``, or else are parsed from
    ``batch.candidate_text`` (see :func:`category_matrix`). Without either ``diverse_swap`` equals
    ``swap``.

    Shapes: gains ``[B, K]`` and permutations ``[B, G, K]`` in; rewards, weights ``[B, G, K]`` and
    list metric ``[B, G]`` out.

    Args:
        cutoff: NDCG cutoff ``c`` of the swap reward and of the penalty; None means ``c = K``.
        penalty: ``lambda >= 0``, in NDCG units per fully repeated item.
    """

    name = "diverse_swap"

    def __init__(self, cutoff: int | None = None, penalty: float = 0.1) -> None:
        super().__init__(cutoff)
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        self.penalty = penalty

    def item_rewards(
        self,
        placed_gains: Tensor,
        batch: RankingBatch | None = None,
        rollout: Rollout | None = None,
    ) -> Tensor:
        """Swap rewards minus ``penalty * redundancy`` in placed order ``[B, G, K]``.

        Args:
            placed_gains: ``[B, G, K]`` gains in placed order.
            batch: the tasks; they supply the categories.
            rollout: the permutations ``[B, G, K]`` that placed the gains (flexrec passes it
                because this signature names it); without it only the swap part is returned.
        """
        rewards = F.swap_rewards(placed_gains, self.cutoff)
        if self.penalty == 0 or rollout is None:
            return rewards
        cats = category_matrix(batch, placed_gains.shape[-1], placed_gains.device)
        if cats is None:
            return rewards
        rho = redundancy(gather_placed(cats, rollout.permutations), self.cutoff)
        return rewards - self.penalty * rho.to(rewards.dtype)
