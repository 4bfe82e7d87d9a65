"""Reasoning-before-ranking mode of the LLM policy (off by default).

Each rollout first writes free text (sampled, up to ``reasoning_tokens`` tokens or the end of the
turn) after ``reasoning_prefix``; the ranking is then decoded with constraints after
``"\\n" + answer_prefix``. Rollouts of a task no longer share the ranking prefix, so each has its own
prompt. The generated token ids are kept in ``batch.meta[b]["reasoning"]`` (``G`` lists per task)
so that :meth:`~flexrec.policies.llm.LLMPolicy.log_probs` can rebuild the same contexts.
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
    """Generate ``G`` reasonings per task and store them in ``batch.meta[b]["reasoning"]``.

    Args:
        policy: an ``LLMPolicy`` with ``reasoning_tokens > 0``.
        batch: ``B`` tasks (``batch.meta`` is filled in, one new dict per task).
        group_size: ``G``.
        temperature: ``0`` for one greedy reasoning repeated ``G`` times, else the sampling
            temperature.

    Returns:
        ``B`` lists of ``G`` token-id lists (end-of-turn and padding removed).
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
    grouped = [texts[b * group_size : (b + 1) * group_size] for b in range(batch.batch_size)]
    metas = batch.meta or [{} for _ in range(batch.batch_size)]
    batch.meta = [{**m, "reasoning": r} for m, r in zip(metas, grouped, strict=True)]
    return grouped


def reasoning_prompts(policy: Any, batch: RankingBatch, group_size: int) -> list[list[int]]:
    """The ``B x G`` ranking prompts: prompt + reasoning + ``"\\n" + answer_prefix``.

    Raises:
        ValueError: when ``batch.meta`` lacks the ``G`` reasonings written by ``sample``.
    """
    base = policy.prompt_ids(batch, answer_prefix=policy.reasoning_prefix)
    tail = policy.tokenizer.encode("\n" + policy.answer_prefix, add_special_tokens=False)
    prompts = []
    for b, prompt in enumerate(base):
        meta = batch.meta[b] if len(batch.meta) > b else {}
        reasonings = meta.get("reasoning")
        if reasonings is None or len(reasonings) != group_size:
            raise ValueError(
                f"task {b}: reasoning mode needs batch.meta[{b}]['reasoning'] with G={group_size} "
                "token lists, written by LLMPolicy.sample on the same batch"
            )
        prompts += [prompt + list(r) + tail for r in reasonings]
    return prompts
