"""Objectives in FlexRecModule: supervised training, micro-batched backward passes, warm start."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from flexrec.errors import ConfigError
from flexrec.module import FlexRecModule
from flexrec.testing.synthetic import SyntheticDataModule

REPO = Path(__file__).resolve().parents[2]


def _trainer(
    callbacks: list[L.Callback] | None = None, root: Path | None = None, **kwargs: Any
) -> L.Trainer:
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks or [],
        default_root_dir=root,
        **kwargs,
    )


def test_listmle_teaches_the_native_policy_the_need_conditioned_ranking() -> None:
    L.seed_everything(0)
    data = SyntheticDataModule(num_train=256, num_val=128, num_candidates=8, batch_size=32)
    module = FlexRecModule(
        policy={"name": "native", "args": {"dim": 32}}, objective="listmle", lr=3e-3
    )
    trainer = _trainer(max_epochs=2)
    trainer.fit(module, data)
    assert {k for k in trainer.callback_metrics if k.startswith("train/")} == {
        "train/loss",
        "train/positions",
    }
    assert set(trainer.progress_bar_metrics) == {"train/loss"}
    (metrics,) = trainer.validate(module, data, verbose=False)
    for need in data.needs:
        learned, random = metrics[f"val/ndcg@5/{need}"], metrics[f"val_random/ndcg@5/{need}"]
        assert learned > random + 0.1, (need, learned, random)


class _Recorder(L.Callback):
    """The gradients before every optimiser step and the values logged after every batch."""

    def __init__(self) -> None:
        self.grads: list[dict[str, torch.Tensor]] = []
        self.logged: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: Any, optimizer: Any) -> None:
        self.grads.append(
            {
                name: p.grad.detach().clone()
                for name, p in pl_module.policy.named_parameters()
                if p.grad is not None
            }
        )

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.logged.append(
            {k: v.clone() for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        )


def _record(policy: dict[str, Any], objective: str, micro_batch_size: int | None) -> _Recorder:
    L.seed_everything(0)
    data = SyntheticDataModule(num_train=12, num_val=4, num_candidates=5, batch_size=6)
    module = FlexRecModule(
        policy=policy,
        objective=objective,
        group_size=2,
        minibatches=2,
        micro_batch_size=micro_batch_size,
        max_grad_norm=None,
    )
    recorder = _Recorder()
    _trainer([recorder], max_steps=4, limit_val_batches=0).fit(module, data)
    return recorder


@pytest.mark.parametrize("objective", ["clipped", "listmle"])
@pytest.mark.parametrize("policy", ["native", "llm"])
def test_micro_batches_accumulate_the_minibatch_gradient(
    policy: str, objective: str, request: pytest.FixtureRequest
) -> None:
    if policy == "llm":
        path = request.getfixturevalue("tiny_llm_path")
        spec: dict[str, Any] = {"name": "llm", "args": {"model": str(path), "lora": {"r": 4}}}
    else:
        spec = {"name": "native", "args": {"dim": 16}}
    whole = _record(spec, objective, None)
    micro = _record(spec, objective, 2)  # minibatches of 3 tasks: micro-batches of 2 and 1
    assert len(whole.grads) == len(micro.grads) == 4  # 2 batches x 2 minibatches
    for expected, got in zip(whole.grads, micro.grads, strict=True):
        assert expected.keys() == got.keys() and expected
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, rtol=0, atol=1e-6, msg=name)
        assert any(g.abs().max() > 1e-4 for g in expected.values())
    for expected, got in zip(whole.logged, micro.logged, strict=True):
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=key)


def test_micro_batch_size_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="micro_batch_size must be >= 1"):
        FlexRecModule(micro_batch_size=0)


class _WeightsAtStart(L.Callback):
    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.state = {k: v.detach().clone() for k, v in pl_module.policy.state_dict().items()}
        self.step = trainer.global_step


def _fit_and_save(module: FlexRecModule, data: Any, path: Path, steps: int = 2) -> Path:
    trainer = _trainer(max_steps=steps, limit_val_batches=0)
    trainer.fit(module, data)
    trainer.save_checkpoint(path)
    return path


def test_rl_warm_starts_from_a_listmle_checkpoint(tmp_path: Path) -> None:
    L.seed_everything(0)
    data = SyntheticDataModule(num_train=64, num_val=16, batch_size=16)
    policy = {"name": "native", "args": {"dim": 16}}
    supervised = FlexRecModule(policy=policy, objective="listmle", lr=1e-2)
    ckpt = _fit_and_save(supervised, data, tmp_path / "listmle.ckpt", steps=3)
    trained = {k: v.clone() for k, v in supervised.policy.state_dict().items()}

    L.seed_everything(1)  # another initialisation, overwritten by the warm start
    rl = FlexRecModule(policy=policy, init_from=str(ckpt), group_size=2)
    start = _WeightsAtStart()
    _trainer([start], max_steps=1, limit_val_batches=0).fit(rl, data)
    assert start.step == 0 and start.state.keys() == trained.keys()
    for key, value in trained.items():
        assert torch.equal(start.state[key], value), key
    # a fresh optimiser: Adam's state holds the one step this run took
    state = rl.trainer.optimizers[0].state_dict()["state"]
    assert {int(s["step"]) for s in state.values()} == {1}


def test_warm_start_of_a_lora_llm_restores_the_left_out_pretrained_weights(
    tmp_path: Path, tiny_llm_path: Path
) -> None:
    L.seed_everything(0)
    data = SyntheticDataModule(num_train=8, num_val=4, num_candidates=5, batch_size=4)
    policy = {"name": "llm", "args": {"model": str(tiny_llm_path), "lora": {"r": 4}}}
    supervised = FlexRecModule(policy=policy, objective="listmle", lr=1e-2)
    ckpt = _fit_and_save(supervised, data, tmp_path / "llm.ckpt", steps=1)
    assert torch.load(ckpt, weights_only=False)["flexrec_rebuilt"]["count"] > 0
    trained = {k: v.clone() for k, v in supervised.policy.state_dict().items()}

    rl = FlexRecModule(
        policy=policy, init_from=str(ckpt), group_size=2, data_info=asdict(data.info)
    )
    rl.load_policy_weights(str(ckpt))
    for key, value in rl.policy.state_dict().items():
        assert torch.equal(value, trained[key]), key


def test_a_checkpoint_of_another_policy_is_refused_in_one_line(tmp_path: Path) -> None:
    L.seed_everything(0)
    data = SyntheticDataModule(num_train=32, num_val=16, batch_size=16)
    info = asdict(data.info)
    small = FlexRecModule(policy={"name": "native", "args": {"dim": 16}}, objective="listmle")
    ckpt = _fit_and_save(small, data, tmp_path / "small.ckpt", steps=1)
    wide = FlexRecModule(policy={"name": "native", "args": {"dim": 32}}, data_info=info)
    with pytest.raises(
        ConfigError, match=r"not a checkpoint of this run's policy 'native': .*shape"
    ) as exc:
        wide.load_policy_weights(str(ckpt))
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="not a readable checkpoint") as exc:
        wide.load_policy_weights(str(tmp_path / "missing.ckpt"))
    assert "\n" not in str(exc.value)


def test_cli_init_from_a_missing_file_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flexrec.cli",
            "fit",
            f"--config={REPO / 'configs' / 'synthetic.yaml'}",
            f"--model.init_from={tmp_path / 'nowhere.ckpt'}",
            "--data.init_args.num_train=32",
            "--data.init_args.num_val=16",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
            "--trainer.enable_progress_bar=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=600,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flexrec: error: init_from "), proc.stderr
    assert "nowhere.ckpt" in lines[0] and "no checkpoint file there" in lines[0]


def test_resuming_a_warm_started_run_restores_its_own_checkpoint(tmp_path: Path) -> None:
    L.seed_everything(0)
    data = SyntheticDataModule(num_train=32, num_val=16, batch_size=16)
    policy = {"name": "native", "args": {"dim": 16}}
    source = _fit_and_save(
        FlexRecModule(policy=policy, objective="listmle"), data, tmp_path / "a.ckpt", steps=1
    )
    warm = FlexRecModule(policy=policy, init_from=str(source), group_size=2)
    own = _fit_and_save(warm, data, tmp_path / "b.ckpt", steps=1)
    saved = {k: v.clone() for k, v in warm.policy.state_dict().items()}
    source.unlink()  # a resumed run does not need the checkpoint it was warm-started from
    resumed = FlexRecModule(policy=policy, init_from=str(source), group_size=2)
    start = _WeightsAtStart()
    _trainer([start], max_steps=2, limit_val_batches=0).fit(resumed, data, ckpt_path=own)
    assert start.step == 1
    for key, value in saved.items():
        assert torch.equal(start.state[key], value), key
