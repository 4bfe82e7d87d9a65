"""Small real training runs on the embedded MovieLens latest-small, shared by the serving tests.

Each fixture trains once per session through the ``flexrec`` command (a few steps: the point is a
real checkpoint of a real run, not a good model) and returns its run folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flexrec.cli import main

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def _fit(root: Path, *args: str) -> Path:
    status = main(
        [
            "fit",
            f"--config={QUICKSTART}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={root}",
            *args,
        ]
    )
    assert status == 0
    run = root / "logs" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").exists()
    return run


@pytest.fixture(scope="session")
def native_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart's native policy after 4 training steps (a real checkpoint and run folder)."""
    root = tmp_path_factory.mktemp("native_run")
    return _fit(
        root,
        "--trainer.max_steps=4",
        "--data.init_args.max_train_tasks=128",
        "--data.init_args.max_eval_tasks=32",
        "--model.group_size=4",
    )


@pytest.fixture(scope="session")
def llm_run(tmp_path_factory: pytest.TempPathFactory, tiny_llm_path: Path) -> Path:
    """The tiny offline LLM with LoRA after 2 training steps at a large learning rate (so the
    adapter is far from its zero start)."""
    root = tmp_path_factory.mktemp("llm_run")
    policy = f"{{name: llm, args: {{model: {tiny_llm_path}, lora: {{r: 4}}, micro_batch_size: 2}}}}"
    return _fit(
        root,
        f"--model.policy={policy}",
        "--model.lr=0.05",
        "--model.group_size=2",
        "--model.references=[oracle, random]",
        "--trainer.max_steps=2",
        "--data.init_args.num_candidates=6",
        "--data.init_args.history_len=4",
        "--data.init_args.batch_size=2",
        "--data.init_args.max_train_tasks=4",
        "--data.init_args.max_eval_tasks=2",
    )
