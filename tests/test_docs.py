"""The documentation covers every hook and every built-in component."""

from __future__ import annotations

import inspect
from pathlib import Path

from flexrec.plugin import spec
from flexrec.registry import registries

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_hookspec_is_documented() -> None:
    text = (DOCS / "concepts" / "plugins.md").read_text()
    hooks = [
        name
        for name, fn in inspect.getmembers(spec, inspect.isfunction)
        if name.startswith("flexrec_")
    ]
    assert len(hooks) >= 5
    for hook in hooks:
        assert f"`{hook}`" in text, f"hook {hook} missing from docs/concepts/plugins.md"


def test_every_builtin_name_is_in_the_components_table() -> None:
    text = (DOCS / "components.md").read_text()
    for registry in registries:
        for entry in registry.entries():
            if entry.module.startswith("flexrec."):
                row = f"| `{entry.name}` | {registry.kind} |"
                assert row in text, (
                    f"{registry.kind} {entry.name!r} missing from docs/components.md"
                )


def test_every_contract_suite_is_described() -> None:
    """docs/concepts/plugins.md says what each contract suite requires."""
    from flexrec.testing import contracts

    text = (DOCS / "concepts" / "plugins.md").read_text()
    section = text[text.index("## Contracts: what each kind of component must do") :]
    suites = [name for name in contracts.__all__ if name.endswith("Contract")]
    assert len(suites) == 6
    for suite in suites:
        assert f"(`{suite}`)" in section, f"{suite} missing from the contracts section"
