"""Ranking policies: the :class:`~flexrec.policies.base.Policy` interface, the ``native``
pointer-network policy and the ``llm`` constrained-decoding policy.

Submodules are imported on demand (the LLM policy pulls in transformers and peft).
"""
