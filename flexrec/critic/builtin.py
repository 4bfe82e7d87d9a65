"""Built-in feedback models: ``critic`` (deep ensemble), ``user_knn``, ``item_knn``."""

from __future__ import annotations

from flexrec.critic.ensemble import EnsembleCritic
from flexrec.critic.knn import ItemKNN, UserKNN
from flexrec.plugin.spec import hookimpl

__all__ = ["flexrec_register_feedback_models"]


@hookimpl
def flexrec_register_feedback_models() -> list[type]:
    """The built-in feedback models."""
    return [EnsembleCritic, UserKNN, ItemKNN]
