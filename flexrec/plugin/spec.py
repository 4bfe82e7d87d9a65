"""Hook specifications of flexrec's plug-in system (pluggy project name ``flexrec``).

A plug-in is a module (published through the ``flexrec`` entry-point group, or named in
``FLEXREC_PLUGINS`` / the ``plugins:`` config key) that implements any of these hooks. Every hook
returns an iterable of component **classes**, each with a unique ``name`` class attribute.

Example::

    from flexrec.plugin import hookimpl

    @hookimpl
    def flexrec_register_rewards():
        return [MyReward]
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

PROJECT_NAME = "flexrec"
ENTRY_POINT_GROUP = "flexrec"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def flexrec_register_rewards() -> Iterable[type]:
    """Return item-level reward classes (subclasses of :class:`flexrec.rewards.base.Reward`)."""


@hookspec
def flexrec_register_advantage_estimators() -> Iterable[type]:
    """Return advantage estimator classes (subclasses of
    :class:`flexrec.estimators.base.AdvantageEstimator`)."""


@hookspec
def flexrec_register_needs() -> Iterable[type]:
    """Return need classes (subclasses of :class:`flexrec.needs.base.Need`)."""


@hookspec
def flexrec_register_policies() -> Iterable[type]:
    """Return ranking policy classes (subclasses of :class:`flexrec.policies.base.Policy`)."""


@hookspec
def flexrec_register_feedback_models() -> Iterable[type]:
    """Return feedback model classes that fill unobserved gains (subclasses of
    :class:`flexrec.critic.base.FeedbackModel`)."""


@hookspec
def flexrec_register_objectives() -> Iterable[type]:
    """Return training objective classes (subclasses of
    :class:`flexrec.objectives.base.Objective`)."""
