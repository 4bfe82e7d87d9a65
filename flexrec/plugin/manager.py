"""The lazily built pluggy manager: built-ins, then entry points, then named modules.

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
    "reset_plugin_manager",
]

BUILTIN_PLUGINS: tuple[str, ...] = (
    "flexrec.rewards.builtin",
    "flexrec.estimators.builtin",
    "flexrec.policies.builtin",
    "flexrec.needs.builtin",
    "flexrec.critic.builtin",
    "flexrec.baselines.builtin",
)

_pm: pluggy.PluginManager | None = None
_distributions: dict[str, tuple[str, str]] = {}
_disabled: list[str] = []


def _env_list(var: str) -> list[str]:
    return [item.strip() for item in os.environ.get(var, "").split(",") if item.strip()]


def _flexrec_version() -> str:
    try:
        return metadata.version("flexrec")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plug-in manager, built on first use."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager(PROJECT_NAME)
        pm.add_hookspecs(spec)
        if os.environ.get("FLEXREC_TRACE_PLUGINS", "") not in ("", "0"):
            pm.trace.root.setwriter(sys.stderr.write)
            pm.enable_tracing()
        _distributions.clear()
        _disabled.clear()
        for module in BUILTIN_PLUGINS:
            pm.register(importlib.import_module(module), name=module)
            _distributions[module] = ("flexrec", _flexrec_version())
        if os.environ.get("FLEXREC_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0"):
            _load_entry_points(pm, set(_env_list("FLEXREC_DISABLED_PLUGINS")))
        _register_modules(pm, _env_list("FLEXREC_PLUGINS"))
        _check_pending(pm)
        _pm = pm
    return _pm


def _check_pending(pm: pluggy.PluginManager) -> None:
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plug-in {pm.get_name(exc.plugin)!r}: {exc}") from exc


def _load_entry_points(pm: pluggy.PluginManager, disabled: set[str]) -> None:
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "unknown distribution"
        version = ep.dist.version if ep.dist is not None else "?"
        if ep.name in disabled or dist in disabled:
            _disabled.append(f"{ep.name} ({dist} {version})")
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
        _distributions[ep.name] = (dist, version)


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
        from flexrec.registry import registries

        registries.invalidate()
    return added


def call_per_plugin(hook: str) -> list[tuple[str, object]]:
    """Call a hook once per implementing plug-in, in registration order.

    Calls go through pluggy (so ``FLEXREC_TRACE_PLUGINS`` traces them) one plug-in at a time, so
    that every result is attributed to the plug-in that returned it.

    Returns:
        ``(plugin name, result)`` pairs; plug-ins returning None are left out.
    """
    pm = get_plugin_manager()
    impls = getattr(pm.hook, hook).get_hookimpls()
    plugins = [impl.plugin for impl in impls]
    results = []
    for impl in impls:
        others = [p for p in plugins if p is not impl.plugin]
        (result,) = pm.subset_hook_caller(hook, remove_plugins=others)() or [None]
        if result is not None:
            results.append((impl.plugin_name, result))
    return results


def plugin_distribution(plugin_name: str) -> tuple[str, str] | None:
    """``(distribution, version)`` of a registered plug-in, or None for unpackaged modules."""
    return _distributions.get(plugin_name)


def disabled_plugins() -> list[str]:
    """Entry points skipped because of ``FLEXREC_DISABLED_PLUGINS``."""
    get_plugin_manager()
    return list(_disabled)


def reset_plugin_manager() -> None:
    """Drop the manager and every registry's cache (tests, or after installing a plug-in)."""
    global _pm
    _pm = None
    from flexrec.registry import registries

    registries.invalidate()
