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
same suites over every built-in component. A failing check says what it expected and what the
component returned (``RewardOutput.rewards [B, G, K]: expected shape (3, 4, 6), found (3, 4)``),
through the checks of :mod:`flexrec.testing.checks`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

from flexrec.data.dataset import MOVIELENS_SCALE, LabelScale
from flexrec.needs.base import NeedContext
from flexrec.needs.functional import percentile
from flexrec.registry import registries
from flexrec.testing.checks import (
    expect,
    expect_close,
    expect_equal,
    expect_finite,
    expect_in_range,
    expect_shape,
)
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
    "random_need_inputs",
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


def random_need_inputs(
    scale: LabelScale = MOVIELENS_SCALE, batch: int = 4, k: int = 8, seed: int = 0
) -> tuple[Tensor, NeedContext]:
    """Raw labels ``[B, K]`` and a :class:`~flexrec.needs.base.NeedContext` for a need's gains.

    The labels are half-steps of ``scale`` with its minimum, threshold, relevance label and
    maximum, NaN (an unobserved label), and labels below the minimum and above the maximum (the
    feedback models sample labels from a Gaussian, see :meth:`FeedbackModel.predict
    <flexrec.critic.base.FeedbackModel.predict>`). Novelty is in ``{0, 1/4, ..., 1}``; trend is
    the percentile of random counts among the task's candidates (ties included), both float32.
    """
    gen = torch.Generator().manual_seed(seed)
    span = scale.maximum - scale.minimum
    steps = torch.randint(0, round(2 * span) + 1, (batch, k), generator=gen)
    labels = (scale.minimum + steps / 2.0).clamp(max=scale.maximum).float()
    special = [
        float("nan"),
        scale.minimum - span,
        scale.minimum,
        scale.threshold,
        scale.relevant,
        scale.maximum,
        scale.maximum + span,
        float("nan"),
    ]
    for i, value in enumerate(special[: batch * k]):
        labels[i % batch, i // batch] = value
    novelty = torch.randint(0, 5, (batch, k), generator=gen).float() / 4.0
    counts = torch.randint(0, 4, (batch, k), generator=gen)
    trend = percentile(counts).float()
    return labels, NeedContext(novelty=novelty, trend=trend)


class RewardContract:
    """Properties every item-level reward must have.

    For gains ``[B, K]`` and a rollout of permutations ``[B, G, K]``, ``reward(gains, rollout)``
    returns a :class:`~flexrec.types.RewardOutput` whose ``rewards`` and ``weights`` are
    ``[B, G, K]`` and ``list_metric`` ``[B, G]``, all finite (also for all-zero gains); the list
    metric is in ``[0, 1]`` (exactly 0 when every gain is 0); the rewards depend only on the
    gains in placed order (relabelling the candidates changes nothing) and each task's rewards
    only on that task; the class is registered under its ``name``.
    """

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
        out = reward(gains, rollout)
        expect(
            isinstance(out, RewardOutput),
            "reward(gains, rollout)",
            "a RewardOutput",
            type(out).__name__,
        )
        return out

    def test_shapes_and_finite(self, reward: Any) -> None:
        gains, rollout = random_rollout()
        out = self._score(reward, gains, rollout)
        shape = tuple(rollout.permutations.shape)
        expect_shape("RewardOutput.rewards [B, G, K]", out.rewards, shape)
        expect_shape("RewardOutput.weights [B, G, K]", out.weights, shape)
        expect_shape("RewardOutput.list_metric [B, G]", out.list_metric, shape[:2])
        expect_finite("RewardOutput.rewards", out.rewards)
        expect_finite("RewardOutput.weights", out.weights)
        expect_finite("RewardOutput.list_metric", out.list_metric)

    def test_list_metric_in_unit_interval(self, reward: Any) -> None:
        gains, rollout = random_rollout(seed=1)
        metric = self._score(reward, gains, rollout).list_metric
        expect_in_range("RewardOutput.list_metric", metric, 0.0, 1.0, tolerance=1e-9)

    def test_all_zero_gains_are_finite(self, reward: Any) -> None:
        gains, rollout = random_rollout(seed=2)
        out = self._score(reward, torch.zeros_like(gains), rollout)
        expect_finite("RewardOutput.rewards for all-zero gains", out.rewards)
        expect_equal(
            "RewardOutput.list_metric for all-zero gains",
            out.list_metric,
            torch.zeros(rollout.permutations.shape[:2], dtype=out.list_metric.dtype),
        )

    def test_depends_only_on_placed_gains(self, reward: Any) -> None:
        """Relabelling the candidates (and the permutations with them) changes nothing."""
        gains, rollout = random_rollout(seed=3)
        relabel = torch.randperm(gains.shape[1], generator=torch.Generator().manual_seed(9))
        inverse = torch.argsort(relabel)
        moved = Rollout(permutations=inverse[rollout.permutations], logprobs=rollout.logprobs)
        a = self._score(reward, gains, rollout).rewards
        b = self._score(reward, gains[:, relabel], moved).rewards
        expect_close("rewards after relabelling the candidates", b, a)

    def test_tasks_are_independent(self, reward: Any) -> None:
        """A task's rewards do not depend on the other tasks of the batch."""
        gains, rollout = random_rollout(seed=4)
        full = self._score(reward, gains, rollout).rewards
        first = Rollout(permutations=rollout.permutations[:1], logprobs=rollout.logprobs[:1])
        alone = self._score(reward, gains[:1], first).rewards
        expect_close("rewards of task 0 scored alone", alone, full[:1])

    def test_has_registered_name(self, reward: Any) -> None:
        _expect_registered(registries.reward, reward)


class EstimatorContract:
    """Properties every advantage estimator must have.

    ``estimator(reward_output)`` returns advantages of the shape of ``reward_output.rewards``
    (``[B, G, K]``), finite with or without gain variances, for constant rewards and for a group
    of one rollout; the same input gives the same advantages; a NaN or infinite reward raises a
    ``ValueError`` (whose message names the NaN) instead of training on it; the class is
    registered under its ``name``.
    """

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
            what = f"advantages ({'with' if variance else 'without'} variances)"
            expect_shape(f"{what} [B, G, K]", adv, out.rewards.shape)
            expect_finite(what, adv)

    def test_constant_rewards_are_finite(self, estimator: Any) -> None:
        out = self._output(seed=1)
        out.rewards = torch.full_like(out.rewards, 0.25)
        expect_finite("advantages of constant rewards", estimator(out))

    def test_single_rollout_is_finite(self, estimator: Any) -> None:
        expect_finite("advantages of a group of one", estimator(self._output(seed=2, group=1)))

    def test_deterministic(self, estimator: Any) -> None:
        out = self._output(seed=3)
        expect_close(
            "advantages of the same rewards, computed again", estimator(out), estimator(out)
        )

    @pytest.mark.parametrize("value", [float("nan"), float("inf")])
    def test_non_finite_reward_is_rejected(self, estimator: Any, value: float) -> None:
        out = self._output(seed=4)
        out.rewards[0, 0, 0] = value
        try:
            adv = estimator(out)
        except ValueError as exc:
            if value != value:  # NaN: the message must say so
                message = " ".join(str(exc).split())
                expect(
                    re.search("(?i)nan", message),
                    "the ValueError for a NaN reward",
                    "a message naming the NaN",
                    repr(message),
                )
            return
        expect(
            False,
            f"estimator(rewards with a {value})",
            "a ValueError",
            f"advantages returned ({type(adv).__name__})",
        )

    def test_has_registered_name(self, estimator: Any) -> None:
        _expect_registered(registries.estimator, estimator)


class NeedContract:
    """Properties every need must have.

    The need is built through the registry and bound to :attr:`scale` (and :attr:`trend_window`),
    as the data module binds it to its dataset. On :func:`random_need_inputs` (labels across the
    scale, beyond it and NaN for unobserved) ``gains(labels, context)`` is a float tensor of the
    labels' shape, finite and in ``[0, 1]``, and ``relevant(labels, context)`` a bool tensor of
    that shape; sampled labels ``[S, B, K]`` broadcast over a context ``[B, K]`` (what the feedback
    models do) and give each sample's own gains; shuffling the candidates shuffles the gains and
    relevance the same way; the need has at least three distinct paraphrases, ``held_out``
    indexes them and leaves at least one for training; the class is registered under its
    ``name``.

    Attributes:
        spec: the component spec (a name or ``{name, args}``).
        scale: the label scale the need is bound to (default: MovieLens ratings, 0.5 to 5).
        trend_window: the dataset trend window the need is bound to, in seconds (30 days).
    """

    spec: ClassVar[Any] = None
    scale: ClassVar[LabelScale] = MOVIELENS_SCALE
    trend_window: ClassVar[int] = 30 * 86_400

    @pytest.fixture
    def need_spec(self) -> Any:
        """The spec under test (override, or set ``spec``)."""
        if self.spec is None:
            pytest.skip("set `spec` or override the `need_spec` fixture")
        return self.spec

    @pytest.fixture
    def unbound_need(self, need_spec: Any) -> Any:
        """The need built through the registry, not bound to a scale yet."""
        return registries.need.build(need_spec)

    @pytest.fixture
    def need(self, unbound_need: Any) -> Any:
        """The need built through the registry and bound to :attr:`scale`."""
        unbound_need.bind(self.scale, self.trend_window)
        return unbound_need

    def test_bind_returns_the_need(self, unbound_need: Any) -> None:
        bound = unbound_need.bind(self.scale, self.trend_window)
        expect(bound is unbound_need, "need.bind(scale)", "the need itself", repr(bound))

    def test_gains_are_finite_and_in_the_unit_interval(self, need: Any) -> None:
        labels, context = random_need_inputs(self.scale)
        gains = need.gains(labels, context)
        expect_shape("gains(labels [B, K], context)", gains, labels.shape)
        expect(gains.is_floating_point(), "gains dtype", "a floating-point dtype", str(gains.dtype))
        expect_in_range("gains of labels across the scale, beyond it and NaN", gains, 0.0, 1.0)

    def test_relevant_is_a_boolean_mask(self, need: Any) -> None:
        labels, context = random_need_inputs(self.scale, seed=1)
        relevant = need.relevant(labels, context)
        expect_shape("relevant(labels [B, K], context)", relevant, labels.shape)
        expect(relevant.dtype == torch.bool, "relevant dtype", "torch.bool", str(relevant.dtype))

    def test_sampled_labels_broadcast_over_the_context(self, need: Any) -> None:
        """Feedback models pass ``S`` label samples per candidate: ``[S, B, K]`` labels, one
        ``[B, K]`` context."""
        labels, context = random_need_inputs(self.scale, seed=2)
        labels = labels.nan_to_num(self.scale.threshold)
        samples = torch.stack([labels, labels + 0.5, labels - 1.0])
        gains = need.gains(samples, context)
        expect_shape("gains(labels [S, B, K], context [B, K])", gains, samples.shape)
        expect_in_range("gains of sampled labels", gains, 0.0, 1.0)
        for s in range(samples.shape[0]):
            alone = need.gains(samples[s], context)
            expect_close(f"gains of label sample {s} among the samples", gains[s], alone)

    def test_candidate_order_does_not_matter(self, need: Any) -> None:
        labels, context = random_need_inputs(self.scale, seed=3)
        order = torch.randperm(labels.shape[-1], generator=torch.Generator().manual_seed(5))
        moved = NeedContext(novelty=context.novelty[:, order], trend=context.trend[:, order])
        gains, shuffled = need.gains(labels, context), need.gains(labels[:, order], moved)
        expect_shape("gains(labels [B, K], context)", gains, labels.shape)
        expect_close("gains of the shuffled candidates", shuffled, gains[:, order])
        relevant = need.relevant(labels, context)
        expect_shape("relevant(labels [B, K], context)", relevant, labels.shape)
        expect_equal(
            "relevance of the shuffled candidates",
            need.relevant(labels[:, order], moved),
            relevant[:, order],
        )

    def test_has_three_instruction_paraphrases(self, need: Any) -> None:
        instructions = type(need).instructions
        expect(len(instructions) >= 3, "instructions", "at least 3 paraphrases", len(instructions))
        blank = [text for text in instructions if not (isinstance(text, str) and text.strip())]
        expect(not blank, "instructions", "non-empty strings", blank)
        expect(
            len(set(instructions)) == len(instructions),
            "instructions",
            "distinct paraphrases",
            [text for text in set(instructions) if instructions.count(text) > 1],
        )

    def test_held_out_paraphrases_leave_some_for_training(self, need: Any) -> None:
        n, held = len(type(need).instructions), tuple(type(need).held_out)
        expect(
            all(isinstance(i, int) and 0 <= i < n for i in held),
            "held_out",
            f"indices of the {n} instructions",
            held,
        )
        expect(len(set(held)) < n, "held_out", "at least one paraphrase left for training", held)

    def test_has_registered_name(self, need: Any) -> None:
        _expect_registered(registries.need, need)


def _expect_registered(registry: Any, component: Any) -> None:
    __tracebackhide__ = True
    cls = type(component)
    name = getattr(cls, "name", None)
    found = registry.get(name) if isinstance(name, str) and name in registry else None
    expect(
        found is cls,
        f"{registry.kind} registry entry {name!r}",
        f"{cls.__module__}.{cls.__qualname__}",
        "nothing" if found is None else f"{found.__module__}.{found.__qualname__}",
    )
