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
from flexrec.testing.checks import expect, expect_close, expect_equal, expect_finite
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
        expect(
            isinstance(out, ObjectiveLoss),
            "objective.loss(...)",
            "an ObjectiveLoss",
            type(out).__name__,
        )
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
        expect(perms.dtype == torch.long, "targets.permutations dtype", "torch.long", perms.dtype)
        shape = tuple(perms.shape)
        expect(
            perms.dim() == 3 and shape[0] == b and shape[2] == k and shape[1] >= 1,
            "targets.permutations shape",
            f"[B, G, K] = ({b}, G >= 1, {k})",
            shape,
        )
        expect_equal(
            "sorted targets.permutations (each a permutation of 0..K-1)",
            perms.sort(-1).values,
            torch.arange(k).expand_as(perms),
        )
        if targets.rollout is not None:
            expect_equal("targets.rollout.permutations", targets.rollout.permutations, perms)
        for name, value in targets.tensors.items():
            expect(
                value.dim() >= 1 and value.shape[0] == b,
                f"targets.tensors[{name!r}] shape",
                f"one row per task (leading dimension B = {b})",
                tuple(value.shape),
            )
        for name, value in targets.logs.items():
            _expect_finite_scalar(f"targets.logs[{name!r}]", value)

    def test_selected_targets_follow_their_tasks(self, make_targets: Any) -> None:
        targets = make_targets()
        sub = targets.select([2, 0])
        expect_equal(
            "targets.select([2, 0]).permutations", sub.permutations, targets.permutations[[2, 0]]
        )
        for name, value in targets.tensors.items():
            expect_close(
                f"targets.select([2, 0]).tensors[{name!r}]", sub.tensors[name], value[[2, 0]]
            )

    def test_targets_are_deterministic_under_a_seed(self, make_targets: Any) -> None:
        first, again = make_targets(seed=5), make_targets(seed=5)
        expect_equal(
            "permutations of targets under the same seed", again.permutations, first.permutations
        )
        expect_equal(
            "names of targets.tensors under the same seed",
            sorted(again.tensors),
            sorted(first.tensors),
        )
        for name, value in first.tensors.items():
            expect_close(
                f"targets.tensors[{name!r}] under the same seed",
                again.tensors[name],
                value,
                rtol=0,
                atol=0,
            )

    def test_targets_are_constants_of_the_loss(
        self,
        objective: Any,
        objective_policy: Any,
        objective_batch: RankingBatch,
        make_targets: Any,
    ) -> None:
        targets = make_targets(grad=True)
        with_grad = [name for name, v in targets.tensors.items() if v.requires_grad]
        expect(not with_grad, "targets.tensors", "no tensor with a gradient", with_grad)
        leaves = {
            name: value.detach().clone().requires_grad_(True)
            for name, value in targets.tensors.items()
            if value.is_floating_point()
        }
        targets.tensors.update(leaves)
        out = self._loss(objective, objective_policy, objective_batch, targets)
        out.loss.backward()
        for name, leaf in leaves.items():
            expect(
                leaf.grad is None or not leaf.grad.any(),
                f"gradient of the loss for targets.tensors[{name!r}]",
                "none (targets are constants)",
                "a non-zero gradient",
            )

    def test_loss_is_a_finite_scalar_with_a_gradient(
        self,
        objective: Any,
        objective_policy: Any,
        objective_batch: RankingBatch,
        make_targets: Any,
    ) -> None:
        targets = make_targets()
        out = self._loss(objective, objective_policy, objective_batch, targets)
        _expect_finite_scalar("loss", out.loss)
        expect(out.loss.requires_grad, "loss.requires_grad", "True", False)
        for name, value in out.logs.items():
            _expect_finite_scalar(f"logs[{name!r}]", value)
            expect(not value.requires_grad, f"logs[{name!r}]", "detached", "requires_grad")
        shown = {"loss", *out.logs, *targets.logs}
        unknown = sorted(set(targets.prog_bar) - shown)
        expect(not unknown, "targets.prog_bar", f"logged keys ({sorted(shown)})", unknown)
        objective_policy.zero_grad()
        out.loss.backward()
        grads = self._grads(objective_policy)
        for i, grad in enumerate(grads):
            expect_finite(f"gradient of policy parameter {i}", grad)
        expect(
            any(g.any() for g in grads),
            "gradient of the loss for the policy",
            "non-zero for some parameter",
            "zero everywhere",
        )

    def test_normalizer_is_a_positive_scalar(self, objective: Any, make_targets: Any) -> None:
        targets = make_targets()
        normalizer = torch.as_tensor(objective.normalizer(targets))
        _expect_finite_scalar("normalizer(targets)", normalizer)
        expect(normalizer >= 1, "normalizer(targets)", ">= 1", normalizer.item())
        expect(not normalizer.requires_grad, "normalizer(targets)", "no gradient", "one")

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
        expect_close(
            "summed micro-batch losses vs the minibatch loss",
            loss,
            whole.loss.detach(),
            rtol=0.0,
            atol=atol,
        )
        expect_equal("micro-batch log names", sorted(logs), sorted(whole.logs))
        for name, value in whole.logs.items():
            expect_close(
                f"summed micro-batch logs[{name!r}]", logs[name], value, rtol=0.0, atol=atol
            )
        for i, (got, want) in enumerate(zip(self._grads(objective_policy), expected, strict=True)):
            expect_close(
                f"summed micro-batch gradient of policy parameter {i}",
                got,
                want,
                rtol=0.0,
                atol=atol,
            )

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
        expect(
            after < before.detach(),
            "loss after a 1e-3 step against its gradient",
            f"< {before.item():.6g} (the loss before)",
            f"{after.item():.6g}",
        )

    def test_has_registered_name(self, objective: Any) -> None:
        cls = type(objective)
        found = registries.objective.get(cls.name) if cls.name in registries.objective else None
        expect(found is cls, f"objective registry entry {cls.name!r}", cls.__qualname__, found)


def _expect_finite_scalar(what: str, value: Tensor) -> None:
    __tracebackhide__ = True
    value = torch.as_tensor(value)
    expect(value.dim() == 0, what, "a scalar (0-dim tensor)", f"shape {tuple(value.shape)}")
    expect_finite(what, value)
