"""``flexrec export``: an LLM adapter that plain transformers + peft load and score exactly as
flexrec does, and a native file that ``flexrec serve`` loads without the run or the dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flexrec.cli import main
from flexrec.serving.model import load_served_model
from flexrec.serving.recommender import Recommender
from flexrec.testing.server import call, running_server

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "docs" / "examples" / "score_with_peft.py"
HISTORY = [1, 260, 1196]
CANDIDATES = [318, 858, 2571, 356, 296, 593]


def _answers(path: Path, requests: list[dict]) -> list:
    return Recommender(load_served_model(path)).answer(requests)


def test_native_export_is_one_self_contained_file(
    native_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "exports" / "quickstart.pt"
    assert main(["export", str(native_run), "--out", str(out)]) == 0
    assert f"-> {out} (file)" in capsys.readouterr().out
    assert out.is_file() and not list(out.parent.glob(".*"))  # no temporary left
    payload = torch.load(out, weights_only=True)  # plain containers and tensors only
    assert payload["format"] == "flexrec-native-export" and payload["version"] == 1
    requests = [
        {"history": HISTORY, "ratings": [5.0, 4.0, 4.5], "candidates": CANDIDATES},
        {"candidates": CANDIDATES[:3], "need": "maximize_interest"},
    ]
    expected = _answers(native_run / "checkpoints" / "last.ckpt", requests)

    # loading the export reads no data: the data module is never built
    from flexrec.data.datamodule import FlexRecDataModule

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the export read the dataset")

    monkeypatch.setattr(FlexRecDataModule, "setup", refuse)
    assert _answers(out, requests) == expected
    monkeypatch.undo()

    # the server loads it, from another folder, with no data folder
    env = {**os.environ, "FLEXREC_DATA_DIR": str(tmp_path / "no-data")}
    with running_server(out, env=env, cwd=tmp_path) as url:
        status, body = call(url, "POST", "/rank", requests[0])
    assert status == 200 and body == expected[0]

    # an existing export is replaced only with --force
    assert main(["export", str(native_run), "--out", str(out)]) == 2
    assert f"{out} exists" in capsys.readouterr().err
    assert main(["export", str(native_run), "--out", str(out), "--force"]) == 0


def _plain_recipe(folder: Path, task: dict) -> dict:
    """Run the documented recipe in a fresh interpreter where importing flexrec fails."""
    code = (
        "import runpy, sys; sys.modules['flexrec'] = None; "
        f"sys.argv = ['score', {str(folder)!r}]; runpy.run_path({str(RECIPE)!r}, run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(task),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_llm_export_loads_with_plain_transformers_and_peft(llm_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny-lora"
    assert main(["export", str(llm_run), "--out", str(out)]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= files
    assert {"flexrec_export.json", "catalogue.pt", "README.md"} <= files
    manifest = json.loads((out / "flexrec_export.json").read_text())
    assert manifest["weights"] == "lora_adapter"
    assert [n["name"] for n in manifest["needs"]] == ["maximize_interest"]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 4

    # a real prompt: the served model's own text for a history and candidates
    model = load_served_model(llm_run / "checkpoints" / "last.ckpt")
    recommender = Recommender(model)
    query = recommender.prepare(CANDIDATES, HISTORY, [5.0, 4.0, 4.5])
    batch = recommender.batch([query])
    ranking = [3, 0, 5, 1, 4, 2]
    logprobs, steps = model.policy.log_probs(batch, torch.tensor([[ranking]]))
    task = {
        "instruction": query.instruction,
        "history": query.history_text,
        "candidates": query.candidate_text,
        "ranking": ranking,
    }
    plain = _plain_recipe(out, task)
    assert plain["prompt_ids"] == model.policy.prompt_ids(batch)[0]
    ours = steps[0, 0].double()
    theirs = torch.tensor(
        [[float("-inf") if v is None else v for v in row] for row in plain["step_logprobs"]],
        dtype=torch.float64,
    )
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    finite = torch.isfinite(ours)
    assert torch.allclose(ours[finite], theirs[finite], atol=1e-5, rtol=0)
    placed = theirs.gather(1, torch.tensor(ranking).unsqueeze(1)).squeeze(1)
    assert torch.allclose(logprobs[0, 0].double(), placed, atol=1e-5, rtol=0)
    # the adapter matters: without it the base model scores differently
    with model.policy.model.disable_adapter():
        _, base = model.policy.log_probs(batch, torch.tensor([[ranking]]))
    assert (base[0, 0][finite] - ours[finite]).abs().max() > 1e-3

    # flexrec serves the export folder as it serves the checkpoint
    requests = [{"history": HISTORY, "candidates": CANDIDATES}]
    (from_export,) = _answers(out, requests)
    (from_checkpoint,) = recommender.answer(requests)
    assert [e["item"] for e in from_export["ranking"]] == [
        e["item"] for e in from_checkpoint["ranking"]
    ]
    for a, b in zip(from_export["ranking"], from_checkpoint["ranking"], strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)


def test_full_fine_tuning_exports_a_whole_model_folder(
    llm_run: Path, tiny_llm_path: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from flexrec.policies.llm import LLMPolicy
    from flexrec.serving.export import export_model

    lora = load_served_model(llm_run / "checkpoints" / "last.ckpt")
    torch.manual_seed(0)
    policy = LLMPolicy(model=str(tiny_llm_path), lora=None, micro_batch_size=2)
    with torch.no_grad():  # stands for fine-tuning: move every weight a little
        for p in policy.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    spec = {
        "name": "llm",
        "args": {"model": str(tiny_llm_path), "lora": None, "micro_batch_size": 2},
    }
    full = replace(lora, policy=policy, policy_spec=spec)
    out = export_model(full, tmp_path / "tiny-full")
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "flexrec_export.json"} <= files
    assert json.loads((out / "flexrec_export.json").read_text())["weights"] == "full_model"

    recommender = Recommender(full)
    query = recommender.prepare(CANDIDATES[:4], HISTORY)
    batch = recommender.batch([query])
    ranking = [2, 0, 3, 1]
    logprobs, _ = policy.log_probs(batch, torch.tensor([[ranking]]))
    task = {
        "instruction": query.instruction,
        "history": query.history_text,
        "candidates": query.candidate_text,
        "ranking": ranking,
    }
    steps = _plain_recipe(out, task)["step_logprobs"]
    placed = torch.tensor([steps[k][c] for k, c in enumerate(ranking)], dtype=torch.float64)
    assert torch.allclose(logprobs[0, 0].double(), placed, atol=1e-5, rtol=0)
    served = Recommender(load_served_model(out)).answer([{"candidates": CANDIDATES[:4]}])
    assert served == recommender.answer([{"candidates": CANDIDATES[:4]}])
