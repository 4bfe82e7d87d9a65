"""The model passes of trie-constrained decoding (multi-token identifiers of the LLM policy).

:mod:`flexrec.policies.trie` defines the token trie and its *convention* (the distribution of one
ranking step from the next-token scores at the trie's internal nodes); this module computes those
scores with the causal LM against a prefilled, shared prompt cache (:mod:`flexrec.policies.decoding`):

- sampling (:func:`sample_step`, a :data:`~flexrec.policies.base.StepLogProbs` callback of
  :func:`~flexrec.policies.base.decode_permutations`): one forward pass per step appends the
  identifier just placed and evaluates every internal node with a tree attention mask. Candidates
  are drawn from the exact per-step trie distribution (equivalent to drawing token by token
  through the trie at temperature 1); *convention*: the temperature, and greedy decoding, apply to
  that candidate-level distribution;
- training (:func:`teacher_forced_steps`): one packed forward pass per micro-batch gives the same
  numbers for all ``K`` steps at once.

Only the rows of the output head for trie edges are computed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flexrec.policies import decoding as D
from flexrec.policies.base import placed_before
from flexrec.policies.trie import IdentifierTrie

__all__ = ["edge_scores", "sample_step", "teacher_forced_steps", "trie_step"]


def edge_scores(lm: nn.Module, hidden: Tensor, trie: IdentifierTrie) -> Tensor:
    """Edge logits ``[..., V]`` from internal-node hidden states ``[..., U, H]``.

    Args:
        lm: the causal LM (its output embeddings are the head).
        hidden: ``[..., U, H]`` final hidden states of the trie's internal nodes (the root first).
        trie: the identifier trie (on the model's device).

    Returns:
        ``[..., V]`` the logit of every edge's token at its parent node, in at least float32
        (as :func:`~flexrec.policies.decoding.identifier_scores`).
    """
    head = lm.get_output_embeddings()
    weight = head.weight[trie.edge_token]
    dtype = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
    parents = hidden.index_select(-2, trie.edge_parent).to(dtype)  # [..., V, H]
    with torch.autocast(hidden.device.type, enabled=False):
        scores = (parents * weight.to(dtype)).sum(-1)
        if getattr(head, "bias", None) is not None:
            scores = scores + head.bias[trie.edge_token].to(dtype)
    return scores


def trie_step(
    decoder: nn.Module, state: D.PrefixState, trie: IdentifierTrie, previous: Tensor | None
) -> Tensor:
    """Append the identifiers just placed, then evaluate the trie's internal nodes.

    One forward pass: the ``[N]`` candidates ``previous`` (their paths right-padded, the padding
    masked out; None at the first step) and the ``M`` non-root internal nodes of the trie,
    which see the context and their ancestors. The trie nodes are then dropped from the cache.

    Args:
        decoder: the model's decoder.
        state: the prefilled state with ``N`` rows (updated in place).
        trie: the identifier trie.
        previous: ``[N]`` candidates placed at the previous step, or None.

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


def _forced_last(placed: Tensor) -> Tensor:
    """Log-probabilities ``[..., K]`` of a step with one candidate left: exactly 0 for it."""
    return torch.zeros(placed.shape, device=placed.device).masked_fill(placed, -torch.inf)


def sample_step(
    lm: nn.Module,
    decoder: nn.Module,
    state: D.PrefixState,
    trie: IdentifierTrie,
    step: int,
    previous: Tensor | None,
    placed: Tensor,
) -> Tensor:
    """One sampling step (bind the first four arguments to get a ``StepLogProbs`` callback).

    Args:
        lm: the causal LM.
        decoder: its decoder.
        state: the prefilled state with ``N`` rows (updated in place).
        trie: the identifier trie.
        step: the step ``k``.
        previous: ``[N]`` candidates placed at step ``k - 1``, or None at step 0.
        placed: ``[N, K]`` bool, candidates already placed.

    Returns:
        ``[N, K]`` log-probabilities of the step (``-inf`` for placed candidates).
    """
    if step == placed.shape[-1] - 1:  # one candidate left: probability exactly 1
        return _forced_last(placed)
    hidden = trie_step(decoder, state, trie, previous)
    return trie.log_probs(edge_scores(lm, hidden, trie), placed)


def teacher_forced_steps(
    lm: nn.Module,
    decoder: nn.Module,
    state: D.PrefixState,
    trie: IdentifierTrie,
    permutations: Tensor,
) -> Tensor:
    """Per-step log-probabilities of given rankings in one packed forward pass.

    Each rollout's sequence is the paths of ``a_1 .. a_{K-2}`` (right-padded per identifier,
    padding masked out) followed by ``K - 1`` copies of the trie's internal nodes; copy ``k``
    sees the prompt, the paths of ``a_<k`` and its own ancestors, with the positions it has
    when sampling, so the numbers are those of :func:`sample_step`.

    Args:
        lm: the causal LM.
        decoder: its decoder.
        state: the prefilled state with one row per rollout, ``N`` (updated in place).
        trie: the identifier trie.
        permutations: ``[N, K]`` candidate indices in placed order.

    Returns:
        ``[N, K, K]`` per-step log-probabilities (``-inf`` for placed candidates).
    """
    n, k = permutations.shape
    device = permutations.device
    width, m = trie.path_tokens.shape[1], trie.num_inner
    copies = max(k - 1, 0)  # the steps that need the model
    context = permutations[:, : max(k - 2, 0)]  # [N, C]
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
        sees = torch.zeros(n, s, s, dtype=torch.bool, device=device)
        causal = torch.ones(lc, lc, dtype=torch.bool, device=device).tril()
        sees[:, :lc, :lc] = causal & valid.unsqueeze(1)
        copy_of = torch.arange(copies, device=device).repeat_interleave(m)
        sees[:, lc:, :lc] = (owner < copy_of.unsqueeze(-1)) & valid.unsqueeze(1)
        eye = torch.eye(copies, dtype=torch.bool, device=device)
        sees[:, lc:, lc:] = torch.kron(eye.int(), trie.inner_sees.int()).bool()
        offset = torch.cat([lengths.new_zeros(n, 1), lengths.cumsum(-1)], -1)
        start = state.next_position.unsqueeze(-1)
        positions = torch.cat(
            [
                start + (valid.long().cumsum(-1) - 1).clamp_min(0),
                (
                    start.unsqueeze(-1) + offset[:, :copies].unsqueeze(-1) + trie.inner_depth - 1
                ).flatten(1),
            ],
            -1,
        )
        tokens = torch.cat([chunk, trie.inner_token.repeat(copies).expand(n, -1)], -1)
        keep = torch.ones_like(tokens, dtype=torch.bool)
        hidden = D.decode_tree(decoder, state, tokens, sees, positions, keep)
        if lc:
            ends = torch.arange(context.shape[1], device=device) * width + lengths - 1
            index = ends.unsqueeze(-1).expand(*ends.shape, hidden.shape[-1])
            roots.append(hidden.gather(1, index))
        if m:
            hidden_inner = hidden[:, lc:].reshape(n, copies, m, hidden.shape[-1])
    step_before = placed_before(permutations)
    parts = []
    if copies:
        root = torch.cat(roots, 1)[:, :copies].unsqueeze(2)  # [N, copies, 1, H]
        nodes = root if hidden_inner is None else torch.cat([root, hidden_inner], 2)
        scores = edge_scores(lm, nodes, trie)
        parts.append(trie.log_probs(scores, step_before[:, :copies]))
    parts.append(_forced_last(step_before[:, k - 1 :]))
    return torch.cat(parts, 1)
