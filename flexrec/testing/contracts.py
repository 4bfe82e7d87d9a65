"""Contract test suites every component must pass, reusable by plug-in authors.

One suite per registry: :class:`RewardContract`, :class:`EstimatorContract`, :class:`NeedContract`,
:class:`PolicyContract` and :class:`FeedbackModelContract`. Subclass one in your own test module
and say which component to test, either with a ``spec`` class attribute or by overriding the
``*_spec`` fixture::

    from flexrec.testing.contracts import RewardContract

    class TestMyReward(RewardContract):
        spec = {"name": "my_reward", "args": {"cutoff": 5}}

pytest then runs every ``test_*`` method of the contract against your component, built through
the registry exactly as a config would build it (so registration is tested too). flexrec runs the
same suites over every built-in component.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

from flexrec.registry import registries
from flexrec.testing.feedback_contract import FeedbackModelContract
from flexrec.testing.objective_contract import ObjectiveContract
from flexrec.testing.policy_contract import PolicyContract
from flexrec.types import RewardOutput, Rollout

__all__ = [
    "EstimatorContract",
    "FeedbackModelContract",
    "NeedContract",
    "ObjectiveContract",
    "PolicyContract",
    "RewardContract",
    "random_rollout",
]


def random_rollout(
    batch: int = 3, group: int = 4, k: int = 6, seed: int = 0
) -> tuple[Tensor, Rollout]:
    """Random graded gains ``[B, K]`` (with ties and zeros) and random permutations ``[B, G, K]``."""
    gen = torch.Generator().manual_seed(seed)
    gains = torch.randint(0, 4, (batch, k), generator=gen).double() / 3.0
    perms = torch.stack(
        [
            torch.stack([torch.randperm(k, generator=gen) for _ in range(group)])
            for _ in range(batch)
        ]
    )
    return gains, Rollout(
        permutations=perms, logprobs=torch.zeros(batch, group, k, dtype=gains.dtype)
    )


class RewardContract:
    """Properties every item-level reward must have."""

    spec: ClassVar[Any] = None

    @pytest.fixture
    def reward_spec(self) -> Any:
        """The spec under test (override, or set ``spec``)."""
        if self.spec is None:
            pytest.skip("set `spec` or override the `reward_spec` fixture")
        return self.spec

    @pytest.fixture
    def reward(self, reward_spec: Any) -> Any:
        """The reward built through the registry."""
        return registries.reward.build(reward_spec)

    def _score(self, reward: Any, gains: Tensor, rollout: Rollout) -> RewardOutput:
        return reward(gains, rollout)

    def test_shapes_and_finite(self, reward: Any) -> None:
        gains, rollout = random_rollout()
        out = self._score(reward, gains, rollout)
        assert isinstance(out, RewardOutput)
        assert out.rewards.shape == rollout.permutations.shape
        assert out.weights.shape == rollout.permutations.shape
        assert out.list_metric.shape == rollout.permutations.shape[:2]
        assert torch.isfinite(out.rewards).all()

    def test_list_metric_in_unit_interval(self, reward: Any) -> None:
        gains, rollout = random_rollout(seed=1)
        metric = self._score(reward, gains, rollout).list_metric
        assert (metric >= -1e-9).all() and (metric <= 1 + 1e-9).all()

    def test_all_zero_gains_are_finite(self, reward: Any) -> None:
        gains, rollout = random_rollout(seed=2)
        out = self._score(reward, torch.zeros_like(gains), rollout)
        assert torch.isfinite(out.rewards).all()
        assert torch.equal(out.list_metric, torch.zeros_like(out.list_metric))

    def test_depends_only_on_placed_gains(self, reward: Any) -> None:
        """Relabelling the candidates (and the permutations with them) changes nothing."""
        gains, rollout = random_rollout(seed=3)
        relabel = torch.randperm(gains.shape[1], generator=torch.Generator().manual_seed(9))
        inverse = torch.argsort(relabel)
        moved = Rollout(permutations=inverse[rollout.permutations], logprobs=rollout.logprobs)
        a = self._score(reward, gains, rollout).rewards
        b = self._score(reward, gains[:, relabel], moved).rewards
        torch.testing.assert_close(a, b)

    def test_tasks_are_independent(self, reward: Any) -> None:
        """A task's rewards do not depend on the other tasks of the batch."""
        gains, rollout = random_rollout(seed=4)
        full = self._score(reward, gains, rollout).rewards
        first = Rollout(permutations=rollout.permutations[:1], logprobs=rollout.logprobs[:1])
        torch.testing.assert_close(full[:1], self._score(reward, gains[:1], first).rewards)

    def test_has_registered_name(self, reward: Any) -> None:
        assert registries.reward.get(type(reward).name) is type(reward)


