"""The contract every ranking policy (``policy`` registry) must satisfy.

Import it from :mod:`flexrec.testing.contracts`. It runs on :func:`flexrec.testing.batches.make_batch`
batches: three tasks of six candidates whose histories (1, 6 and 3 items) give prompts of
different lengths, so LLM policies are checked with left padding.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from flexrec.registry import registries
from flexrec.testing.batches import make_batch
from flexrec.testing.checks import expect, expect_close, expect_equal, expect_shape
from flexrec.types import RankingBatch

__all__ = ["PolicyContract"]


class PolicyContract:
    """Properties every ranking policy must have.

    Constrained decoding yields valid permutations whose per-step distributions cover exactly the
    candidates not placed yet; :meth:`~flexrec.policies.base.Policy.log_probs` recomputes what
    :meth:`~flexrec.policies.base.Policy.sample` drew (at any temperature) from the permutations
    and the rollout, task by task as in a padded batch; greedy ranking is deterministic; the reference policy is the initial policy and
    does not move when an optimizer step moves the policy.

    Say which policy to test with ``spec`` (built through the registry with ``context`` as the
    dataset context, after ``torch.manual_seed(0)``) or override the ``policy`` fixture. A policy
    that learns outside the RL loop gets the data module it prepares on from the
    ``policy_datamodule`` fixture (default: no :meth:`prepare` call). Set ``trainable = False``
    for a policy without trainable parameters: it must then report none, and the gradient-step
    checks are left out.

    Attributes:
        spec: the component spec (a name or ``{name, args}``).
        context: ``num_items``, ``num_features`` and ``num_needs`` offered to the constructor;
            the test batches have ``num_features`` candidate features.
        trainable: whether RL can train the policy.
    """

    spec: ClassVar[Any] = None
    context: ClassVar[dict[str, int]] = {"num_items": 600, "num_features": 4, "num_needs": 3}
    trainable: ClassVar[bool] = True

    @pytest.fixture
    def policy_spec(self) -> Any:
        """The spec under test (override, or set ``spec``)."""
        if self.spec is None:
            pytest.skip("set `spec` or override the `policy_spec` (or `policy`) fixture")
        return self.spec

    @pytest.fixture
    def policy_datamodule(self) -> Any:
        """The data module passed to ``policy.prepare`` before the tests (None: no call)."""
        return None

    @pytest.fixture
    def policy(self, policy_spec: Any, policy_datamodule: Any) -> Any:
        """The policy built through the registry (seeded) and prepared."""
        torch.manual_seed(0)
        policy = registries.policy.build(policy_spec, **self.context)
        if policy_datamodule is not None:
            policy.prepare(policy_datamodule)
        return policy

    def make_batch(self, **kwargs: Any) -> RankingBatch:
        """:func:`~flexrec.testing.batches.make_batch` with ``context["num_features"]`` features."""
        return make_batch(num_features=self.context.get("num_features", 4), **kwargs)

    @pytest.fixture
    def policy_batch(self) -> RankingBatch:
        """The main test batch: ``B = 3`` tasks, ``K = 6`` candidates, mixed history lengths."""
        # Mixed history lengths give mixed prompt lengths, so LLM micro-batches are left-padded.
        return self.make_batch(batch_size=3, num_candidates=6, history_lengths=[1, 6, 3], seed=1)

    def test_sampled_permutations_are_valid(self, policy: Any, policy_batch: RankingBatch) -> None:
        b, k = policy_batch.batch_size, policy_batch.num_candidates
        torch.manual_seed(0)
        rollout = policy.sample(policy_batch, group_size=5)
        expect_shape("sample(batch, 5).permutations [B, G, K]", rollout.permutations, (b, 5, k))
        expect_shape("sample(batch, 5).logprobs [B, G, K]", rollout.logprobs, (b, 5, k))
        expect_shape(
            "sample(batch, 5).step_logprobs [B, G, K, K]", rollout.step_logprobs, (b, 5, k, k)
        )
        expected = torch.arange(k).expand(b, 5, k)
        expect_equal(
            "sorted sampled permutations (each a permutation of 0..K-1)",
            rollout.permutations.sort(-1).values,
            expected,
        )
        # The last placed item is forced: log-probability exactly 0.
        expect_equal(
            "log-probability of the last (forced) item",
            rollout.logprobs[..., -1],
            torch.zeros_like(rollout.logprobs[..., -1]),
        )
        expect(
            torch.all(rollout.logprobs <= 0),
            "sampled log-probabilities",
            "values <= 0",
            f"maximum {rollout.logprobs.max().item():.6g}",
        )

    def test_sample_logprobs_equal_recomputed(
        self, policy: Any, policy_batch: RankingBatch
    ) -> None:
        torch.manual_seed(1)
        rollout = policy.sample(policy_batch, group_size=4)
        logprobs, step_logprobs = policy.log_probs(
            policy_batch, rollout.permutations, rollout=rollout
        )
        if self.trainable:
            expect(logprobs.requires_grad, "log_probs(...).requires_grad", "True", False)
        expect_close(
            "recomputed log-probabilities",
            logprobs.detach(),
            rollout.logprobs,
            atol=1e-5,
            rtol=0,
        )
        finite = rollout.step_logprobs > -torch.inf
        expect_equal(
            "recomputed step log-probabilities > -inf (the candidates still available)",
            step_logprobs > -torch.inf,
            finite,
        )
        expect_close(
            "recomputed step log-probabilities",
            step_logprobs.detach()[finite],
            rollout.step_logprobs[finite],
            atol=1e-5,
            rtol=1e-6,
        )
        if rollout.reasoning is None:  # nothing but the permutations is needed to rebuild them
            again, _ = policy.log_probs(policy_batch, rollout.permutations)
            expect_close(
                "log-probabilities recomputed from the permutations alone",
                again.detach(),
                rollout.logprobs,
                atol=1e-5,
                rtol=0,
            )

    def test_logprobs_are_those_of_temperature_one(
        self, policy: Any, policy_batch: RankingBatch
    ) -> None:
        """A sampling temperature changes which items are drawn, not the recorded log-probs."""
        torch.manual_seed(4)
        rollout = policy.sample(policy_batch, group_size=2, temperature=0.7)
        expect_equal(
            "sorted permutations sampled at temperature 0.7",
            rollout.permutations.sort(-1).values,
            torch.arange(policy_batch.num_candidates).expand_as(rollout.permutations),
        )
        logprobs, _ = policy.log_probs(policy_batch, rollout.permutations, rollout=rollout)
        expect_close(
            "temperature-1 log-probabilities of a temperature-0.7 sample (recorded vs recomputed)",
            logprobs.detach(),
            rollout.logprobs,
            atol=1e-5,
            rtol=0,
        )

    def test_each_task_alone_matches_the_padded_batch(
        self, policy: Any, policy_batch: RankingBatch
    ) -> None:
        torch.manual_seed(2)
        rollout = policy.sample(policy_batch, group_size=3)
        for b in range(policy_batch.batch_size):
            alone, _ = policy.log_probs(
                policy_batch.select([b]),
                rollout.permutations[b : b + 1],
                rollout=rollout.select([b]),
            )
            expect_close(
                f"log-probabilities of task {b} alone vs in the padded batch",
                alone.detach(),
                rollout.logprobs[b : b + 1],
                atol=1e-5,
                rtol=0,
            )

    def test_step_distributions_sum_to_one_over_remaining(
        self, policy: Any, policy_batch: RankingBatch
    ) -> None:
        b, k = policy_batch.batch_size, policy_batch.num_candidates
        rollout = policy.sample(policy_batch, group_size=2)
        probs = rollout.step_logprobs.exp()
        expect_close(
            "per-step probabilities summed over the candidates",
            probs.sum(-1),
            torch.ones(b, 2, k),
            atol=1e-5,
            rtol=0,
        )
        # Placed candidates have probability exactly 0; step k has K - k remaining candidates.
        remaining = (rollout.step_logprobs > -torch.inf).sum(-1)
        expect_equal(
            "candidates with probability > 0 at each step",
            remaining,
            torch.arange(k, 0, -1).expand(b, 2, k),
        )
        for step in range(1, k):
            placed = rollout.permutations[:, :, :step]
            already = rollout.step_logprobs[:, :, step].gather(-1, placed)
            expect_equal(
                f"step {step} log-probabilities of the candidates placed before it",
                already,
                torch.full_like(already, -torch.inf),
            )

    def test_greedy_rank_is_deterministic_and_matches_argmax(
        self, policy: Any, policy_batch: RankingBatch
    ) -> None:
        b, k = policy_batch.batch_size, policy_batch.num_candidates
        first = policy.rank(policy_batch)
        torch.manual_seed(123)
        second = policy.rank(policy_batch)
        expect_equal("rank(batch) again, under another seed", second, first)
        expect_equal(
            "sorted rank(batch) (a permutation of 0..K-1)",
            first.sort(-1).values,
            torch.arange(k).expand(b, k),
        )
        greedy = policy.sample(policy_batch, group_size=1, temperature=0.0)
        expect_equal("sample at temperature 0 vs rank(batch)", greedy.permutations[:, 0], first)
        _, steps = policy.log_probs(policy_batch, greedy.permutations, rollout=greedy)
        expect_equal("argmax of each step's log-probabilities", steps[:, 0].argmax(-1), first)

    def test_reference_equals_initial_policy_and_gradient_step_changes_policy(
        self, policy: Any, policy_batch: RankingBatch
    ) -> None:
        """pi_ref is the initial policy; an optimizer step moves the policy, never pi_ref.

        A policy declared not ``trainable`` must have no trainable parameters instead.
        """
        batch = policy_batch
        torch.manual_seed(3)
        rollout = policy.sample(batch, group_size=4)
        before, _ = policy.log_probs(batch, rollout.permutations, rollout=rollout)
        ref, ref_steps = policy.reference_log_probs(batch, rollout.permutations, rollout=rollout)
        expect_close(
            "reference log-probabilities vs the initial policy's",
            ref,
            before.detach(),
            atol=1e-6,
            rtol=0,
        )
        params = policy.trainable_parameters()
        if not self.trainable:
            expect(params == [], "trainable_parameters()", "[] (trainable = False)", len(params))
            expect(
                not ref.requires_grad and not ref_steps.requires_grad,
                "reference log-probabilities",
                "no gradient",
                "requires_grad",
            )
            return
        expect(params, "trainable_parameters()", "at least one parameter", "none")
        frozen = sum(not p.requires_grad for p in params)
        expect(not frozen, "trainable_parameters()", "requires_grad on each", f"{frozen} frozen")
        optimizer = torch.optim.SGD(params, lr=1e-3)
        # Push up the first rollout's log-likelihood.
        loss = -before[:, 0].sum()
        loss.backward()
        expect(
            any(p.grad is not None and p.grad.abs().sum() > 0 for p in params),
            "gradients of the first rollout's log-likelihood",
            "a non-zero gradient for some parameter",
            "none",
        )
        optimizer.step()
        after, _ = policy.log_probs(batch, rollout.permutations, rollout=rollout)
        gain = (after[:, 0].sum() - before[:, 0].sum()).item()
        expect(
            gain > 1e-4,
            "log-likelihood gained by one SGD step along its gradient",
            "> 1e-4",
            f"{gain:.3g}",
        )
        # pi_ref has not moved.
        ref_after, ref_steps_after = policy.reference_log_probs(
            batch, rollout.permutations, rollout=rollout
        )
        expect_close("reference log-probabilities after a step", ref_after, ref, atol=1e-6, rtol=0)
        expect_close(
            "reference step log-probabilities after a step",
            ref_steps_after,
            ref_steps,
            atol=1e-6,
            rtol=0,
        )
        expect(not ref_after.requires_grad, "reference log-probabilities", "no gradient", "one")

    def test_group_of_one_and_two_candidates(self, policy: Any) -> None:
        small = self.make_batch(batch_size=2, num_candidates=2, seed=4)
        rollout = policy.sample(small, group_size=1)
        expect_shape("sample(2 tasks of 2, 1).permutations", rollout.permutations, (2, 1, 2))
        logprobs, _ = policy.log_probs(small, rollout.permutations, rollout=rollout)
        expect_close(
            "recomputed log-probabilities (2 candidates, 1 rollout)",
            logprobs.detach(),
            rollout.logprobs,
            atol=1e-5,
            rtol=0,
        )

    def test_has_registered_name(self, policy: Any) -> None:
        cls = type(policy)
        found = registries.policy.get(cls.name) if cls.name in registries.policy else None
        expect(found is cls, f"policy registry entry {cls.name!r}", cls.__qualname__, found)
