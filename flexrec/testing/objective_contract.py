"""The contract every training objective (``objective`` registry) must satisfy.

Subclass :class:`ObjectiveContract` in your own tests and name the objective with ``spec``::

    from flexrec.testing.objective_contract import ObjectiveContract

    class TestMyObjective(ObjectiveContract):
        spec = {"name": "my_objective", "args": {"margin": 0.5}}

The objective is built through the registry with the context the training module passes
(:attr:`ObjectiveContract.context`), and run on :func:`flexrec.testing.batches.make_batch` tasks
with a small seeded native policy, the ``swap`` reward and the ``ua_grpo`` estimator (override the
``objective_policy``, ``objective_batch``, ``objective_reward`` or ``objective_estimator``
fixtures to change them), exactly as :class:`~flexrec.module.FlexRecModule` calls it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

from flexrec.objectives.base import ObjectiveLoss, Targets
from flexrec.registry import registries
from flexrec.testing.batches import make_batch
from flexrec.types import RankingBatch

__all__ = ["ObjectiveContract"]


class ObjectiveContract:
    """Properties every training objective must have.

    Targets are valid permutations ``[B, G, K]`` whose per-task tensors follow the tasks when
    selected, they are reproducible under a seed and the loss treats them as constants; the loss
    is a finite scalar with a gradient for the policy that a small step along it lowers; and the
    losses of micro-batches, each given the minibatch's :meth:`~flexrec.objectives.base.Objective.normalizer`,
    add up to the minibatch's loss, gradient and logged values (what the module's
    ``micro_batch_size`` relies on).

    Attributes:
        spec: the component spec (a name or ``{name, args}``).
        context: the keyword arguments the module offers the constructor (its defaults).
        group_size: ``G`` passed to :meth:`~flexrec.objectives.base.Objective.targets`.
        tolerance: absolute tolerance of the micro-batch composition (float32 policy).
    """

    spec: ClassVar[Any] = None
    context: ClassVar[dict[str, float]] = {
        "clip_low": 0.2,
        "clip_high": 0.2,
        "kl_coef": 0.01,
        "entropy_coef": 0.005,
    }
    group_size: ClassVar[int] = 3
    tolerance: ClassVar[float] = 1e-6

    @pytest.fixture
    def objective_spec(self) -> Any:
        """The spec under test (override, or set ``spec``)."""
        if self.spec is None:
            pytest.skip("set `spec` or override the `objective_spec` fixture")
        return self.spec

    @pytest.fixture
    def objective(self, objective_spec: Any) -> Any:
        """The objective built through the registry, with the module's context."""
        return registries.objective.build(objective_spec, **self.context)

    @pytest.fixture
    def objective_policy(self) -> Any:
        """The policy whose log-probabilities the loss is computed from (seeded native)."""
        return registries.policy.build(
            {"name": "native", "args": {"dim": 16, "seed": 0}},
            num_items=600,
            num_features=4,
            num_needs=3,
        )

    @pytest.fixture
    def objective_batch(self) -> RankingBatch:
        """``B = 4`` tasks of ``K = 6`` candidates with graded, tied and zero gains."""
        return make_batch(batch_size=4, num_candidates=6, seed=3)

    @pytest.fixture
    def objective_reward(self) -> Any:
        """The reward passed to ``targets``."""
        return registries.reward.build("swap")

    @pytest.fixture
    def objective_estimator(self) -> Any:
        """The estimator passed to ``targets``."""
        return registries.estimator.build("ua_grpo")

    @pytest.fixture
    def make_targets(
        self,
        objective: Any,
        objective_policy: Any,
        objective_batch: RankingBatch,
        objective_reward: Any,
        objective_estimator: Any,
    ) -> Any:
        """``make_targets(seed)``: the targets of the batch, as the module computes them."""

        def make(seed: int = 0, grad: bool = False) -> Targets:
            batch = objective_batch
            gains = batch.gains * batch.observed
            variance = torch.rand(gains.shape, generator=torch.Generator().manual_seed(seed))
            torch.manual_seed(seed)
            with torch.set_grad_enabled(grad):
                return objective.targets(
                    batch,
                    gains,
                    0.01 * variance,
                    policy=objective_policy,
                    reward=objective_reward,
                    estimator=objective_estimator,
                    group_size=self.group_size,
                    temperature=1.0,
                )

        return make

    @staticmethod
    def _loss(
        objective: Any,
        policy: Any,
        batch: RankingBatch,
        targets: Targets,
        index: list[int] | None = None,
        normalizer: Tensor | None = None,
    ) -> ObjectiveLoss:
        if index is not None:
            batch, targets = batch.select(index), targets.select(index)
        logprobs, steps = policy.log_probs(batch, targets.permutations, rollout=targets.rollout)
        out = objective.loss(logprobs, steps, targets, normalizer)
        assert isinstance(out, ObjectiveLoss)
        return out

    @staticmethod
    def _grads(policy: Any) -> list[Tensor]:
        return [
            torch.zeros_like(p) if p.grad is None else p.grad.clone()
            for p in policy.trainable_parameters()
        ]

    def test_targets_are_permutations_of_the_candidates(
        self, make_targets: Any, objective_batch: RankingBatch
    ) -> None:
        targets = make_targets()
        b, k = objective_batch.batch_size, objective_batch.num_candidates
        perms = targets.permutations
        assert perms.dtype == torch.long and perms.dim() == 3
        assert perms.shape[0] == b and perms.shape[2] == k and perms.shape[1] >= 1
        assert torch.equal(perms.sort(-1).values, torch.arange(k).expand_as(perms))
        if targets.rollout is not None:
            assert torch.equal(targets.rollout.permutations, perms)
        for name, value in targets.tensors.items():
            assert value.shape[0] == b, f"targets.tensors[{name!r}] is not per task"
        for name, value in targets.logs.items():
            assert value.dim() == 0 and torch.isfinite(value), f"targets.logs[{name!r}]"

    def test_selected_targets_follow_their_tasks(self, make_targets: Any) -> None:
        targets = make_targets()
        sub = targets.select([2, 0])
        assert torch.equal(sub.permutations, targets.permutations[[2, 0]])
        for name, value in targets.tensors.items():
            torch.testing.assert_close(sub.tensors[name], value[[2, 0]], msg=name)

    def test_targets_are_deterministic_under_a_seed(self, make_targets: Any) -> None:
        first, again = make_targets(seed=5), make_targets(seed=5)
        assert torch.equal(first.permutations, again.permutations)
        assert first.tensors.keys() == again.tensors.keys()
        for name, value in first.tensors.items():
            torch.testing.assert_close(value, again.tensors[name], rtol=0, atol=0, msg=name)

    def test_targets_are_constants_of_the_loss(
        self,
        objective: Any,
        objective_policy: Any,
        objective_batch: RankingBatch,
        make_targets: Any,
    ) -> None:
        targets = make_targets(grad=True)
        assert not any(v.requires_grad for v in targets.tensors.values())
        leaves = {
            name: value.detach().clone().requires_grad_(True)
            for name, value in targets.tensors.items()
            if value.is_floating_point()
        }
        targets.tensors.update(leaves)
        out = self._loss(objective, objective_policy, objective_batch, targets)
        out.loss.backward()
        for name, leaf in leaves.items():
            assert leaf.grad is None or not leaf.grad.any(), f"gradient flows into {name!r}"

    def test_loss_is_a_finite_scalar_with_a_gradient(
        self,
        objective: Any,
        objective_policy: Any,
        objective_batch: RankingBatch,
        make_targets: Any,
    ) -> None:
        targets = make_targets()
        out = self._loss(objective, objective_policy, objective_batch, targets)
        assert out.loss.dim() == 0 and torch.isfinite(out.loss) and out.loss.requires_grad
        for name, value in out.logs.items():
            assert value.dim() == 0 and torch.isfinite(value) and not value.requires_grad, name
        shown = {"loss", *out.logs, *targets.logs}
        assert set(targets.prog_bar) <= shown, "prog_bar names keys that are not logged"
        objective_policy.zero_grad()
        out.loss.backward()
        grads = self._grads(objective_policy)
        assert all(torch.isfinite(g).all() for g in grads)
        assert any(g.any() for g in grads), "the loss has no gradient for the policy"

    def test_normalizer_is_a_positive_scalar(self, objective: Any, make_targets: Any) -> None:
        targets = make_targets()
        normalizer = torch.as_tensor(objective.normalizer(targets))
        assert normalizer.dim() == 0 and torch.isfinite(normalizer) and normalizer >= 1
        assert not normalizer.requires_grad

    def test_micro_batches_add_up_to_the_minibatch(
        self,
        objective: Any,
        objective_policy: Any,
        objective_batch: RankingBatch,
        make_targets: Any,
    ) -> None:
        targets = make_targets()
        objective_policy.zero_grad()
        whole = self._loss(objective, objective_policy, objective_batch, targets)
        whole.loss.backward()
        expected = self._grads(objective_policy)

        normalizer = objective.normalizer(targets)
        objective_policy.zero_grad()
        loss = torch.zeros(())
        logs: dict[str, Tensor] = {}
        for part in ([2], [0, 3], [1]):
            out = self._loss(
                objective, objective_policy, objective_batch, targets, part, normalizer
            )
            out.loss.backward()
            loss = loss + out.loss.detach()
            for name, value in out.logs.items():
                logs[name] = logs.get(name, torch.zeros(())) + value
        atol = self.tolerance
        torch.testing.assert_close(loss, whole.loss.detach(), rtol=0.0, atol=atol)
        assert logs.keys() == whole.logs.keys()
        for name, value in whole.logs.items():
            torch.testing.assert_close(logs[name], value, rtol=0.0, atol=atol, msg=name)
        for got, want in zip(self._grads(objective_policy), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0.0, atol=atol)

    def test_a_small_step_along_the_gradient_lowers_the_loss(
        self,
        objective: Any,
        objective_policy: Any,
        objective_batch: RankingBatch,
        make_targets: Any,
    ) -> None:
        targets = make_targets()
        objective_policy.zero_grad()
        before = self._loss(objective, objective_policy, objective_batch, targets).loss
        before.backward()
        params = objective_policy.trainable_parameters()
        norm = torch.sqrt(sum((p.grad**2).sum() for p in params if p.grad is not None))
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.sub_(1e-3 * p.grad / norm)
            after = self._loss(objective, objective_policy, objective_batch, targets).loss
        assert after < before.detach()

    def test_has_registered_name(self, objective: Any) -> None:
        assert registries.objective.get(type(objective).name) is type(objective)
