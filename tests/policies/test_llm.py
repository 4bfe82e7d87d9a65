"""LLM-policy specifics on the tiny model: prompts, identifiers, shared prefill, registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from flexrec.policies.base import Policy
from flexrec.policies.prompt import (
    CANDIDATE_TEMPLATES,
    build_messages,
    candidate_template,
    encode_prompts,
    resolve_identifiers,
)
from flexrec.testing.batches import make_batch


@pytest.fixture
def lora_policy(make_policy: Callable[[str], Policy]) -> Policy:
    return make_policy("llm_lora")


def test_identifiers_are_single_tokens_and_invalid_ones_are_skipped(lora_policy) -> None:
    tok = lora_policy.tokenizer
    idents, ids = resolve_identifiers(tok, 3, [" A", " not-a-single-token", " B", " A", " C"])
    assert idents == [" A", " B", " C"]
    assert ids == [tok.encode(i, add_special_tokens=False)[0] for i in idents]
    assert all(len(tok.encode(i, add_special_tokens=False)) == 1 for i in idents)
    default, _ = resolve_identifiers(tok, 20)
    assert default == [" " + c for c in "ABCDEFGHIJKLMNOPQRST"]
    with pytest.raises(ValueError, match="K=3"):
        resolve_identifiers(tok, 3, [" A", " xyzzyq-long"])


def test_prompt_has_template_instruction_history_and_labelled_candidates(lora_policy) -> None:
    batch = make_batch(batch_size=1, num_candidates=4, history_lengths=[2], seed=0)
    ids = lora_policy.prompt_ids(batch)[0]
    text = lora_policy.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>assistant\nRanking:")
    assert batch.instruction[0] in text
    for line in batch.history_text[0]:
        assert f"- {line}" in text
    for label, cand in zip("ABCD", batch.candidate_text[0], strict=True):
        assert f"[{label}] {cand}" in text


def test_candidate_templates_write_the_lines_they_name() -> None:
    labels, idents, texts = ["A", "B"], [" A", " B"], ["Heat | avg 4.1", "Up | avg 3.0"]

    def lines(template: str) -> list[str]:
        user = build_messages("Rank.", [], texts, labels, None, idents, template)[0]["content"]
        return user.split("Candidates:\n")[1].split("\n\n")[0].splitlines()

    assert lines(candidate_template("bracket")) == ["[A] Heat | avg 4.1", "[B] Up | avg 3.0"]
    assert lines(candidate_template("answer_token")) == ["- A: Heat | avg 4.1", "- B: Up | avg 3.0"]
    assert lines(candidate_template("label_last")) == ["Heat | avg 4.1 -> A", "Up | avg 3.0 -> B"]
    assert lines(candidate_template("{text} ({label})")) == [
        "Heat | avg 4.1 (A)",
        "Up | avg 3.0 (B)",
    ]
    assert set(CANDIDATE_TEMPLATES) == {"bracket", "answer_token", "label_last"}
    for bad in ["{text}", "{label}", "{text} {label} {rating}", "no fields"]:
        with pytest.raises(ValueError, match="candidate_template must be one of"):
            candidate_template(bad)


@pytest.mark.parametrize("template", ["answer_token", "label_last"])
def test_answer_token_templates_put_the_answer_token_in_the_prompt(
    tiny_llm_path: Path, template: str
) -> None:
    """Under these templates each candidate's line holds the very token its answer is written
    with (the default ``[A]`` does not: ``"A"`` and ``" A"`` are different tokens)."""
    from flexrec.policies.llm import LLMPolicy

    policy = LLMPolicy(model=str(tiny_llm_path), lora={"r": 4}, candidate_template=template)
    batch = make_batch(batch_size=1, num_candidates=4, history_lengths=[2], seed=0)
    prompt = policy.prompt_ids(batch)[0]
    _, answer_ids = policy.candidate_tokens(4)
    assert all(int(t) in prompt for t in answer_ids)
    with pytest.raises(ValueError, match="candidate_template"):
        LLMPolicy(model=str(tiny_llm_path), lora={"r": 4}, candidate_template="{label}")


def test_max_prompt_tokens_drops_oldest_history_first(lora_policy) -> None:
    batch = make_batch(batch_size=1, num_candidates=4, history_lengths=[6], seed=0)
    idents = [" A", " B", " C", " D"]
    full = encode_prompts(lora_policy.tokenizer, batch, idents)[0]
    cut = encode_prompts(lora_policy.tokenizer, batch, idents, max_prompt_tokens=len(full) - 1)[0]
    text = lora_policy.tokenizer.decode(cut)
    assert len(cut) < len(full)
    assert batch.history_text[0][0] not in text
    assert batch.history_text[0][-1] in text
    with pytest.raises(ValueError, match="max_prompt_tokens=5"):
        encode_prompts(lora_policy.tokenizer, batch, idents, max_prompt_tokens=5)


def test_prompt_is_prefilled_once_per_micro_batch_and_lm_head_never_runs(lora_policy) -> None:
    batch = make_batch(batch_size=3, num_candidates=6, history_lengths=[1, 6, 3], seed=1)
    lm = lora_policy.causal_lm()
    calls: list[tuple[int, int]] = []
    head_calls: list[int] = []
    hooks = [
        lm.get_decoder().register_forward_hook(
            lambda m, a, kw, out: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True
        ),
        lm.get_output_embeddings().register_forward_hook(lambda *_: head_calls.append(1)),
    ]
    try:
        rollout = lora_policy.sample(batch, group_size=8)
        prefills = [c for c in calls if c[1] > 1]
        # Two micro-batches of tasks (2 + 1), each prefilled once for its 8 rollouts; then one
        # single-token step per decoding step (K - 2 steps need the model).
        assert [c[0] for c in prefills] == [2, 1]
        assert sorted({c for c in calls if c[1] == 1}) == [(8, 1), (16, 1)]
        assert len(calls) == 2 + 2 * 4
        calls.clear()
        lora_policy.log_probs(batch, rollout.permutations)
        # Training pass: one prompt pass per micro-batch + one pass over the G completions.
        assert calls == [(2, calls[0][1]), (16, 4), (1, calls[2][1]), (8, 4)]
    finally:
        for hook in hooks:
            hook.remove()
    assert head_calls == []


def test_full_finetune_reference_is_a_frozen_copy(make_policy) -> None:
    policy = make_policy("llm_full")
    assert policy.reference_model is not None
    trainable = {id(p) for p in policy.trainable_parameters()}
    assert not any(id(p) in trainable for p in policy.reference_model.parameters())
    policy.train()
    assert not policy.reference_model.training


def test_lora_only_trains_adapters(lora_policy) -> None:
    names = [n for n, p in lora_policy.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_registered_through_the_plugin_hook(tiny_llm_path: Path) -> None:
    from flexrec.registry import registries

    registries.invalidate()
    assert {"native", "llm"} <= set(registries.policy.names())
    native = registries.policy.build({"name": "native", "args": {"dim": 16}}, num_items=50)
    assert native.net.item_embedding.num_embeddings == 50
    llm = registries.policy.build(
        {"name": "llm", "args": {"model": str(tiny_llm_path), "lora": {"r": 2}}}, num_items=50
    )
    batch = make_batch(batch_size=1, num_candidates=3, seed=0)
    assert torch.equal(llm.rank(batch).sort(-1).values, torch.arange(3).view(1, 3))
    registries.invalidate()


def test_reasoning_mode_conditions_the_ranking_on_generated_text(make_policy) -> None:
    policy = make_policy("llm_reasoning")
    batch = make_batch(batch_size=2, num_candidates=4, seed=2)
    torch.manual_seed(0)
    rollout = policy.sample(batch, group_size=3)
    reasonings = rollout.reasoning
    assert [len(r) for r in reasonings] == [3, 3]
    assert all(0 < len(r) <= 6 for group in reasonings for r in group)
    assert all("reasoning" not in m for m in batch.meta)  # the batch is not modified
    prompts = policy._ranking_prompts(batch, 3, reasonings)[0]
    text = policy.tokenizer.decode(prompts[0])
    assert "<|im_start|>assistant\nReasoning:" in text and text.endswith("\nRanking:")
    logprobs, _ = policy.log_probs(batch, rollout.permutations, rollout=rollout)
    torch.testing.assert_close(logprobs.detach(), rollout.logprobs, atol=1e-5, rtol=0)
    alone, _ = policy.log_probs(
        batch.select([1]), rollout.permutations[1:], rollout=rollout.select([1])
    )
    torch.testing.assert_close(alone.detach(), rollout.logprobs[1:], atol=1e-5, rtol=0)
    fresh = make_batch(batch_size=2, num_candidates=4, seed=2)
    with pytest.raises(ValueError, match="reasoning"):
        policy.log_probs(fresh, rollout.permutations)
    with pytest.raises(ValueError, match="reasoning"):
        policy.log_probs(batch.select([0]), rollout.permutations[:1], rollout=rollout)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"micro_batch_size": 0}, "micro_batch_size must be >= 1"),
        ({"reasoning_tokens": -1}, "reasoning_tokens must be >= 0"),
        ({"max_prompt_tokens": 0}, "max_prompt_tokens must be >= 1"),
        ({"dtype": "float33"}, "unknown dtype 'float33'"),
    ],
)
def test_bad_arguments_raise_value_errors(tiny_llm_path: Path, kwargs: dict, message: str) -> None:
    from flexrec.policies.llm import LLMPolicy

    with pytest.raises(ValueError, match=message):
        LLMPolicy(model=str(tiny_llm_path), **kwargs)
