"""Reasoning-before-ranking mode of the LLM policy (off by default).

Each rollout first writes free text (sampled, up to ``reasoning_tokens`` tokens or the end of the
turn) after ``reasoning_prefix``; the ranking is then decoded with constraints after
``"\\n" + answer_prefix``. Rollouts of a task no longer share the ranking prefix, so each has its own
prompt. The generated token ids travel in :attr:`Rollout.reasoning <flexrec.types.Rollout.reasoning>`
(``G`` lists per task) so that :meth:`~flexrec.policies.llm.LLMPolicy.log_probs` can rebuild the
same contexts.
"""

from __future__ import annotations

from typing import Any

import torch

from flexrec.policies import decoding as D
from flexrec.types import RankingBatch

__all__ = ["generate_reasoning", "reasoning_prompts"]


def _stop_ids(policy: Any) -> set[int]:
    eos = policy.causal_lm().generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    ids |= {policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id}
    return {i for i in ids if i is not None}


@torch.no_grad()
def generate_reasoning(
    policy: Any, batch: RankingBatch, group_size: int, temperature: float
) -> list[list[list[int]]]:
    """Generate ``G`` reasonings per task.

    Args:
        policy: an ``LLMPolicy`` with ``reasoning_tokens > 0``.
        batch: ``B`` tasks.
        group_size: ``G``.
        temperature: ``0`` for one greedy reasoning repeated ``G`` times, else the sampling
            temperature.

    Returns:
        ``B`` lists of ``G`` token-id lists (end-of-turn and padding removed), the
        :attr:`~flexrec.types.Rollout.reasoning` of the rollouts.
    """
    lm = policy.causal_lm()
    pad = policy.tokenizer.pad_token_id
    ids, mask = D.left_pad(policy.prompt_ids(batch, answer_prefix=policy.reasoning_prefix), pad)
    greedy = temperature <= 0
    sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature}
    out = lm.generate(
        input_ids=ids.to(lm.device),
        attention_mask=mask.to(lm.device),
        max_new_tokens=policy.reasoning_tokens,
        num_return_sequences=1 if greedy else group_size,
        pad_token_id=pad,
        **sampling,
    )
    stop = _stop_ids(policy)
    texts = []
    for row in out[:, ids.shape[1] :].tolist():
        cut = next((i for i, t in enumerate(row) if t in stop), len(row))
        texts.append(row[:cut])
    if greedy:
        texts = [t for t in texts for _ in range(group_size)]
    return [texts[b * group_size : (b + 1) * group_size] for b in range(batch.batch_size)]


def reasoning_prompts(
    policy: Any,
    batch: RankingBatch,
    group_size: int,
    reasoning: list[list[list[int]]] | None,
) -> list[list[int]]:
    """The ``B x G`` ranking prompts: prompt + reasoning + ``"\\n" + answer_prefix``.

    Args:
        policy: an ``LLMPolicy`` with ``reasoning_tokens > 0``.
        batch: ``B`` tasks.
        group_size: ``G``.
        reasoning: ``B`` lists of ``G`` token-id lists, from :func:`generate_reasoning`.

    Raises:
        ValueError: when ``reasoning`` is missing or does not hold ``G`` reasonings per task.
    """
    if reasoning is None or len(reasoning) != batch.batch_size:
        got = "none" if reasoning is None else f"{len(reasoning)} tasks"
        raise ValueError(
            f"reasoning mode needs the rollouts' reasoning tokens for B={batch.batch_size} tasks "
            f"(got {got}): pass the Rollout returned by LLMPolicy.sample, as in "
            "log_probs(batch, rollout.permutations, rollout=rollout)"
        )
    base = policy.prompt_ids(batch, answer_prefix=policy.reasoning_prefix)
    tail = policy.tokenizer.encode("\n" + policy.answer_prefix, add_special_tokens=False)
    prompts = []
    for b, (prompt, group) in enumerate(zip(base, reasoning, strict=True)):
        if len(group) != group_size:
            raise ValueError(
                f"task {b}: reasoning mode needs G={group_size} reasonings, the rollout has "
                f"{len(group)}"
            )
        prompts += [prompt + list(r) + tail for r in group]
    return prompts
