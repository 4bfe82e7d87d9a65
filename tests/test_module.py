"""FlexRecModule end to end: learning, the CLI, bad configs, and kill-and-resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from flexrec.cli import LIGHTNING_COMMANDS
from flexrec.lightning_cli import FlexRecCLI, ValidationPoints
from flexrec.module import FlexRecModule
from flexrec.rewards.base import Reward
from flexrec.rewards.builtin import SwapReward
from flexrec.run_record import RECORDED_COMMANDS, read_task_metrics
from flexrec.testing.synthetic import SyntheticDataModule

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "configs" / "synthetic.yaml"


def _trainer(epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def test_native_policy_learns_the_need_conditioned_ranking() -> None:
    L.seed_everything(0)
    data = SyntheticDataModule(num_train=256, num_val=128, num_candidates=8, batch_size=32)
    module = FlexRecModule(policy={"name": "native", "args": {"dim": 32}}, group_size=8, lr=3e-3)
    trainer = _trainer(epochs=3)
    trainer.fit(module, data)
    (metrics,) = trainer.validate(module, data, verbose=False)
    for need in data.needs:
        learned, random = metrics[f"val/ndcg@5/{need}"], metrics[f"val_random/ndcg@5/{need}"]
        assert metrics[f"val/valid_rate/{need}"] == 1.0
        # random ~0.70 here, oracle 1.0: the policy must have learnt to read the need.
        assert learned > random + 0.1, (need, learned, random)


class _CountValidations(L.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


def test_per_task_metrics_average_to_the_logged_ones_and_validation_is_spread() -> None:
    L.seed_everything(0)
    # 80 tasks / 16 = 5 batches per epoch, 2 epochs: 10 batches; 4 points → every 2 batches
    data = SyntheticDataModule(num_train=80, num_val=48, batch_size=16)
    module = FlexRecModule(policy={"name": "native", "args": {"dim": 8}}, group_size=2)
    counter = _CountValidations()
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ValidationPoints(points=4), counter],
    )
    trainer.fit(module, data)
    assert counter.steps == [2, 4, 6, 8, 10]  # every 2 batches, across the epoch boundary
    assert trainer.callback_metrics["val/tasks_seen"].item() == 160.0 == module.tasks_seen
    (logged,) = trainer.test(module, data, verbose=False)
    rows = module.task_metrics["test"]
    assert {r["who"] for r in rows} == {"policy", "oracle", "random"}
    assert len(rows) == 3 * 48 and len(module.task_metrics["val"]) == 3 * 48
    for key, value in logged.items():
        split, metric, need = key.split("/")
        if metric.startswith("no_"):
            continue
        who = "policy" if split == "test" else split.removeprefix("test_")
        values = [r[metric] for r in rows if r["who"] == who and r["need"] == need]
        values = [v for v in values if not math.isnan(v)]
        assert sum(values) / len(values) == pytest.approx(value, abs=1e-6), key


def test_validation_points_default_to_the_batches_when_there_are_few() -> None:
    counter = _CountValidations()
    trainer = L.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[ValidationPoints(), counter],
    )
    data = SyntheticDataModule(num_train=64, num_val=16, batch_size=16)
    trainer.fit(FlexRecModule(policy={"name": "native", "args": {"dim": 8}}, group_size=2), data)
    assert counter.steps == [1, 2, 3]


def test_validation_points_leave_a_fit_without_validation_alone(tmp_path: Path) -> None:
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[ValidationPoints(), L.pytorch.callbacks.ModelCheckpoint(save_last=True)],
    )
    data = SyntheticDataModule(num_train=64, num_val=16, batch_size=16)
    trainer.fit(FlexRecModule(policy={"name": "native", "args": {"dim": 8}}, group_size=2), data)
    assert trainer.check_val_every_n_epoch == 1  # unchanged: the epoch-end checkpoint is saved
    assert torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False)["global_step"] == 4


class _NamedListMetric(SwapReward):
    """A reward whose list metric has its own name (as one computing ERR would)."""

    list_metric_name = "err"


@pytest.mark.parametrize(
    ("reward", "key"),
    [(None, "train/ndcg"), (_NamedListMetric(), "train/err")],
    ids=["swap", "err"],
)
def test_the_list_metric_is_logged_once_under_the_rewards_name(
    reward: Reward | None, key: str
) -> None:
    L.seed_everything(0)
    data = SyntheticDataModule(num_train=32, num_val=16, batch_size=16)
    module = FlexRecModule(policy={"name": "native", "args": {"dim": 8}}, group_size=2)
    if reward is not None:
        module.reward = reward
    trainer = L.Trainer(
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data)
    logged = {k for k in trainer.callback_metrics if k.startswith("train/")}
    assert logged == {
        "train/loss",
        "train/kl",
        "train/entropy",
        "train/clip_fraction",
        "train/reward",
        key,
    }
    assert set(trainer.progress_bar_metrics) == {key}


def test_every_recorded_command_writes_the_run_record() -> None:
    assert set(RECORDED_COMMANDS) < set(LIGHTNING_COMMANDS)
    for command in RECORDED_COMMANDS:
        assert f"after_{command}" in vars(FlexRecCLI), command


def _flexrec(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "flexrec.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


SMALL = (
    "--data.init_args.num_train=64",
    "--data.init_args.num_val=32",
    "--data.init_args.batch_size=16",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
)


def test_cli_fit_then_validate_writes_a_run_record(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _flexrec(
        "fit",
        f"--config={SYNTHETIC}",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_epochs=2",
        *SMALL,
        cwd=tmp_path,
    )
    run_dir = root / "logs" / "version_0"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (run_dir / "metrics.csv").is_file()
    assert list(run_dir.glob("events.out.tfevents.*")), "TensorBoard log missing"
    _flexrec(
        "validate",
        f"--config={SYNTHETIC}",
        f"--trainer.default_root_dir={root}",
        f"--ckpt_path={ckpt}",
        *SMALL,
        cwd=tmp_path,
    )
    record = json.loads((run_dir / "run.json").read_text())
    assert record["seed"] == 0 and record["config"]["model"]["reward"] == "swap"
    assert (
        record["versions"]["torch"]
        and "flexrec.rewards.builtin (flexrec 0.1.0)" in record["plugins"]
    )
    assert "train/loss" in record["metrics"]["fit"]
    validated = json.loads((root / "logs" / "version_1" / "run.json").read_text())
    assert 0.0 < validated["metrics"]["validate"]["val/ndcg@5/maximize_interest"] <= 1.0
    # the per-task metrics of the split evaluated, next to each run record
    assert (run_dir / "tasks_val.csv").is_file()
    rows = read_task_metrics(root / "logs" / "version_1" / "tasks_val.csv")
    assert len(rows) == 3 * 32 and rows[0]["who"] == "policy" and rows[0]["user"] == "0"
    interest = [
        r["ndcg@5"] for r in rows if r["who"] == "policy" and r["need"] == "maximize_interest"
    ]
    logged = validated["metrics"]["validate"]["val/ndcg@5/maximize_interest"]
    assert sum(interest) / len(interest) == pytest.approx(logged, abs=1e-6)
    # the tasks seen travel with the checkpoint
    assert torch.load(ckpt, weights_only=False)["flexrec_tasks_seen"] == 2 * 64


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--model.reward=swapp", "unknown reward 'swapp' (did you mean 'swap'?); valid:"),
        (
            "--model.estimator={name: grpo, args: {scal: group}}",
            "estimator 'grpo': unknown argument 'scal' (did you mean 'scale'?)",
        ),
        ("--model.policy={name: native, args: {dim: -3}}", "policy 'native':"),
        ("--model.group_sizee=3", "group_sizee"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path: Path, override: str, message: str) -> None:
    proc = _flexrec("fit", f"--config={SYNTHETIC}", override, *SMALL, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flexrec: error: "), proc.stderr[-2000:]
    assert message in lines[0]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.ckpt"))


def test_cli_fit_tiny_llm_with_lora_then_validate(tmp_path: Path, tiny_llm_path: Path) -> None:
    root = tmp_path / "llm"
    policy = f"--model.policy={{name: llm, args: {{model: {tiny_llm_path}, lora: {{r: 4}}}}}}"
    _flexrec(
        "fit",
        f"--config={SYNTHETIC}",
        policy,
        "--model.group_size=4",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        *SMALL,
        f"--trainer.default_root_dir={root}",
        cwd=tmp_path,
    )
    ckpt = root / "logs" / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)
    assert state["global_step"] == 2
    assert any("lora_A" in key for key in state["state_dict"])
    # only what training changed is saved: the frozen base weights are rebuilt from the config
    assert not any("base_layer" in key or "embed_tokens" in key for key in state["state_dict"])
    assert state["flexrec_rebuilt"]["count"] > 0
    _flexrec(
        "validate",
        f"--config={SYNTHETIC}",
        policy,
        f"--ckpt_path={ckpt}",
        *SMALL,
        f"--trainer.default_root_dir={root}",
        cwd=tmp_path,
    )
    record = json.loads((root / "logs" / "version_1" / "run.json").read_text())
    assert record["metrics"]["validate"]["val/valid_rate/maximize_interest"] == 1.0


def test_cli_quickstart_config_on_the_embedded_dataset(tmp_path: Path) -> None:
    root = tmp_path / "qs"
    _flexrec(
        "fit",
        f"--config={REPO / 'configs' / 'quickstart.yaml'}",
        "--trainer.max_epochs=1",
        "--data.init_args.max_train_tasks=64",
        "--data.init_args.max_eval_tasks=32",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        cwd=tmp_path,
    )
    metrics = _final_metrics(root / "logs" / "version_0")
    assert metrics["val_oracle/ndcg@5/maximize_interest"] == pytest.approx(1.0)
    assert 0.0 < metrics["val_feature_popularity/ndcg@5/maximize_interest"] < 1.0


def test_missing_data_path_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = _flexrec(
        "fit",
        f"--config={REPO / 'configs' / 'quickstart.yaml'}",
        "--data.init_args.dataset=ml-100k",
        f"--data.init_args.root={tmp_path / 'nowhere'}",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flexrec: error: "), proc.stderr[-2000:]
    assert "ml-100k" in lines[0]
    assert not (tmp_path / "run").exists()


def _final_metrics(run_dir: Path) -> dict[str, float]:
    record = json.loads((run_dir / "run.json").read_text())
    return {k: v for k, v in record["metrics"]["fit"].items() if k.startswith("val")}


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    # 4 optimizer steps per epoch; the process SIGKILLs itself after step 6 (mid epoch 2), when
    # the last checkpoint is the one written at the end of epoch 1.
    args = (f"--config={SYNTHETIC}", "--trainer.max_epochs=4", *SMALL)
    _flexrec("fit", *args, f"--trainer.default_root_dir={tmp_path / 'full'}", cwd=tmp_path)
    expected = _final_metrics(tmp_path / "full" / "logs" / "version_0")

    root = tmp_path / "killed"
    proc = _flexrec(
        "fit",
        *args,
        f"--trainer.default_root_dir={root}",
        "--trainer.callbacks+=flexrec.testing.faults.KillAtStep",
        "--trainer.callbacks.step=6",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL
    run_dir = root / "logs" / "version_0"
    assert not (run_dir / "run.json").exists()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 4

    resumed = tmp_path / "resumed"
    _flexrec(
        "fit",
        *args,
        f"--trainer.default_root_dir={resumed}",
        f"--ckpt_path={ckpt}",
        cwd=tmp_path,
    )
    got = _final_metrics(resumed / "logs" / "version_0")
    assert got.keys() == expected.keys() and expected
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path: Path) -> None:
    root = tmp_path / "ddp"
    _flexrec(
        "fit",
        f"--config={SYNTHETIC}",
        "--trainer.max_epochs=1",
        *SMALL,
        f"--trainer.default_root_dir={root}",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        cwd=tmp_path,
    )
    run_dir = root / "logs" / "version_0"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    # 64 tasks / batch 16 = 4 batches, split over 2 ranks: 2 optimizer steps each.
    assert ckpt["global_step"] == 2
    metrics = _final_metrics(run_dir)
    assert 0.0 < metrics["val/ndcg@5/maximize_interest"] <= 1.0


def test_cli_predict_writes_rankings_of_item_ids(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _flexrec(
        "fit",
        f"--config={SYNTHETIC}",
        "--trainer.max_epochs=1",
        *SMALL,
        f"--trainer.default_root_dir={root}",
        cwd=tmp_path,
    )
    ckpt = root / "logs" / "version_0" / "checkpoints" / "last.ckpt"
    module = FlexRecModule.load_from_checkpoint(ckpt, weights_only=False)
    data = SyntheticDataModule(num_train=64, num_val=32, batch_size=16)
    trainer = _trainer(epochs=1)
    batches = trainer.predict(module, data)
    rows = [row for batch in batches for row in batch]
    assert len(rows) == 32
    val = data.val
    for i, row in enumerate(rows):
        assert sorted(row["ranking"]) == sorted(val.candidate_ids[i].tolist())
        assert row["task"] == i and row["dataset"] == "synthetic"


@pytest.mark.parametrize("lora", [{"r": 4}, False], ids=["lora", "full"])
def test_checkpoints_leave_out_frozen_pretrained_weights(tiny_llm_path: Path, lora: object) -> None:
    from dataclasses import asdict

    from flexrec.errors import ConfigError

    info = asdict(SyntheticDataModule(num_candidates=6).info)

    def build() -> FlexRecModule:
        policy = {"name": "llm", "args": {"model": str(tiny_llm_path), "lora": lora}}
        return FlexRecModule(policy=policy, group_size=2, data_info=info)

    trained = build()
    with torch.no_grad():  # stand-in for training: change every trainable tensor
        for p in trained.policy.trainable_parameters():
            p.add_(0.01)
    full = {k: v.clone() for k, v in trained.state_dict().items()}
    checkpoint = {"state_dict": dict(full)}
    trained.on_save_checkpoint(checkpoint)
    kept = set(checkpoint["state_dict"])
    dropped = set(full) - kept
    assert dropped and checkpoint["flexrec_rebuilt"]["count"] == len(dropped)
    if lora:
        assert all("lora_" in k for k in kept if k.startswith("policy.model."))
    else:  # the trained model is kept, its frozen reference copy is rebuilt
        assert all(k.startswith("policy.reference_model.") for k in dropped)
    restored = build()
    restored.on_load_checkpoint(checkpoint)
    restored.load_state_dict(checkpoint["state_dict"])  # strict: every key is back
    for key, value in restored.state_dict().items():
        torch.testing.assert_close(value, full[key], msg=key)
    # a different base model than the one trained with is refused
    checkpoint["state_dict"] = {k: full[k] for k in kept}
    other = build()
    with torch.no_grad():
        other.state_dict()[sorted(dropped)[0]].add_(1.0)
    with pytest.raises(ConfigError, match="differs from the one it was trained with"):
        other.on_load_checkpoint(checkpoint)
