"""The package's import layering (``.importlinter``) holds and no module is part of an import cycle."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

CONFIG = Path(__file__).resolve().parents[1] / ".importlinter"


def test_import_linter_contracts_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    code = lint_imports(config_filename=str(CONFIG), no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out


def test_no_module_is_part_of_an_import_cycle() -> None:
    # acyclic_siblings compares the children of each package; this also sees a cycle that runs
    # through a package's own __init__ (``flexrec.data`` -> ``flexrec.data.x`` -> ``flexrec.data``)
    graph = grimp.build_graph("flexrec", cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(" -> ".join((module, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
