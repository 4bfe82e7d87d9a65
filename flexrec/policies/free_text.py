"""The free-text baseline mode (Rec-R1 style): generate, parse, repair.

The model writes its answer freely; :func:`parse_and_repair` extracts the candidate identifiers,
reports whether the raw answer was already a valid permutation, and repairs it (first occurrence
kept, unknown or repeated identifiers dropped, missing candidates appended in prompt order). Its raw
valid rate is the number to compare with constrained decoding's 100 %.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flexrec.policies import decoding as D
from flexrec.types import RankingBatch

if TYPE_CHECKING:
    from flexrec.policies.llm import LLMPolicy

__all__ = ["FreeTextResult", "free_text_rankings", "parse_and_repair"]


def parse_and_repair(text: str, labels: Sequence[str]) -> tuple[list[int], bool]:
    """Parse a free-text ranking into candidate indices and repair it into a permutation.

    Args:
        text: the model's answer.
        labels: the ``K`` identifier labels (e.g. ``"A"``, ``"B"``), in candidate order.

    Returns:
        ``(permutation, valid)``: a permutation of ``range(K)`` and whether the raw answer named
        every candidate exactly once and nothing else.

    Examples:
        >>> parse_and_repair("Ranking: C, A, B", ["A", "B", "C"])
        ([2, 0, 1], True)
        >>> parse_and_repair("B then B again, then D", ["A", "B", "C"])
        ([1, 0, 2], False)
    """
    index = {label: i for i, label in enumerate(labels)}
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    words = re.findall(r"(?<![A-Za-z0-9])([A-Za-z0-9]{1,3})(?![A-Za-z0-9])", text)
    found = [w for w in words if re.fullmatch(alternatives, w)]
    stray = [w for w in words if len(w) == 1 and w.isupper() and w not in index]
    order: list[int] = []
    for label in found:
        if index[label] not in order:
            order.append(index[label])
    valid = len(found) == len(labels) == len(order) and not stray
    order += [i for i in range(len(labels)) if i not in order]
    return order, valid


@dataclass
class FreeTextResult:
    """Free-text answers for ``B`` tasks × ``G`` samples.

    Attributes:
        permutations: ``[B, G, K]`` repaired rankings.
        valid: ``[B, G]`` bool, whether the raw answer was a valid permutation.
        texts: ``B`` lists of ``G`` raw answers.
    """

    permutations: Tensor
    valid: Tensor
    texts: list[list[str]]

    @property
    def valid_rate(self) -> float:
        """Share of raw answers that were valid permutations."""
        return float(self.valid.float().mean())


@torch.no_grad()
def free_text_rankings(
    policy: LLMPolicy,
    batch: RankingBatch,
    group_size: int = 1,
    max_new_tokens: int = 80,
    temperature: float = 0.0,
) -> FreeTextResult:
    """Let an :class:`~flexrec.policies.llm.LLMPolicy` answer freely, then parse and repair.

    Args:
        policy: an ``LLMPolicy``.
        batch: ``B`` tasks.
        group_size: answers per task ``G``.
        max_new_tokens: generation budget per answer.
        temperature: ``0`` for greedy, else sampling temperature.

    Returns:
        :class:`FreeTextResult`.
    """
    lm = policy.causal_lm()
    tokenizer = policy.tokenizer
    labels = [i.strip() for i in policy.identifier_paths(batch.num_candidates)[0]]
    ids, mask = D.left_pad(policy.prompt_ids(batch, answer_prefix=""), tokenizer.pad_token_id)
    greedy = temperature <= 0
    sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature}
    out = lm.generate(
        input_ids=ids.to(lm.device),
        attention_mask=mask.to(lm.device),
        max_new_tokens=max_new_tokens,
        num_return_sequences=1 if greedy else group_size,
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )
    answers = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    if greedy:
        # Greedy answers are identical within a group: generate once, repeat.
        answers = [a for a in answers for _ in range(group_size)]
    perms, valid, texts = [], [], []
    for b in range(batch.batch_size):
        group = answers[b * group_size : (b + 1) * group_size]
        parsed = [parse_and_repair(text, labels) for text in group]
        perms.append([p for p, _ in parsed])
        valid.append([v for _, v in parsed])
        texts.append(group)
    return FreeTextResult(
        torch.tensor(perms, device=lm.device), torch.tensor(valid, device=lm.device), texts
    )
