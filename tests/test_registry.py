"""Registry behaviour: building from specs, argument binding, errors listing valid options."""

from __future__ import annotations

import pytest

from flexrec.errors import ConfigError
from flexrec.plugin.manager import reset_plugin_manager
from flexrec.registry import ComponentSpec, Registry, registries


def test_spec_parsing_forms() -> None:
    assert ComponentSpec.parse("swap") == ComponentSpec("swap", {})
    assert ComponentSpec.parse({"name": "swap", "args": {"cutoff": 3}}).args == {"cutoff": 3}
    assert ComponentSpec.parse({"name": "swap", "args": None}).args == {}
    with pytest.raises(ConfigError, match="unexpected keys \\['cutoff'\\]"):
        ComponentSpec.parse({"name": "swap", "cutoff": 3}, "reward")
    with pytest.raises(ConfigError, match="missing 'name'"):
        ComponentSpec.parse({"args": {}}, "reward")
    with pytest.raises(ConfigError, match="'args' must be a mapping"):
        ComponentSpec.parse({"name": "swap", "args": [1]}, "reward")


def test_build_binds_args() -> None:
    reward = registries.reward.build({"name": "swap", "args": {"cutoff": 10}})
    assert reward.cutoff == 10
    assert registries.reward.build("swap").cutoff is None


def test_unknown_name_lists_options_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        registries.reward.build("swapp")
    message = str(info.value)
    assert message.startswith("unknown reward 'swapp' (did you mean 'swap'?); valid: ")
    for name in registries.reward.names():
        assert name in message
    assert "\n" not in message


def test_unknown_argument_lists_valid_arguments() -> None:
    with pytest.raises(
        ConfigError,
        match=r"reward 'swap': unknown argument 'cutof' \(did you mean 'cutoff'\?\); valid: cutoff",
    ):
        registries.reward.build({"name": "swap", "args": {"cutof": 3}})


def test_bad_argument_value_names_the_component() -> None:
    with pytest.raises(ConfigError, match="reward 'swap': cutoff must be >= 1"):
        registries.reward.build({"name": "swap", "args": {"cutoff": 0}})


def test_context_is_passed_only_when_accepted() -> None:
    reward = registries.reward.build("swap", num_items=7, cutoff=4)
    assert reward.cutoff == 4  # context fills an accepted, unset argument
    assert not hasattr(reward, "num_items")
    explicit = registries.reward.build({"name": "swap", "args": {"cutoff": 2}}, cutoff=4)
    assert explicit.cutoff == 2  # explicit args win over context


def test_dotted_path_fallback() -> None:
    cls = registries.reward.get("flexrec.rewards.builtin:SwapReward")
    assert cls is registries.reward.get("swap")
    assert registries.reward.get("flexrec.rewards.builtin.SwapReward") is cls
    with pytest.raises(ConfigError, match="cannot import reward 'flexrec.nowhere:Thing'"):
        registries.reward.get("flexrec.nowhere:Thing")
    with pytest.raises(ConfigError, match="is not a subclass of flexrec.rewards.base.Reward"):
        registries.reward.get("flexrec.registry:Registry")


def test_registry_parameters_lists_constructor_arguments() -> None:
    assert Registry.parameters(registries.reward.get("swap")) == ["cutoff"]


def test_build_passes_a_built_component_through() -> None:
    need = registries.need.build("maximize_interest")
    assert registries.need.build(need, num_items=3) is need
    with pytest.raises(ConfigError, match="bad need spec"):
        registries.need.build(registries.reward.build("swap"))  # not a need


def test_entries_load_once_per_plugin_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    import flexrec.registry as registry_module

    calls: list[str] = []
    real = registry_module.call_per_plugin
    monkeypatch.setattr(
        registry_module, "call_per_plugin", lambda hook: calls.append(hook) or real(hook)
    )
    registry: Registry[object] = Registry(
        "reward", "flexrec_register_rewards", "flexrec.rewards.base:Reward"
    )
    assert registry.names() == registry.names() and len(calls) == 1
    registry.invalidate()
    registry.names()
    assert len(calls) == 2
    reset_plugin_manager()  # a new plug-in generation: the registry reloads by itself
    registry.names()
    assert len(calls) == 3


def test_check_binds_like_build_without_building() -> None:
    registries.reward.check({"name": "swap", "args": {"cutoff": 0}})  # values: constructor's job
    with pytest.raises(ConfigError, match=r"unknown argument 'cutof' \(did you mean 'cutoff'\?\)"):
        registries.reward.check({"name": "swap", "args": {"cutof": 3}})
    with pytest.raises(ConfigError, match="unknown reward 'swapp'"):
        registries.reward.check("swapp")
