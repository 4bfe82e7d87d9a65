"""Constrained decoding with a shared, left-padded prompt cache, and its single-token fast path.

The helpers call the model's *decoder* (``get_decoder()``, which includes the final norm) and
project hidden states only onto the identifier rows of the output head
(:func:`identifier_scores`), so the ``T x vocab`` logits tensor is never built. The KV-cache keyword
is ``cache`` in recent transformers and ``past_key_values`` in older 5.x releases;
:func:`cache_keyword` picks the one the decoder accepts. :func:`token_sample_step` and
:func:`token_teacher_forced_scores` are the single-token identifier path of the LLM policy (the
multi-token one is :mod:`flexrec.policies.trie_decoding`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from flexrec.policies.base import masked_log_softmax
from flexrec.policies.trie import additive_mask

__all__ = [
    "PrefixState",
    "cache_keyword",
    "decode_tokens",
    "decode_tree",
    "drop_last",
    "identifier_scores",
    "left_pad",
    "new_cache",
    "prefill",
    "token_sample_step",
    "token_teacher_forced_scores",
]


def cache_keyword(decoder: nn.Module) -> str:
    """``"cache"`` (transformers >= 5.2x) or ``"past_key_values"`` (older 5.x)."""
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(config: Any) -> Any:
    """An empty ``DynamicCache`` for ``config``."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=config)
    except TypeError:  # pragma: no cover - releases without the config argument
        return DynamicCache()


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-pad token sequences.

    Args:
        sequences: ``B`` lists of token ids.
        pad_id: padding token id.

    Returns:
        ``(input_ids [B, T], attention_mask [B, T])`` long tensors.
    """
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, length - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[i, length - len(seq) :] = 1
    return ids, mask


class PrefixState:
    """A prefilled prompt batch: its cache, attention mask and next position per row.

    Attributes:
        cache: the KV cache (``DynamicCache``), ``N`` rows.
        mask: ``[N, T]`` attention mask of everything in the cache.
        next_position: ``[N]`` position id of the next token.
        last_hidden: ``[N, H]`` final hidden state at the last prompt token.
    """

    def __init__(
        self, cache: Any, mask: Tensor, next_position: Tensor, last_hidden: Tensor
    ) -> None:
        self.cache = cache
        self.mask = mask
        self.next_position = next_position
        self.last_hidden = last_hidden

    def repeat(self, times: int) -> PrefixState:
        """Repeat every row ``times`` times (interleaved), sharing the prefill across rollouts.

        The cache is repeated in place (differentiably, so gradients flow into the prefix).
        """
        self.cache.batch_repeat_interleave(times)
        return PrefixState(
            self.cache,
            self.mask.repeat_interleave(times, 0),
            self.next_position.repeat_interleave(times, 0),
            self.last_hidden.repeat_interleave(times, 0),
        )


def prefill(decoder: nn.Module, config: Any, input_ids: Tensor, mask: Tensor) -> PrefixState:
    """Run the prompt once and keep its cache.

    Args:
        decoder: the model's decoder (``get_decoder()``).
        config: the model config.
        input_ids: ``[N, T]`` left-padded prompts.
        mask: ``[N, T]`` attention mask.

    Returns:
        The :class:`PrefixState` (``last_hidden [N, H]``).
    """
    cache = new_cache(config)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    out = decoder(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        **{cache_keyword(decoder): cache},
    )
    return PrefixState(cache, mask, mask.sum(-1), out.last_hidden_state[:, -1])


def decode_tokens(decoder: nn.Module, state: PrefixState, tokens: Tensor) -> Tensor:
    """Append ``S`` tokens to every row of a prefilled state and return their hidden states.

    The state is updated in place (cache, mask, next position).

    Args:
        decoder: the model's decoder.
        state: a :class:`PrefixState` with ``N`` rows.
        tokens: ``[N, S]`` token ids.

    Returns:
        ``[N, S, H]`` final hidden states.
    """
    n, s = tokens.shape
    state.mask = torch.cat([state.mask, state.mask.new_ones(n, s)], -1)
    positions = state.next_position.unsqueeze(-1) + torch.arange(s, device=tokens.device)
    state.next_position = state.next_position + s
    out = decoder(
        input_ids=tokens,
        attention_mask=state.mask,
        position_ids=positions,
        use_cache=True,
        **{cache_keyword(decoder): state.cache},
    )
    return out.last_hidden_state


def decode_tree(
    decoder: nn.Module,
    state: PrefixState,
    tokens: Tensor,
    sees: Tensor,
    positions: Tensor,
    keep: Tensor,
) -> Tensor:
    """Append ``S`` tokens with a custom attention pattern among them (e.g. a token trie).

    Every new token sees everything the state's mask allows, plus the new tokens that ``sees``
    allows; it is run with an explicit 4D additive mask (eager and SDPA attention; not flash
    attention). The cache, and ``state.mask`` (with ``keep`` as the new columns), grow by ``S``;
    ``state.next_position`` and ``state.last_hidden`` are left to the caller.

    Args:
        decoder: the model's decoder.
        state: a :class:`PrefixState` with ``N`` rows.
        tokens: ``[N, S]`` token ids.
        sees: ``[N, S, S]`` bool; ``sees[n, i, j]`` is True when new token ``i`` attends new
            token ``j`` (include ``j == i`` for every token).
        positions: ``[N, S]`` position ids.
        keep: ``[N, S]`` bool, whether later tokens may attend each new token.

    Returns:
        ``[N, S, H]`` final hidden states.
    """
    n, s = tokens.shape
    past = state.mask.bool().unsqueeze(1).expand(n, s, state.mask.shape[-1])
    mask = additive_mask(torch.cat([past, sees], -1), state.last_hidden.dtype)
    out = decoder(
        input_ids=tokens,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        **{cache_keyword(decoder): state.cache},
    )
    state.mask = torch.cat([state.mask, keep.to(state.mask.dtype)], -1)
    return out.last_hidden_state


def drop_last(state: PrefixState, count: int) -> None:
    """Remove the last ``count`` tokens from the state's cache and mask (in place)."""
    if count > 0:
        state.cache.crop(-count)
        state.mask = state.mask[:, :-count]


