"""flexrec: RL post-training of LLM recommenders for flexible needs (FlexRec).

The public entry points are the registries (:mod:`flexrec.registry`), the core types
(:mod:`flexrec.types`), the pure reward/advantage math (:mod:`flexrec.rewards.functional`,
:mod:`flexrec.estimators.functional`, :mod:`flexrec.objectives`) and the command line
(``flexrec``, ``flexrec-bench``).
"""

from __future__ import annotations

__version__ = "0.1.0"