class EstimatorContract:
    """Properties every advantage estimator must have."""

    spec: ClassVar[Any] = None

    @pytest.fixture
    def estimator_spec(self) -> Any:
        """The spec under test (override, or set ``spec``)."""
        if self.spec is None:
            pytest.skip("set `spec` or override the `estimator_spec` fixture")
        return self.spec

    @pytest.fixture
    def estimator(self, estimator_spec: Any) -> Any:
        """The estimator built through the registry."""
        return registries.estimator.build(estimator_spec)

    @staticmethod
    def _output(seed: int = 0, variance: bool = True, group: int = 4) -> RewardOutput:
        gen = torch.Generator().manual_seed(seed)
        shape = (3, group, 5)
        weights = torch.rand(shape, generator=gen, dtype=torch.float64)
        return RewardOutput(
            rewards=torch.randn(shape, generator=gen, dtype=torch.float64),
            list_metric=torch.rand(shape[:2], generator=gen, dtype=torch.float64),
            weights=weights / weights.sum(-1, keepdim=True),
            variance=torch.rand(shape, generator=gen, dtype=torch.float64) if variance else None,
        )

    def test_shapes_and_finite(self, estimator: Any) -> None:
        for variance in (True, False):
            out = self._output(variance=variance)
            adv = estimator(out)
            assert adv.shape == out.rewards.shape
            assert torch.isfinite(adv).all()

    def test_constant_rewards_are_finite(self, estimator: Any) -> None:
        out = self._output(seed=1)
        out.rewards = torch.full_like(out.rewards, 0.25)
        assert torch.isfinite(estimator(out)).all()

    def test_single_rollout_is_finite(self, estimator: Any) -> None:
        assert torch.isfinite(estimator(self._output(seed=2, group=1))).all()

    def test_deterministic(self, estimator: Any) -> None:
        out = self._output(seed=3)
        torch.testing.assert_close(estimator(out), estimator(out))

    def test_nan_reward_is_rejected(self, estimator: Any) -> None:
        out = self._output(seed=4)
        out.rewards[0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="(?i)nan"):
            estimator(out)

    def test_has_registered_name(self, estimator: Any) -> None:
        assert registries.estimator.get(type(estimator).name) is type(estimator)


class NeedContract:
    """Properties every need must have (extended as the need interface grows)."""

    spec: ClassVar[Any] = None

    @pytest.fixture
    def need_spec(self) -> Any:
        """The spec under test (override, or set ``spec``)."""
        if self.spec is None:
            pytest.skip("set `spec` or override the `need_spec` fixture")
        return self.spec

    @pytest.fixture
    def need(self, need_spec: Any) -> Any:
        """The need built through the registry."""
        return registries.need.build(need_spec)

    def test_has_registered_name(self, need: Any) -> None:
        assert registries.need.get(type(need).name) is type(need)

    def test_has_three_instruction_paraphrases(self, need: Any) -> None:
        instructions = type(need).instructions
        assert len(instructions) >= 3
        assert all(isinstance(text, str) and text.strip() for text in instructions)
        assert len(set(instructions)) == len(instructions)
