"""The LLM policy on several processes and in mixed precision, on CPU.

- One DDP step on 2 processes (gloo) equals the single-process step on the same 4 tasks, to 1e-5
  (LoRA, and full fine-tuning through the token trie).
- Gradient clipping happens right before the optimiser step (after AMP unscaling).
- ``bf16-mixed`` autocast and bf16 weights keep the policy's log-probabilities in float32.
- Without CUDA, ``benchmarks/perf/llm_gpu.py`` exits with a one-line message.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from flexrec.module import FlexRecModule
from flexrec.testing.batches import make_batch
from flexrec.testing.synthetic import SyntheticDataModule

from .ddp_step import CONFIGS, one_step, one_step_trainer

REPO = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("ddp_step.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_one_ddp_step_equals_the_single_process_step(tiny_llm_path: Path, tmp_path: Path) -> None:
    """The same 4 tasks and rollouts: 2 ranks of 2 tasks (DDP, gloo) vs 1 process with all 4.

    DDP averages the ranks' gradients, so this holds because the loss is a mean over tasks (the
    clipped objective's mean over the ``B x G x K`` placed items, every task having ``G x K``)
    and the two ranks hold the same number of tasks.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": "2",
        "NODE_RANK": "0",
    }
    procs = []
    for rank in range(2):
        log = (tmp_path / f"rank{rank}.log").open("w")
        cmd = [sys.executable, str(HELPER), "--model", str(tiny_llm_path)]
        cmd += ["--out", str(tmp_path / f"rank{rank}.pt")]
        rank_env = {**env, "LOCAL_RANK": str(rank), "RANK": str(rank)}
        procs.append(subprocess.Popen(cmd, env=rank_env, stdout=log, stderr=subprocess.STDOUT))
    try:  # the single-process reference, while the ranks run
        expected = {name: one_step(str(tiny_llm_path), name) for name in CONFIGS}
        for proc in procs:
            proc.wait(timeout=600)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, proc in enumerate(procs):
        log = (tmp_path / f"rank{rank}.log").read_text()
        assert proc.returncode == 0, f"rank {rank}:\n{log[-3000:]}"
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    for name in CONFIGS:
        grads = expected[name]["grads"]
        assert max(g.abs().max().item() for g in grads.values()) > 1e-3, name  # not vacuous
        for kind in ("grads", "params"):
            want = expected[name][kind]
            for rank, got in enumerate(ranks):
                assert got[name][kind].keys() == want.keys()
                gap = max((got[name][kind][k] - v).abs().max().item() for k, v in want.items())
                assert gap <= 1e-5, (name, kind, rank, gap)


def _fit_one_step(
    policy_args: dict[str, object], precision: str = "32-true", **module_args: object
) -> FlexRecModule:
    L.seed_everything(0, verbose=False)
    data = SyntheticDataModule(num_train=2, num_val=2, num_candidates=5, batch_size=2)
    module = FlexRecModule(policy={"name": "llm", "args": policy_args}, group_size=3, **module_args)
    trainer = one_step_trainer(accelerator="cpu", devices=1, precision=precision)
    trainer.fit(module, data)
    return module


