"""The documentation covers every hook, built-in component and contract suite, and the commands
of "Resuming a run" do what the page says."""

from __future__ import annotations

import inspect
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from flexrec.cli import main
from flexrec.plugin import spec
from flexrec.registry import registries

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
FENCE = re.compile(r"^```(\w+)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


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


def _section(path: Path, heading: str) -> str:
    """The text of a ``## heading`` section of a markdown page, up to the next ``## ``."""
    text = path.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _commands(block: str) -> list[list[str]]:
    """The ``flexrec`` command lines of a shell block (backslash continuations joined), as the
    arguments of :func:`flexrec.cli.main`."""
    commands = []
    for line in block.replace("\\\n", " ").strip().splitlines():
        words = shlex.split(line)
        assert words[0] == ".venv/bin/flexrec", line
        commands.append(words[1:])
    return commands


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _same_training_state(got: dict, want: dict) -> None:
    assert got["global_step"] == want["global_step"] and got["epoch"] == want["epoch"]
    assert got["flexrec_tasks_seen"] == want["flexrec_tasks_seen"]
    assert got["state_dict"].keys() == want["state_dict"].keys()
    for key, value in want["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    (got_opt,), (want_opt,) = got["optimizer_states"], want["optimizer_states"]
    assert got_opt["param_groups"] == want_opt["param_groups"]
    for index, state in want_opt["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(got_opt["state"][index][name]), value), name


@pytest.mark.slow
def test_resuming_a_run_works_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs the commands of running.md's "Resuming a run" from a copy of the configs:
    two epochs, resumed to four, equal bit for bit to an uninterrupted four-epoch fit; every run
    file the section names exists; a resume with another ``--model.lr`` trains with the
    checkpoint's."""
    section = _section(DOCS / "running.md", "Resuming a run")
    blocks = [body for lang, body in FENCE.findall(section) if lang == "bash"]
    assert len(blocks) == 2
    (fit, resume), (other_lr,) = _commands(blocks[0]), _commands(blocks[1])
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]

    assert main([*fit, *quiet]) == 0
    assert main([*resume, *quiet]) == 0
    at = resume.index("--ckpt_path")
    uninterrupted = [*resume[:at], *resume[at + 2 :], "--trainer.default_root_dir=runs/whole"]
    assert main([*uninterrupted, *quiet]) == 0

    # every run file the section names is there, with the checkpoints it says
    named = set(re.findall(r"`(runs/synthetic/[^`<>]+)`", section))
    assert "runs/synthetic/logs/version_1/checkpoints/epoch=3-step=32.ckpt" in named
    for path in named:
        assert Path(path).exists(), path
    first = _checkpoint(Path("runs/synthetic/logs/version_0/checkpoints/last.ckpt"))
    assert (first["global_step"], first["epoch"]) == (16, 1)
    resumed = _checkpoint(Path("runs/synthetic/logs/version_1/checkpoints/last.ckpt"))
    whole = _checkpoint(Path("runs/whole/logs/version_0/checkpoints/last.ckpt"))
    assert resumed["global_step"] == 32
    _same_training_state(resumed, whole)
    # not vacuous: the first two epochs' weights differ from the final ones
    key = next(iter(whole["state_dict"]))
    assert not torch.equal(first["state_dict"][key], whole["state_dict"][key])

    # --model.lr on a resume command is replaced by the checkpoint's
    assert "--model.lr=0.01" in other_lr
    assert main([*other_lr, *quiet]) == 0
    record = json.loads(Path("runs/synthetic/logs/version_2/run.json").read_text())
    assert record["config"]["model"]["lr"] == 0.003
    fifth = _checkpoint(Path("runs/synthetic/logs/version_2/checkpoints/last.ckpt"))
    assert fifth["global_step"] == 40
    assert fifth["optimizer_states"][0]["param_groups"][0]["lr"] == 0.003
