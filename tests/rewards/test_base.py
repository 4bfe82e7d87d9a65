"""The Reward base class: what it passes to ``item_rewards``."""

from __future__ import annotations

import torch
from torch import Tensor

from flexrec.rewards.base import Reward
from flexrec.types import RankingBatch, Rollout


class PlainReward(Reward):
    name = "test_plain"

    def item_rewards(self, placed_gains: Tensor, batch: RankingBatch | None = None) -> Tensor:
        return placed_gains * 2


class PositionAware(Reward):
    """Reward = the candidate index that was placed (needs the permutations)."""

    name = "test_position_aware"
    seen: list[Rollout | None]

    def item_rewards(
        self,
        placed_gains: Tensor,
        batch: RankingBatch | None = None,
        rollout: Rollout | None = None,
    ) -> Tensor:
        self.seen = [rollout]
        assert rollout is not None
        return rollout.permutations.float()


def test_rollout_is_passed_only_to_rewards_that_declare_it() -> None:
    gains = torch.tensor([[0.0, 0.5, 1.0]])
    perms = torch.tensor([[[2, 0, 1], [1, 2, 0]]])
    rollout = Rollout(permutations=perms, logprobs=torch.zeros(1, 2, 3))
    plain = PlainReward()(gains, rollout)
    torch.testing.assert_close(plain.rewards, torch.tensor([[[2.0, 0.0, 1.0], [1.0, 2.0, 0.0]]]))
    aware = PositionAware()
    out = aware(gains, rollout)
    assert aware.seen == [rollout]
    torch.testing.assert_close(out.rewards, perms.float())
    # the list metric and weights are the base class's, whatever the item rewards are
    torch.testing.assert_close(out.list_metric, plain.list_metric)
    assert PositionAware._wants_rollout() and not PlainReward._wants_rollout()


def test_built_in_rewards_name_ndcg_as_their_list_metric() -> None:
    from flexrec.registry import registries

    # the base class computes NDCG at the cutoff, and training logs it as train/ndcg
    assert Reward.list_metric_name == "ndcg"
    for entry in registries.reward.entries():
        if entry.module.startswith("flexrec."):
            assert entry.cls.list_metric_name == "ndcg", entry.name