def test_gradient_clipping_happens_right_before_the_optimizer_step(tiny_llm_path: Path) -> None:
    """``max_grad_norm`` is applied in ``on_before_optimizer_step`` (after AMP unscaling)."""
    module = _fit_one_step({"model": str(tiny_llm_path), "lora": {"r": 4}}, max_grad_norm=1e-4)
    grads = [p.grad for p in module.policy.trainable_parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert norm.item() == pytest.approx(1e-4, rel=1e-3)


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_identifier_and_edge_scores_leave_autocast(
    tiny_llm_path: Path, weights: torch.dtype
) -> None:
    """The head projections run outside autocast, in float32 even for bf16 weights: exactly the
    float32 products of the same numbers."""
    from transformers import AutoModelForCausalLM

    from flexrec.policies import decoding as D
    from flexrec.policies import trie_decoding as TD
    from flexrec.policies.trie import IdentifierTrie

    lm = AutoModelForCausalLM.from_pretrained(tiny_llm_path, dtype=weights)
    head = lm.get_output_embeddings().weight.float()
    hidden = torch.randn(3, 2, lm.config.hidden_size).to(weights)
    ids = torch.tensor([5, 7, 9])
    trie = IdentifierTrie([[5, 1], [5, 2], [7]])  # internal nodes: the root and [5]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = D.identifier_scores(lm, hidden[:, 0], ids)
        edges = TD.edge_scores(lm, hidden, trie)
    assert scores.dtype == edges.dtype == torch.float32
    torch.testing.assert_close(scores, hidden[:, 0].float() @ head[ids].T)
    parents = hidden.float()[:, trie.edge_parent]
    torch.testing.assert_close(edges, (parents * head[trie.edge_token]).sum(-1))


def test_bf16_autocast_keeps_float32_log_probs(tiny_llm_path: Path) -> None:
    """Under CPU bf16 autocast (what ``precision=bf16-mixed`` turns on) the model runs in bf16,
    but every log-probability is float32 and close to the float32 ones (bf16 activations)."""
    from flexrec.policies.llm import LLMPolicy

    torch.manual_seed(0)
    policy = LLMPolicy(model=str(tiny_llm_path), lora={"r": 4}, identifier_mode="trie").eval()
    batch = make_batch(batch_size=2, num_candidates=5, seed=0)
    rollout = policy.sample(batch, 3)
    want = policy.log_probs(batch, rollout.permutations)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sampled = policy.sample(batch, 3)
        logprobs, steps = policy.log_probs(batch, rollout.permutations)
        ref = policy.reference_log_probs(batch, rollout.permutations)[1]
    assert sampled.logprobs.dtype == logprobs.dtype == steps.dtype == ref.dtype == torch.float32
    finite = want > -torch.inf
    assert torch.equal(finite, steps > -torch.inf)
    assert (steps[finite] - want[finite]).abs().max().item() < 0.1
    logprobs.sum().backward()
    grads = [p.grad for p in policy.trainable_parameters()]
    assert all(g is not None and g.dtype == torch.float32 and g.isfinite().all() for g in grads)


def test_bf16_mixed_training_step(tiny_llm_path: Path) -> None:
    """One Lightning step with ``precision=bf16-mixed`` (float32 weights, bf16 autocast):
    finite float32 gradients."""
    module = _fit_one_step({"model": str(tiny_llm_path), "lora": {"r": 4}}, precision="bf16-mixed")
    params = module.policy.trainable_parameters()
    assert params and all(p.dtype == torch.float32 for p in params)
    assert all(p.grad is not None and p.grad.isfinite().all() for p in params)
    assert any(p.grad.abs().max() > 0 for p in params if p.grad is not None)


def test_lora_over_bf16_base_weights(tiny_llm_path: Path) -> None:
    """``dtype: bfloat16`` with LoRA: the frozen base is bf16, the adapters (peft) and their
    gradients float32, the log-probabilities float32."""
    from flexrec.policies.llm import LLMPolicy

    policy = LLMPolicy(model=str(tiny_llm_path), lora={"r": 4}, dtype="bfloat16")
    frozen = [p for p in policy.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    batch = make_batch(batch_size=1, num_candidates=3, history_lengths=[1], seed=0)
    logprobs, _ = policy.log_probs(batch, torch.tensor([[[2, 0, 1], [1, 2, 0]]]))
    assert logprobs.dtype == torch.float32 and logprobs.isfinite().all()
    logprobs.sum().backward()
    params = policy.trainable_parameters()
    assert params and all(p.dtype == torch.float32 for p in params)
    assert all(p.grad is not None and p.grad.isfinite().all() for p in params)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_the_gpu_benchmark_script_says_so_in_one_line_without_cuda() -> None:
    script = REPO / "benchmarks" / "perf" / "llm_gpu.py"
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 1 and not proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--device cpu" in lines[0]
