"""Typed registries of named components, filled through the plug-in hooks.

Configs name components as ``{name: swap, args: {cutoff: 10}}`` (or just ``swap``). A registry
resolves the name to a class registered by a plug-in (built-ins included), binds ``args`` to the
constructor signature and builds the component. Every mistake is reported with the valid options.
A dotted import path (``package.module:Class`` or ``package.module.Class``) is accepted as an
escape hatch for classes that are not registered.

The registries depend on :mod:`flexrec.plugin.manager`, never the other way: a registry remembers
the manager's :func:`~flexrec.plugin.manager.plugin_generation` its entries were loaded at and
reloads them when the plug-in set has changed since.

Examples:
    >>> from flexrec.registry import registries
    >>> reward = registries.reward.build({"name": "swap", "args": {"cutoff": 10}})
    >>> reward.cutoff
    10
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from flexrec.errors import ConfigError, PluginError
from flexrec.plugin.manager import call_per_plugin, plugin_distribution, plugin_generation

__all__ = ["ComponentSpec", "Registry", "RegistryEntry", "registries"]

T = TypeVar("T")


@dataclass(frozen=True)
class ComponentSpec:
    """A component named in a config: a registered name (or dotted path) and constructor args.

    Args:
        name: registered name, or ``module:Class`` / ``module.Class``.
        args: keyword arguments bound to the constructor at build time.
    """

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(
        cls, value: str | Mapping[str, Any] | ComponentSpec, kind: str = "component"
    ) -> ComponentSpec:
        """Accept ``"swap"``, ``{"name": "swap", "args": {...}}`` or a :class:`ComponentSpec`."""
        if isinstance(value, ComponentSpec):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            extra = sorted(set(value) - {"name", "args"})
            if "name" not in value or extra:
                detail = f"unexpected keys {extra}" if extra else "missing 'name'"
                raise ConfigError(
                    f"bad {kind} spec {dict(value)!r}: {detail}; expected {{name: ..., args: {{...}}}}"
                )
            args = value.get("args") or {}
            if not isinstance(args, Mapping):
                raise ConfigError(f"bad {kind} spec: 'args' must be a mapping, got {args!r}")
            return cls(str(value["name"]), dict(args))
        raise ConfigError(
            f"bad {kind} spec {value!r}: expected a name or {{name: ..., args: {{...}}}}"
        )


@dataclass(frozen=True)
class RegistryEntry:
    """A registered class and where it came from."""

    name: str
    cls: type
    plugin: str
    distribution: str | None = None
    version: str | None = None

    @property
    def module(self) -> str:
        """The module that defines the class."""
        return self.cls.__module__


class Registry(Generic[T]):
    """Named component classes of one kind, collected from one plug-in hook.

    Args:
        kind: human name used in messages (``reward``, ``estimator``, ...).
        hook: name of the hook in :mod:`flexrec.plugin.spec` that returns the classes.
        base: ``module:Class`` of the base class every component must subclass.
    """

    def __init__(self, kind: str, hook: str, base: str) -> None:
        self.kind = kind
        self.hook = hook
        self._base_path = base
        self._entries: dict[str, RegistryEntry] | None = None
        self._generation = -1

    @property
    def base(self) -> type:
        """The base class of this registry's components.

        Looked up by its ``module:Class`` path when first needed (a run-time lookup, like a dotted
        component path): the component packages sit above the registry, and importing them here
        would pull every component's dependencies into ``import flexrec.registry``.
        """
        module, _, qual = self._base_path.partition(":")
        return getattr(importlib.import_module(module), qual)

    def _load(self) -> dict[str, RegistryEntry]:
        generation = plugin_generation()
        if self._entries is None or self._generation != generation:
            entries: dict[str, RegistryEntry] = {}
            for plugin, classes in call_per_plugin(self.hook):
                dist = plugin_distribution(plugin)
                for cls in cast("Iterable[type]", classes):
                    self._add(entries, cls, plugin, *(dist or (None, None)))
            # only a complete, conflict-free registry is kept; a plug-in set that changed while
            # loading leaves an older generation, so the next access loads again
            self._entries, self._generation = entries, generation
        return self._entries

    def _add(
        self,
        entries: dict[str, RegistryEntry],
        cls: type,
        plugin: str,
        dist: str | None,
        version: str | None,
    ) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"{self.kind} class {cls.__module__}.{cls.__qualname__} (plug-in {plugin!r}) "
                "has no 'name' class attribute"
            )
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(
                f"{self.kind} {name!r} from {cls.__module__} is not a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}"
            )
        if name in entries:
            other = entries[name]
            raise PluginError(
                f"duplicate {self.kind} name {name!r}: registered by {other.module} "
                f"(plug-in {other.plugin!r}) and by {cls.__module__} (plug-in {plugin!r})"
            )
        entries[name] = RegistryEntry(name, cls, plugin, dist, version)

    def invalidate(self) -> None:
        """Forget the loaded entries; the next access asks the plug-in manager again."""
        self._entries = None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._load())

    def entries(self) -> list[RegistryEntry]:
        """Registered entries sorted by name."""
        loaded = self._load()
        return [loaded[n] for n in sorted(loaded)]

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def get(self, name: str) -> type[T]:
        """The class registered as ``name`` or found at the dotted path ``name``.

        Raises:
            ConfigError: unknown name, listing the valid names (and a close match).
        """
        loaded = self._load()
        if name in loaded:
            return loaded[name].cls
        if "." in name or ":" in name:
            return self._import(name)
        close = difflib.get_close_matches(name, list(loaded), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown {self.kind} {name!r}{hint}; valid: {', '.join(sorted(loaded)) or '(none)'}"
        )

    def _import(self, path: str) -> type[T]:
        module, sep, qual = path.partition(":")
        if not sep:
            module, _, qual = path.rpartition(".")
        try:
            obj: Any = importlib.import_module(module)
            for part in qual.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import {self.kind} {path!r}: {exc}") from exc
        if not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise ConfigError(
                f"{self.kind} {path!r} is not a subclass of {self.base.__module__}."
                f"{self.base.__qualname__}"
            )
        return cast("type[T]", obj)

    def build(self, spec: str | Mapping[str, Any] | ComponentSpec | T, **context: Any) -> T:
        """Build a component from a spec, or pass a built component through.

        ``spec.args`` must match the constructor signature (unknown or missing arguments raise a
        :class:`ConfigError` listing the valid ones). ``context`` supplies values the caller knows
        (e.g. ``num_items``); each is passed only if the constructor accepts it and ``args`` does
        not already set it. An instance of the registry's base class is returned as it is (and
        ``context`` is ignored), so callers may accept specs and ready components alike.
        """
        if not isinstance(spec, str | Mapping | ComponentSpec) and isinstance(spec, self.base):
            return spec
        spec = ComponentSpec.parse(cast(Any, spec), self.kind)  # anything else is a ConfigError
        cls, kwargs = self._bind(spec, context)
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{self.kind} {spec.name!r}: {exc}") from exc

    @staticmethod
    def parameters(cls: type) -> list[str]:
        """Names of the keyword arguments a component class accepts."""
        sig = inspect.signature(cls)
        return [
            p.name
            for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]

    def check(self, spec: str | Mapping[str, Any] | ComponentSpec | T, **context: Any) -> None:
        """Check a spec as :meth:`build` does, without constructing the component.

        Raises the same :class:`ConfigError` as :meth:`build` for an unknown name, an unknown
        argument (unless the constructor takes ``**kwargs``) or a missing required argument.
        ``context`` counts as supplied where the constructor accepts it (its values are not
        used), so a caller may check a spec before it knows them, e.g. ``num_items``. Argument
        values are not checked: only the constructor can do that.
        """
        if not isinstance(spec, str | Mapping | ComponentSpec) and isinstance(spec, self.base):
            return
        self._bind(ComponentSpec.parse(cast(Any, spec), self.kind), context)

    def _bind(
        self, spec: ComponentSpec, context: Mapping[str, Any]
    ) -> tuple[type[T], dict[str, Any]]:
        """The class of ``spec`` and its constructor keyword arguments (``spec.args`` + context)."""
        cls = self.get(spec.name)
        params = self.parameters(cls)
        kwargs = dict(spec.args)
        unknown = [k for k in kwargs if k not in params and not _accepts_var_kwargs(cls)]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(params), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{self.kind} {spec.name!r}: unknown argument {unknown[0]!r}{hint}; "
                f"valid: {', '.join(params) or '(none)'}"
            )
        for key, value in context.items():
            if key in params and key not in kwargs:
                kwargs[key] = value
        try:
            inspect.signature(cls).bind(**kwargs)
        except TypeError as exc:
            raise ConfigError(
                f"{self.kind} {spec.name!r}: {exc}; valid: {', '.join(params)}"
            ) from exc
        return cls, kwargs


def _accepts_var_kwargs(cls: type) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls).parameters.values())


class Registries:
    """The registries of flexrec, one per hook (``registries.reward``, ``registries.estimator``, ...)."""

    def __init__(self) -> None:
        self.reward: Registry[Any] = Registry(
            "reward", "flexrec_register_rewards", "flexrec.rewards.base:Reward"
        )
        self.estimator: Registry[Any] = Registry(
            "estimator",
            "flexrec_register_advantage_estimators",
            "flexrec.estimators.base:AdvantageEstimator",
        )
        self.need: Registry[Any] = Registry(
            "need", "flexrec_register_needs", "flexrec.needs.base:Need"
        )
        self.policy: Registry[Any] = Registry(
            "policy", "flexrec_register_policies", "flexrec.policies.base:Policy"
        )
        self.feedback: Registry[Any] = Registry(
            "feedback model",
            "flexrec_register_feedback_models",
            "flexrec.critic.base:FeedbackModel",
        )
        self.objective: Registry[Any] = Registry(
            "objective", "flexrec_register_objectives", "flexrec.objectives.base:Objective"
        )

    def __iter__(self) -> Iterator[Registry[Any]]:
        return iter(
            (self.reward, self.estimator, self.need, self.policy, self.feedback, self.objective)
        )

    def invalidate(self) -> None:
        """Forget every loaded registry (after the plug-in manager changed)."""
        for registry in self:
            registry.invalidate()


registries = Registries()