def identifier_scores(lm: nn.Module, hidden: Tensor, token_ids: Tensor) -> Tensor:
    """Identifier logits ``[..., K]`` from hidden states ``[..., H]`` (identifier rows only).

    Args:
        lm: the causal LM (its output embeddings are the head).
        hidden: ``[..., H]`` final hidden states.
        token_ids: ``[K]`` the identifiers' token ids.

    Returns:
        ``[..., K]`` logits of the identifier tokens, in at least float32: the projection runs
        outside autocast (``precision=bf16-mixed`` / ``16-mixed``) and with bf16/fp16 weights in
        float32, so the log-probabilities of the ratio, KL and entropy are not rounded to 8 bits
        of mantissa (it is ``K`` rows of the head: a negligible cost).
    """
    head = lm.get_output_embeddings()
    weight = head.weight[token_ids]
    dtype = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
    with torch.autocast(hidden.device.type, enabled=False):
        scores = hidden.to(dtype) @ weight.to(dtype).T
        if getattr(head, "bias", None) is not None:
            scores = scores + head.bias[token_ids].to(dtype)
    return scores


def token_sample_step(
    lm: nn.Module,
    decoder: nn.Module,
    state: PrefixState,
    token_ids: Tensor,
    first: Tensor,
    step: int,
    previous: Tensor | None,
    placed: Tensor,
) -> Tensor:
    """One single-token sampling step: append the last pick, score the identifiers.

    Bind the first five arguments to get a :data:`~flexrec.policies.base.StepLogProbs` callback.

    Args:
        lm: the causal LM.
        decoder: its decoder.
        state: the prefilled state with ``N`` rows (updated in place).
        token_ids: ``[K]`` the identifiers' token ids.
        first: ``[N, K]`` identifier scores at the end of the prompt.
        step: the step ``k``.
        previous: ``[N]`` candidates placed at step ``k - 1``, or None at step 0.
        placed: ``[N, K]`` bool, candidates already placed.

    Returns:
        ``[N, K]`` log-probabilities of the step (``-inf`` for placed candidates).
    """
    scores = first
    if 0 < step < placed.shape[-1] - 1:  # the last step is forced: its scores do not matter
        hidden = decode_tokens(decoder, state, token_ids[previous].unsqueeze(-1))
        scores = identifier_scores(lm, hidden[:, -1], token_ids)
    return masked_log_softmax(scores, placed)


def token_teacher_forced_scores(
    lm: nn.Module, decoder: nn.Module, state: PrefixState, token_ids: Tensor, permutations: Tensor
) -> Tensor:
    """Single-token identifier scores of every step of given rankings, in one forward pass.

    The ``G`` completions of a prompt run against its repeated cache (gradients flow into the
    shared prefix).

    Args:
        lm: the causal LM.
        decoder: its decoder.
        state: the prefilled state, one row per prompt (``n`` rows; repeated here).
        token_ids: ``[K]`` the identifiers' token ids.
        permutations: ``[n, G, K]`` candidate indices in placed order.

    Returns:
        ``[n, G, K, K]`` unnormalised scores (0 at the last, forced step); apply
        :func:`~flexrec.policies.base.masked_log_softmax` with the placed-before mask.
    """
    n, g, k = permutations.shape
    first = identifier_scores(lm, state.last_hidden, token_ids)
    scores = [first.unsqueeze(1).expand(n, g, k).reshape(n * g, 1, k)]
    if k > 2:
        state = state.repeat(g)
        tokens = token_ids[permutations[:, :, : k - 2].reshape(n * g, k - 2)]
        scores.append(identifier_scores(lm, decode_tokens(decoder, state, tokens), token_ids))
    if k > 1:
        # The last step has one candidate left: its probability is 1 whatever the score.
        scores.append(first.new_zeros(n * g, 1, k))
    return torch.cat(scores, 1).reshape(n, g, k, k)
