"""Multi-token candidate identifiers: constrained decoding through a token trie.

When the identifiers are not single tokens, the ``K`` identifier token paths (distinct and
prefix-free, see :func:`~flexrec.policies.prompt.resolve_identifier_paths`) form a trie whose leaves
are the candidates. *convention*: at ranking step ``k`` the probability of a remaining candidate
``c`` is the product, along ``c``'s token path, of the model's next-token probabilities
renormalised at every trie node over the children that still lead to at least one remaining
candidate (constrained decoding over the trie). This is an exact distribution over the remaining
candidates (it sums to 1); a node with a single live child contributes a factor 1, so the last
remaining candidate has probability exactly 1. With single-token identifiers the trie is a root
with ``K`` leaves and the rule reduces to the single-token softmax over remaining identifiers.

The distribution needs the model's next-token scores at every *internal* node of the trie (the
root and the proper prefixes of the paths) in the context of the prompt and the identifiers
already placed. They are all computed by one forward pass of the trie's non-root internal nodes
(each node one token) against the shared KV cache, with a tree attention mask: a node sees the
context and its own ancestors, and its position id is the context length plus its depth. The
training pass packs the placed identifiers and one copy of those nodes per step into a single
sequence per rollout, so it needs one forward pass per micro-batch, like the single-token path.
Only the rows of the output head for trie edges are computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flexrec.policies.base import at_least_float32

__all__ = ["IdentifierTrie", "additive_mask"]


class IdentifierTrie:
    """The token trie of ``K`` distinct, prefix-free identifier token paths.

    Nodes are numbered in insertion order, 0 being the root (the empty prefix). An *edge* is a
    non-root node (the token that leads to it from its parent); *internal* nodes are the root
    followed by the non-root nodes that have children (the proper prefixes of the paths).

    Attributes:
        num_candidates: ``K``.
        edge_token: ``[V]`` token id of every edge.
        edge_parent: ``[V]`` index, among the internal nodes, of every edge's parent.
        on_path: ``[K, V]`` bool; ``on_path[c, v]`` is True when edge ``v`` is on ``c``'s path
            (equivalently, when ``v`` leads to candidate ``c``).
        inner_token: ``[M]`` token id of the non-root internal nodes (``M`` may be 0).
        inner_depth: ``[M]`` their depth (1 for children of the root).
        inner_sees: ``[M, M]`` bool; ``inner_sees[a, b]`` is True when ``b`` is ``a`` or one of
            its ancestors.
        path_tokens: ``[K, D]`` the paths, right-padded (``D`` = the longest path).
        path_length: ``[K]`` path lengths.

    Examples:
        >>> trie = IdentifierTrie([[5, 1], [5, 2], [7]])
        >>> trie.edge_token.tolist(), trie.edge_parent.tolist(), trie.inner_token.tolist()
        ([5, 1, 2, 7], [0, 1, 1, 0], [5])
        >>> scores = torch.zeros(4)  # uniform next-token scores at every node
        >>> [round(p, 4) for p in trie.log_probs(scores, torch.zeros(3, dtype=torch.bool)).exp().tolist()]
        [0.25, 0.25, 0.5]
    """

    def __init__(self, paths: Sequence[Sequence[int]]) -> None:
        paths = [list(p) for p in paths]
        if not paths or any(not p for p in paths):
            raise ValueError("every identifier needs a non-empty token path")
        for i, p in enumerate(paths):
            for j, q in enumerate(paths):
                if i != j and q[: len(p)] == p:
                    raise ValueError(f"identifier paths must be distinct and prefix-free: {p}, {q}")
        children: dict[tuple[int, ...], int] = {(): 0}
        parent, token, depth = [-1], [-1], [0]
        node_of_path: list[list[int]] = []
        for path in paths:
            nodes = []
            for d in range(1, len(path) + 1):
                prefix = tuple(path[:d])
                if prefix not in children:
                    children[prefix] = len(parent)
                    parent.append(children[prefix[:-1]])
                    token.append(path[d - 1])
                    depth.append(d)
                nodes.append(children[prefix])
            node_of_path.append(nodes)
        has_child = [False] * len(parent)
        for p in parent[1:]:
            has_child[p] = True
        inner_nodes = [v for v in range(1, len(parent)) if has_child[v]]
        inner_index = {0: 0, **{v: i + 1 for i, v in enumerate(inner_nodes)}}
        edges = list(range(1, len(parent)))
        self.num_candidates = len(paths)
        self.edge_token = torch.tensor([token[v] for v in edges], dtype=torch.long)
        self.edge_parent = torch.tensor([inner_index[parent[v]] for v in edges], dtype=torch.long)
        self.on_path = torch.zeros(len(paths), len(edges), dtype=torch.bool)
        for c, nodes in enumerate(node_of_path):
            self.on_path[c, [v - 1 for v in nodes]] = True
        self.inner_token = torch.tensor([token[v] for v in inner_nodes], dtype=torch.long)
        self.inner_depth = torch.tensor([depth[v] for v in inner_nodes], dtype=torch.long)
        self.inner_sees = torch.zeros(len(inner_nodes), len(inner_nodes), dtype=torch.bool)
        for a, v in enumerate(inner_nodes):
            u = v
            while u != 0:
                self.inner_sees[a, inner_index[u] - 1] = True
                u = parent[u]
        width = max(len(p) for p in paths)
        self.path_tokens = torch.tensor([p + [0] * (width - len(p)) for p in paths])
        self.path_length = torch.tensor([len(p) for p in paths], dtype=torch.long)

    @property
    def num_inner(self) -> int:
        """``M``, the number of non-root internal nodes."""
        return int(self.inner_token.numel())

    @property
    def single_token(self) -> bool:
        """True when every path is a single token (the trie is a root with ``K`` leaves)."""
        return self.num_inner == 0

    def to(self, device: torch.device | str) -> IdentifierTrie:
        """Move the index tensors to ``device`` (in place); returns ``self``."""
        for name in (
            "edge_token",
            "edge_parent",
            "on_path",
            "inner_token",
            "inner_depth",
            "inner_sees",
            "path_tokens",
            "path_length",
        ):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def log_probs(self, edge_scores: Tensor, placed: Tensor) -> Tensor:
        """Per-candidate log-probabilities of one ranking step (the trie *convention*).

        Args:
            edge_scores: ``[..., V]`` next-token scores (logits) of every edge's token at its
                parent node.
            placed: ``[..., K]`` bool, True for candidates already placed.

        Returns:
            ``[..., K]`` log-probabilities summing (in probability) to 1 over the remaining
            candidates; ``-inf`` for placed ones.
        """
        edge_scores = at_least_float32(edge_scores)
        alive = ((~placed).float() @ self.on_path.float()) > 0  # [..., V]
        num_inner = self.num_inner + 1
        member = alive.unsqueeze(-1) & (
            self.edge_parent.unsqueeze(-1) == torch.arange(num_inner, device=alive.device)
        )  # [..., V, U]: edge v is a live child of internal node u
        grouped = edge_scores.unsqueeze(-1).masked_fill(~member, -torch.inf)
        # Nodes without live children get a finite dummy normaliser (never used), so that no NaN
        # reaches the gradients.
        grouped = torch.where(member.any(-2, keepdim=True), grouped, 0.0)
        log_norm = torch.logsumexp(grouped, dim=-2)  # [..., U]
        edge_logp = edge_scores - log_norm[..., self.edge_parent]
        per_candidate = torch.where(self.on_path, edge_logp.unsqueeze(-2), 0.0).sum(-1)
        return per_candidate.masked_fill(placed, -torch.inf)


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A ``[N, 1, S, T]`` additive attention mask (0 where seen, the dtype's minimum elsewhere).

    Args:
        mask: ``[N, S, T]`` bool, True where query ``s`` may attend key ``t``.
        dtype: the model's floating dtype.

    Returns:
        The 4D mask that transformers' eager and SDPA attention take as given.
    """
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, torch.finfo(dtype).min).unsqueeze(1)
