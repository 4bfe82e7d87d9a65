"""Multi-token identifiers: trie-constrained decoding of the LLM policy on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flexrec.policies.llm import LLMPolicy
from flexrec.policies.prompt import resolve_identifier_paths
from flexrec.policies.trie import IdentifierTrie
from flexrec.testing.batches import make_batch

# Tiny-tokenizer paths: " AB" = [" A", "B"], " AC" = [" A", "C"], " 12" = [" 1", "2"],
# " 7" = [" ", "7"], " item 1" = [" ", "it", "e", "m", " 1"], " movie 1" = [" movie", " 1"]: a trie
# of depth 5 with shared prefixes at the root and below it.
MULTI = [" AB", " AC", " 12", " 7", " item 1", " movie 1"]


def build(path: Path, **kwargs) -> LLMPolicy:
    torch.manual_seed(0)
    return LLMPolicy(model=str(path), micro_batch_size=2, **{"lora": {"r": 4}, **kwargs})


@pytest.fixture
def policy(tiny_llm_path: Path) -> LLMPolicy:
    return build(tiny_llm_path, identifiers=MULTI)


@pytest.fixture
def batch():
    # Mixed history lengths: the micro-batches are left-padded.
    return make_batch(batch_size=3, num_candidates=6, history_lengths=[1, 6, 3], seed=1)


def test_trie_structure_and_prefix_free_resolution(policy: LLMPolicy) -> None:
    trie = IdentifierTrie([[5, 1], [5, 2], [7], [8, 9, 3]])
    assert trie.edge_token.tolist() == [5, 1, 2, 7, 8, 9, 3]
    assert trie.edge_parent.tolist() == [0, 1, 1, 0, 0, 2, 3]
    assert trie.inner_token.tolist() == [5, 8, 9] and trie.inner_depth.tolist() == [1, 1, 2]
    assert trie.inner_sees.int().tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match="prefix-free"):
        IdentifierTrie([[5], [5, 1]])
    tok = policy.tokenizer
    # " 10" = [" 1", "0"] extends " 1" and is skipped, like the duplicate " 1".
    idents, paths = resolve_identifier_paths(tok, 3, [" 1", " 10", " 1", " 2", " item 1"])
    assert idents == [" 1", " 2", " item 1"]
    assert paths == [tok.encode(i, add_special_tokens=False) for i in idents]
    with pytest.raises(ValueError, match="K=3"):
        resolve_identifier_paths(tok, 3, [" 1", " 10"])


def test_identifier_modes(policy: LLMPolicy, tiny_llm_path: Path) -> None:
    idents, paths = policy.identifier_paths(6)
    assert idents == MULTI and policy.uses_trie(6)
    assert sorted({len(p) for p in paths}) == [2, 5]
    assert policy.identifier_trie(6).num_inner == 7
    assert not build(tiny_llm_path).uses_trie(6)  # default letters: single-token fast path
    with pytest.raises(ValueError, match="single distinct tokens"):
        build(tiny_llm_path, identifiers=MULTI, identifier_mode="single").identifier_paths(6)
    with pytest.raises(ValueError, match="identifier_mode"):
        build(tiny_llm_path, identifier_mode="tree")
    text = policy.tokenizer.decode(policy.prompt_ids(make_batch(batch_size=1, seed=0))[0])
    assert "[item 1]" in text and "[AB]" in text


def test_sampled_permutations_are_valid_and_steps_are_distributions(policy, batch) -> None:
    torch.manual_seed(0)
    rollout = policy.sample(batch, group_size=5)
    assert torch.equal(rollout.permutations.sort(-1).values, torch.arange(6).expand(3, 5, 6))
    probs = rollout.step_logprobs.exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 5, 6), atol=1e-5, rtol=0)
    remaining = (rollout.step_logprobs > -torch.inf).sum(-1)
    assert torch.equal(remaining, torch.arange(6, 0, -1).expand(3, 5, 6))
    for k in range(1, 6):
        placed = rollout.permutations[:, :, :k]
        assert torch.all(rollout.step_logprobs[:, :, k].gather(-1, placed) == -torch.inf)
    assert torch.all(rollout.logprobs[..., -1] == 0) and torch.all(rollout.logprobs <= 0)


def test_sample_logprobs_equal_recomputed_in_a_padded_batch(policy, batch) -> None:
    torch.manual_seed(1)
    rollout = policy.sample(batch, group_size=4)
    logprobs, step_logprobs = policy.log_probs(batch, rollout.permutations)
    assert logprobs.requires_grad
    torch.testing.assert_close(logprobs.detach(), rollout.logprobs, atol=1e-5, rtol=0)
    finite = rollout.step_logprobs > -torch.inf
    assert torch.equal(step_logprobs > -torch.inf, finite)
    torch.testing.assert_close(
        step_logprobs.detach()[finite], rollout.step_logprobs[finite], atol=1e-5, rtol=1e-6
    )
    for b in range(batch.batch_size):
        alone, _ = policy.log_probs(batch.select([b]), rollout.permutations[b : b + 1])
        torch.testing.assert_close(alone.detach(), rollout.logprobs[b : b + 1], atol=1e-5, rtol=0)


def reference_step_logprobs(
    policy: LLMPolicy, prompt: list[int], paths: list[list[int]], permutation: list[int]
) -> torch.Tensor:
    """Slow reference: one full forward pass (no cache) per trie node and step.

    Returns ``[K, K]`` per-step log-probabilities: the product along each remaining candidate's
    path of the full-vocabulary next-token probabilities, renormalised over the live children.
    """
    lm = policy.causal_lm()
    k = len(paths)
    out = torch.full((k, k), -torch.inf, dtype=torch.float64)
    memo: dict[tuple[int, ...], torch.Tensor] = {}

    def next_token_probs(tokens: list[int]) -> torch.Tensor:
        if tuple(tokens) not in memo:
            with torch.no_grad():
                logits = lm(input_ids=torch.tensor([tokens])).logits[0, -1]
            memo[tuple(tokens)] = logits.double().softmax(-1)
        return memo[tuple(tokens)]

    for step in range(k):
        context = prompt + [t for c in permutation[:step] for t in paths[c]]
        remaining = [paths[c] for c in permutation[step:]]
        for c in permutation[step:]:
            logp = 0.0
            for d in range(len(paths[c])):
                prefix = paths[c][:d]
                live = sorted({p[d] for p in remaining if p[:d] == prefix})
                if len(live) == 1:
                    continue  # a single live child: factor exactly 1
                probs = next_token_probs(context + prefix)
                logp += float(torch.log(probs[paths[c][d]] / probs[live].sum()))
            out[step, c] = logp
    return out


def test_step_probabilities_match_a_slow_full_forward_reference(policy, batch) -> None:
    torch.manual_seed(2)
    rollout = policy.sample(batch.select([0, 1]), group_size=1)
    prompt = policy.prompt_ids(batch)[0]  # task 0 is left-padded in its micro-batch
    paths = policy.identifier_paths(6)[1]
    expected = reference_step_logprobs(policy, prompt, paths, rollout.permutations[0, 0].tolist())
    got = rollout.step_logprobs[0, 0].double()
    assert torch.equal(got > -torch.inf, expected > -torch.inf)
    finite = expected > -torch.inf
    # Unlikely candidates have log-probabilities around -25 here: a float32 model differs from the
    # float64 reference by ~1 ulp-scaled error there, so allow 1e-6 relative on top of 1e-5.
    torch.testing.assert_close(got[finite], expected[finite], atol=1e-5, rtol=1e-6)


def test_trie_mode_with_single_tokens_equals_the_fast_path(tiny_llm_path, batch) -> None:
    fast, trie = build(tiny_llm_path), build(tiny_llm_path, identifier_mode="trie")
    assert trie.uses_trie(6) and trie.identifier_trie(6).single_token
    torch.manual_seed(3)
    expected = fast.sample(batch, group_size=3)
    torch.manual_seed(3)
    rollout = trie.sample(batch, group_size=3)
    assert torch.equal(rollout.permutations, expected.permutations)
    finite = expected.step_logprobs > -torch.inf
    torch.testing.assert_close(
        rollout.step_logprobs[finite], expected.step_logprobs[finite], atol=1e-5, rtol=1e-6
    )
    logprobs, _ = trie.log_probs(batch, expected.permutations)
    torch.testing.assert_close(logprobs.detach(), expected.logprobs, atol=1e-5, rtol=0)


def test_greedy_rank_is_deterministic_and_matches_argmax(policy, batch) -> None:
    first = policy.rank(batch)
    torch.manual_seed(123)
    assert torch.equal(policy.rank(batch), first)
    assert torch.equal(first.sort(-1).values, torch.arange(6).expand(3, 6))
    _, steps = policy.log_probs(batch, first.unsqueeze(1))
    assert torch.equal(steps[:, 0].argmax(-1), first)


def test_gradient_step_changes_the_policy_not_the_reference(policy, batch) -> None:
    torch.manual_seed(4)
    rollout = policy.sample(batch, group_size=2)
    before, _ = policy.log_probs(batch, rollout.permutations)
    ref, _ = policy.reference_log_probs(batch, rollout.permutations)
    torch.testing.assert_close(ref, before.detach(), atol=1e-6, rtol=0)
    params = policy.trainable_parameters()
    optimizer = torch.optim.SGD(params, lr=1e-3)
    (-before[:, 0].sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    optimizer.step()
    after, _ = policy.log_probs(batch, rollout.permutations)
    assert after[:, 0].sum() > before[:, 0].sum() + 1e-4
    ref_after, _ = policy.reference_log_probs(batch, rollout.permutations)
    torch.testing.assert_close(ref_after, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("num_candidates", [1, 2, 3])
def test_few_candidates(policy, num_candidates: int) -> None:
    small = make_batch(batch_size=2, num_candidates=num_candidates, seed=4)
    rollout = policy.sample(small, group_size=2)
    assert rollout.permutations.shape == (2, 2, num_candidates)
    logprobs, _ = policy.log_probs(small, rollout.permutations)
    torch.testing.assert_close(logprobs.detach(), rollout.logprobs, atol=1e-5, rtol=0)
