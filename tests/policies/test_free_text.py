"""The free-text baseline mode: parse and repair, and its raw valid rate on the tiny model."""

from __future__ import annotations

import torch

from flexrec.policies.free_text import free_text_rankings, parse_and_repair
from flexrec.testing.batches import make_batch

LABELS = ["A", "B", "C", "D"]


def test_valid_answer_is_parsed_exactly() -> None:
    assert parse_and_repair("Ranking: D C A B", LABELS) == ([3, 2, 0, 1], True)
    assert parse_and_repair("1. B\n2. A\n3. D\n4. C", LABELS) == ([1, 0, 3, 2], True)


def test_repairs_duplicates_missing_and_strays() -> None:
    assert parse_and_repair("B, B, D", LABELS) == ([1, 3, 0, 2], False)
    assert parse_and_repair("A B C D E", LABELS) == ([0, 1, 2, 3], False)
    assert parse_and_repair("I like movies.", LABELS) == ([0, 1, 2, 3], False)
    assert parse_and_repair("", LABELS) == ([0, 1, 2, 3], False)


def test_free_text_rankings_are_repaired_permutations(make_policy) -> None:
    policy = make_policy("llm_lora")
    batch = make_batch(batch_size=2, num_candidates=5, seed=3)
    result = free_text_rankings(policy, batch, group_size=2, max_new_tokens=12, temperature=1.0)
    assert result.permutations.shape == (2, 2, 5)
    assert torch.equal(result.permutations.sort(-1).values, torch.arange(5).expand(2, 2, 5))
    assert result.valid.shape == (2, 2)
    assert 0.0 <= result.valid_rate <= 1.0
    assert len(result.texts) == 2 and len(result.texts[0]) == 2


def test_greedy_free_text_repeats_the_one_answer(make_policy) -> None:
    policy = make_policy("llm_lora")
    batch = make_batch(batch_size=1, num_candidates=4, seed=3)
    result = free_text_rankings(policy, batch, group_size=3, max_new_tokens=8)
    assert result.texts[0][0] == result.texts[0][1] == result.texts[0][2]
    assert torch.equal(result.permutations[0, 0], result.permutations[0, 2])
