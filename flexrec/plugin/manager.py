"""The lazily built pluggy manager: built-ins, then entry points, then named modules.

This module is the one owner of the plug-in state: the pluggy manager, where each plug-in came
from, the disabled entry points and a generation counter that changes whenever the plug-in set
may have changed (:func:`reset_plugin_manager`, :func:`load_plugins`). Whoever caches hook results
(the registries of :mod:`flexrec.registry`) remembers the generation it loaded at and reloads when
it differs, so this module never needs to know who depends on it.

Nothing is imported until a registry is first used. Environment variables:

- ``FLEXREC_DISABLE_PLUGIN_AUTOLOAD=1`` — skip entry-point discovery (built-ins and explicitly named
  modules still load).
- ``FLEXREC_DISABLED_PLUGINS=a,b`` — skip these entry points (by entry-point or distribution name).
- ``FLEXREC_PLUGINS=pkg.mod,other.mod`` — also load these modules (unpackaged plug-ins); the
  ``plugins:`` config key does the same through :func:`load_plugins`.
- ``FLEXREC_TRACE_PLUGINS=1`` — print every hook call and result to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from flexrec.errors import PluginError
from flexrec.plugin import spec
from flexrec.plugin.spec import ENTRY_POINT_GROUP, PROJECT_NAME

__all__ = [
    "BUILTIN_PLUGINS",
    "call_per_plugin",
    "disabled_plugins",
    "get_plugin_manager",
    "load_plugins",
    "plugin_distribution",
    "plugin_generation",
    "reset_plugin_manager",
]

BUILTIN_PLUGINS: tuple[str, ...] = (
    "flexrec.rewards.builtin",
    "flexrec.estimators.builtin",
    "flexrec.policies.builtin",
    "flexrec.needs.builtin",
    "flexrec.critic.builtin",
    "flexrec.baselines.builtin",
    "flexrec.objectives.builtin",
)


@dataclass
class _PluginState:
    """The process-wide plug-in state; only this module reads or changes it.

    Attributes:
        pm: the manager, None until first use (and after a reset).
        distributions: ``(distribution, version)`` of each packaged plug-in, by plug-in name.
        disabled: entry points skipped because of ``FLEXREC_DISABLED_PLUGINS``.
        generation: incremented whenever the plug-in set may have changed.
    """

    pm: pluggy.PluginManager | None = None
    distributions: dict[str, tuple[str, str]] = field(default_factory=dict)
    disabled: list[str] = field(default_factory=list)
    generation: int = 0


_state = _PluginState()


def _env_list(var: str) -> list[str]:
    return [item.strip() for item in os.environ.get(var, "").split(",") if item.strip()]


def _flexrec_version() -> str:
    try:
        return metadata.version("flexrec")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plug-in manager, built on first use."""
    if _state.pm is None:
        pm = pluggy.PluginManager(PROJECT_NAME)
        pm.add_hookspecs(spec)
        if os.environ.get("FLEXREC_TRACE_PLUGINS", "") not in ("", "0"):
            pm.trace.root.setwriter(sys.stderr.write)
            pm.enable_tracing()
        distributions: dict[str, tuple[str, str]] = {}
        disabled: list[str] = []
        for module in BUILTIN_PLUGINS:
            pm.register(importlib.import_module(module), name=module)
            distributions[module] = ("flexrec", _flexrec_version())
        if os.environ.get("FLEXREC_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0"):
            blocked = set(_env_list("FLEXREC_DISABLED_PLUGINS"))
            _load_entry_points(pm, blocked, distributions, disabled)
        _register_modules(pm, _env_list("FLEXREC_PLUGINS"))
        _check_pending(pm)
        # only a completely built manager becomes the state
        _state.distributions, _state.disabled = distributions, disabled
        _state.pm = pm
    return _state.pm


def _check_pending(pm: pluggy.PluginManager) -> None:
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plug-in {pm.get_name(exc.plugin)!r}: {exc}") from exc


def _load_entry_points(
    pm: pluggy.PluginManager,
    blocked: set[str],
    distributions: dict[str, tuple[str, str]],
    disabled: list[str],
) -> None:
    """Register the ``flexrec`` entry points, recording each one's distribution in
    ``distributions`` and each one skipped because it is in ``blocked`` in ``disabled``."""
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "unknown distribution"
        version = ep.dist.version if ep.dist is not None else "?"
        if ep.name in blocked or dist in blocked:
            disabled.append(f"{ep.name} ({dist} {version})")
            pm.set_blocked(ep.name)
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plug-in entry point {ep.name!r} ({ep.value}) of distribution {dist} {version} "
                f"failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        _register(pm, plugin, ep.name)
        distributions[ep.name] = (dist, version)


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plug-in {name!r}: {exc}") from exc


def _register_modules(pm: pluggy.PluginManager, modules: Iterable[str]) -> list[str]:
    added = []
    for name in modules:
        if pm.get_plugin(name) is not None:
            continue
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise PluginError(
                f"plug-in module {name!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        _register(pm, module, name)
        added.append(name)
    return added


def load_plugins(modules: Iterable[str]) -> list[str]:
    """Register extra plug-in modules by import path (the ``plugins:`` config key).

    Returns:
        the names newly registered (already registered modules are skipped).
    """
    pm = get_plugin_manager()
    added = _register_modules(pm, modules)
    if added:
        _check_pending(pm)
        _state.generation += 1
    return added


def call_per_plugin(hook: str) -> list[tuple[str, object]]:
    """Call a hook once per implementing plug-in, in registration order.

    Calls go through pluggy (so ``FLEXREC_TRACE_PLUGINS`` traces them) one plug-in at a time, so
    that every result is attributed to the plug-in that returned it.

    Returns:
        ``(plugin name, result)`` pairs; plug-ins returning None are left out.

    Raises:
        PluginError: a plug-in's hook raised; the message names the plug-in and the hook.
    """
    pm = get_plugin_manager()
    impls = getattr(pm.hook, hook).get_hookimpls()
    plugins = [impl.plugin for impl in impls]
    results = []
    for impl in impls:
        others = [p for p in plugins if p is not impl.plugin]
        try:
            (result,) = pm.subset_hook_caller(hook, remove_plugins=others)() or [None]
        except Exception as exc:
            dist = _state.distributions.get(impl.plugin_name)
            origin = f" (distribution {dist[0]} {dist[1]})" if dist else ""
            raise PluginError(
                f"plug-in {impl.plugin_name!r}{origin}: hook {hook} raised "
                f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            ) from exc
        if result is not None:
            results.append((impl.plugin_name, result))
    return results


def plugin_distribution(plugin_name: str) -> tuple[str, str] | None:
    """``(distribution, version)`` of a registered plug-in, or None for unpackaged modules."""
    return _state.distributions.get(plugin_name)


def disabled_plugins() -> list[str]:
    """Entry points skipped because of ``FLEXREC_DISABLED_PLUGINS``."""
    get_plugin_manager()
    return list(_state.disabled)


def plugin_generation() -> int:
    """A counter that changes whenever the plug-in set may have changed.

    :func:`reset_plugin_manager` and :func:`load_plugins` (when it registers a module) increment
    it. A cache of hook results stays valid while the generation it was loaded at is current.
    """
    return _state.generation


def reset_plugin_manager() -> None:
    """Drop the manager, so that the next use rebuilds it from the current environment (tests, or
    after installing a plug-in); every registry reloads on its next access."""
    _state.pm, _state.distributions, _state.disabled = None, {}, []
    _state.generation += 1
