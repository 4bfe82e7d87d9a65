"""Fixtures of the policy tests: the tiny offline LLM and policy factories."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from flexrec.policies.base import Policy

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture
def make_policy(tiny_llm_path: Path) -> Callable[[str], Policy]:
    """Factory: ``native``, ``native_text`` (instruction-text need encoder), ``llm_lora``,
    ``llm_full`` or ``llm_reasoning`` (LoRA) policies."""

    def build(kind: str) -> Policy:
        torch.manual_seed(0)
        if kind in ("native", "native_text"):
            from flexrec.policies.native import NativePolicy

            encoder = "text" if kind == "native_text" else "index"
            return NativePolicy(
                num_items=600, num_features=4, num_needs=3, dim=32, need_encoder=encoder, seed=0
            )
        from flexrec.policies.llm import LLMPolicy

        lora = None if kind == "llm_full" else {"r": 4}
        reasoning = 6 if kind == "llm_reasoning" else 0
        return LLMPolicy(
            model=str(tiny_llm_path), lora=lora, micro_batch_size=2, reasoning_tokens=reasoning
        )

    return build
