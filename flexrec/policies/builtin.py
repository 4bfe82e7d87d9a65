"""Built-in ranking policies, registered through the same hook as plug-ins."""

from __future__ import annotations

from flexrec.plugin.spec import hookimpl
from flexrec.policies.llm import LLMPolicy
from flexrec.policies.native import NativePolicy

__all__ = ["flexrec_register_policies"]


@hookimpl
def flexrec_register_policies() -> list[type]:
    """The ``native`` and ``llm`` policies."""
    return [NativePolicy, LLMPolicy]
