"""The LLM policy on CUDA against CPU float32: sampling, log-probs and one training step.

Marked ``gpu`` and skipped without a CUDA device (``make test`` deselects them: ``-m "not gpu"``);
run them on a GPU machine with ``.venv/bin/python -m pytest -m gpu tests/policies/test_llm_gpu.py``.
``FLEXREC_GPU_TEST_DEVICE=cpu`` runs the same code with the "GPU" side on the CPU, a dry run of
the tests themselves on a machine without CUDA (the comparisons are then CPU against CPU).

Tolerances: float32 on CUDA computes the same function as on the CPU with other kernels
(reduction orders, attention kernels), so log-probabilities agree to ~1e-5 and gradients to
~1e-4 relative; ``bf16-mixed`` rounds activations to 8 bits of mantissa, so its log-probabilities
are only within ~0.1 of float32 and its gradient points the same way (cosine > 0.95).
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from flexrec.module import FlexRecModule
from flexrec.policies.base import rollout_from_steps
from flexrec.testing.batches import make_batch
from flexrec.testing.synthetic import SyntheticDataModule
from flexrec.types import RankingBatch, Rollout

from .ddp_step import one_step_trainer

DEVICE = torch.device(os.environ.get("FLEXREC_GPU_TEST_DEVICE", "cuda"))

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]

CONFIGS = {
    "lora": {"lora": {"r": 4, "init_lora_weights": False}},
    "lora_trie": {"lora": {"r": 4, "init_lora_weights": False}, "identifier_mode": "trie"},
    "full": {"lora": None},
}


def _policy(tiny_llm_path: Path, config: str) -> Any:
    from flexrec.policies.llm import LLMPolicy

    torch.manual_seed(0)
    return LLMPolicy(model=str(tiny_llm_path), micro_batch_size=2, **CONFIGS[config]).eval()


def _valid(permutations: torch.Tensor) -> bool:
    k = permutations.shape[-1]
    return bool((permutations.sort(-1).values == torch.arange(k, device=permutations.device)).all())


@pytest.mark.parametrize("config", list(CONFIGS))
def test_sampling_on_the_device(tiny_llm_path: Path, config: str) -> None:
    """Rollouts sampled on the device are valid permutations, every tensor stays there, and the
    sampled log-probs equal the teacher-forced ones (shared-prefill sampling vs one pass)."""
    policy = _policy(tiny_llm_path, config).to(DEVICE)
    batch = make_batch(batch_size=3, num_candidates=6, seed=0).to(DEVICE)
    torch.manual_seed(0)
    rollout = policy.sample(batch, 4)
    assert rollout.permutations.device.type == DEVICE.type and _valid(rollout.permutations)
    assert rollout.logprobs.dtype == torch.float32 and rollout.step_logprobs is not None
    logprobs, _ = policy.log_probs(batch, rollout.permutations)
    assert logprobs.device.type == DEVICE.type
    torch.testing.assert_close(logprobs, rollout.logprobs, atol=1e-4, rtol=1e-4)
    ranking = policy.rank(batch)
    assert ranking.device.type == DEVICE.type and _valid(ranking)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_log_probs_on_the_device_match_cpu_float32(tiny_llm_path: Path, config: str) -> None:
    """The same weights, tasks and rankings: the device's log-probs, reference log-probs and
    gradients match the CPU's in float32."""
    cpu = _policy(tiny_llm_path, config)
    device = copy.deepcopy(cpu).to(DEVICE)
    batch = make_batch(batch_size=3, num_candidates=6, seed=1)
    permutations = torch.stack([torch.randperm(6) for _ in range(3 * 4)]).reshape(3, 4, 6)
    want, want_steps = cpu.log_probs(batch, permutations)
    got, got_steps = device.log_probs(batch.to(DEVICE), permutations.to(DEVICE))
    torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=1e-4)
    finite = want_steps > -torch.inf
    assert torch.equal((got_steps > -torch.inf).cpu(), finite)
    torch.testing.assert_close(got_steps.cpu()[finite], want_steps[finite], atol=1e-5, rtol=1e-4)
    ref = device.reference_log_probs(batch.to(DEVICE), permutations.to(DEVICE))[1].cpu()
    torch.testing.assert_close(
        ref[finite], cpu.reference_log_probs(batch, permutations)[1][finite], atol=1e-5, rtol=1e-4
    )
    want.sum().backward()
    got.sum().backward()
    for (name, p), q in zip(cpu.named_parameters(), device.parameters(), strict=True):
        if p.requires_grad:
            assert p.grad is not None and q.grad is not None, name
            torch.testing.assert_close(q.grad.cpu(), p.grad, atol=1e-5, rtol=1e-3, msg=name)


def _fixed_rollouts(policy: Any) -> None:
    """``policy.sample`` returns fixed random permutations per task (the same on every device,
    unlike the CUDA and CPU random streams), with the policy's own log-probs of them."""

    def sample(batch: RankingBatch, g: int, temperature: float = 1.0) -> Rollout:
        k = batch.num_candidates
        perms = []
        for meta in batch.meta:
            gen = torch.Generator().manual_seed(int(meta["task"]))
            perms.append(torch.stack([torch.randperm(k, generator=gen) for _ in range(g)]))
        permutations = torch.stack(perms).to(batch.candidate_ids.device)
        with torch.no_grad():
            steps = policy.log_probs(batch, permutations)[1]
        return rollout_from_steps(permutations, steps)

    policy.sample = sample


def _train_step(tiny_llm_path: Path, config: str, device: torch.device, precision: str) -> dict:
    L.seed_everything(0, verbose=False)
    data = SyntheticDataModule(num_train=4, num_val=2, num_candidates=5, batch_size=4)
    args = {"model": str(tiny_llm_path), "micro_batch_size": 2, **CONFIGS[config]}
    module = FlexRecModule(
        policy={"name": "llm", "args": args},
        group_size=3,
        micro_batch_size=2,
        kl_coef=0.05,
        max_grad_norm=None,
        data_info=asdict(data.info),
    )
    _fixed_rollouts(module.policy)
    trainer = one_step_trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision
    )
    trainer.fit(module, data)
    named = [(n, p) for n, p in module.policy.named_parameters() if p.requires_grad]
    assert all(p.device.type == device.type for _, p in named)
    return {n: p.grad.detach().cpu() for n, p in named if p.grad is not None}


@pytest.mark.parametrize("config", ["lora", "full"])
def test_one_training_step_on_the_device_matches_cpu(tiny_llm_path: Path, config: str) -> None:
    """One Lightning step (sampling replaced by fixed rankings, the rest as in training): the
    float32 gradients on the device match the CPU's; under ``bf16-mixed`` they are finite and
    point the same way."""
    want = _train_step(tiny_llm_path, config, torch.device("cpu"), "32-true")
    got = _train_step(tiny_llm_path, config, DEVICE, "32-true")
    assert got.keys() == want.keys() and want
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-3, msg=name)
    mixed = _train_step(tiny_llm_path, config, DEVICE, "bf16-mixed")
    flat_want = torch.cat([g.flatten() for g in want.values()])
    flat_mixed = torch.cat([mixed[n].flatten().float() for n in want])
    assert flat_mixed.isfinite().all()
    cosine = torch.nn.functional.cosine_similarity(flat_mixed, flat_want, dim=0).item()
    assert cosine > 0.95, cosine
