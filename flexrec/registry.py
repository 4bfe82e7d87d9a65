"""Typed registries of named components, filled through the plug-in hooks.

Configs name components as ``{name: swap, args: {cutoff: 10}}`` (or just ``swap``). A registry
resolves the name to a class registered by a plug-in (built-ins included), binds ``args`` to the
constructor signature and builds the component. Every mistake is reported with the valid options.
A dotted import path (``package.module:Class`` or ``package.module.Class``) is accepted as an
escape hatch for classes that are not registered.

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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from flexrec.errors import ConfigError, PluginError

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

    @property
    def base(self) -> type:
        """The base class of this registry's components (imported lazily)."""
        module, _, qual = self._base_path.partition(":")
        return getattr(importlib.import_module(module), qual)

    def _load(self) -> dict[str, RegistryEntry]:
        if self._entries is None:
            from flexrec.plugin.manager import call_per_plugin, plugin_distribution

            entries: dict[str, RegistryEntry] = {}
            for plugin, classes in call_per_plugin(self.hook):
                dist = plugin_distribution(plugin)
                for cls in classes:
                    self._add(entries, cls, plugin, *(dist or (None, None)))
            self._entries = entries  # only a complete, conflict-free registry is kept
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
        return obj

    def build(self, spec: str | Mapping[str, Any] | ComponentSpec, **context: Any) -> T:
        """Build a component from a spec.

        ``spec.args`` must match the constructor signature (unknown or missing arguments raise a
        :class:`ConfigError` listing the valid ones). ``context`` supplies values the caller knows
        (e.g. ``num_items``); each is passed only if the constructor accepts it and ``args`` does
        not already set it.
        """
        spec = ComponentSpec.parse(spec, self.kind)
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

    def __iter__(self) -> Iterator[Registry[Any]]:
        return iter((self.reward, self.estimator, self.need, self.policy, self.feedback))

    def invalidate(self) -> None:
        """Forget every loaded registry (after the plug-in manager changed)."""
        for registry in self:
            registry.invalidate()


registries = Registries()
