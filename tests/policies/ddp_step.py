"""One ``FlexRecModule`` training step of the LLM policy, in one process or as one DDP rank.

Used by ``test_llm_distributed.py``: the test runs :func:`one_step` in its own process (one
device, the whole batch) and starts this file twice as a script, as the two ranks of a gloo
process group (the environment of ``torchrun``: ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``,
``NODE_RANK``, ``LOCAL_RANK``), so that Lightning's DDP strategy joins them instead of launching
processes itself. Each rank writes its trainable parameters and their gradients after the step.

For the two runs to see the same rollouts, the policy samples each task on its own, from a
generator seeded by the task's id (:func:`sample_per_task`); the run's own seeding depends on the
rank (``FlexRecModule.training_step``), so that ranks draw different rollouts in real runs.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

CONFIGS: dict[str, dict[str, Any]] = {
    # LoRA with random B (not the zero init), so that both adapter matrices get gradients and
    # the reference policy (adapters disabled) differs from the trained one: the KL term counts.
    "lora": {"lora": {"r": 4, "init_lora_weights": False}},
    # full fine-tuning (a frozen reference copy), through the token-trie decoding path
    "full": {"lora": None, "identifier_mode": "trie"},
}
TASKS = 4  # the global batch: 4 tasks on one process, 2 per rank on two


def sample_per_task(policy: Any) -> None:
    """Make ``policy.sample`` draw every task's rollouts alone, seeded by the task's id, so the
    rollouts of a task do not depend on the batch it is in, the rank or the global RNG state."""
    from flexrec.types import Rollout

    sample = policy.sample

    def per_task(batch: Any, group_size: int, temperature: float = 1.0) -> Rollout:
        parts = []
        for i in range(batch.batch_size):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1_000 + int(batch.meta[i]["task"]))
                parts.append(sample(batch.select([i]), group_size, temperature))
        return Rollout(
            permutations=torch.cat([p.permutations for p in parts]),
            logprobs=torch.cat([p.logprobs for p in parts]),
            step_logprobs=torch.cat([p.step_logprobs for p in parts]),
        )

    policy.sample = per_task


def one_step_trainer(**settings: Any) -> Any:
    """A Lightning trainer for one optimiser step, without validation, logging or checkpoints."""
    import lightning as L

    return L.Trainer(
        max_steps=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **settings,
    )


def one_step(model: str, config: str, world_size: int = 1) -> dict[str, dict[str, torch.Tensor]]:
    """One optimiser step of FlexRec RL on the first :data:`TASKS` synthetic tasks.

    One prompt per forward pass and one backward pass per task (``micro_batch_size: 1`` for the
    policy and the module), so the arithmetic of a task does not depend on which tasks share its
    pass (left padding would change it by ~1e-5 in float32), and the per-micro-batch backward
    passes go through DDP's ``no_sync`` path. The KL term is on (the reference policy runs).
    Gradient clipping is off and the optimiser is plain SGD, so that a wrong gradient scale (a sum
    over ranks instead of a mean) cannot hide behind either: AdamW's first step is close to
    ``lr * sign(gradient)``, which ignores the scale and turns the float32 rounding of gradients
    near zero into parameter differences of up to ``lr``.

    Returns:
        ``{"params": {name: tensor}, "grads": {name: tensor}}`` of the policy's trainable
        parameters after the step (the gradients are those of the step).
    """
    import lightning as L

    from flexrec.module import FlexRecModule
    from flexrec.testing.synthetic import SyntheticDataModule

    L.seed_everything(0, verbose=False)
    data = SyntheticDataModule(
        num_train=TASKS, num_val=2, num_candidates=5, batch_size=TASKS // world_size
    )
    args = {"model": model, "micro_batch_size": 1, **CONFIGS[config]}
    module = FlexRecModule(
        policy={"name": "llm", "args": args},
        group_size=4,
        micro_batch_size=1,
        kl_coef=0.05,
        entropy_coef=0.01,
        max_grad_norm=None,
        data_info=asdict(data.info),
    )
    sample_per_task(module.policy)
    module.configure_optimizers = lambda: torch.optim.SGD(
        module.policy.trainable_parameters(), lr=0.1
    )
    trainer = one_step_trainer(
        accelerator="cpu", devices=world_size, strategy="ddp" if world_size > 1 else "auto"
    )
    trainer.fit(module, data)
    assert module.tasks_seen == TASKS // world_size
    named = [(n, p) for n, p in module.policy.named_parameters() if p.requires_grad]
    assert named and all(p.grad is not None for _, p in named)
    return {
        "params": {n: p.detach().clone() for n, p in named},
        "grads": {n: p.grad.detach().clone() for n, p in named if p.grad is not None},
    }


def main() -> None:
    """Run every configuration as one rank of a 2-process DDP group; save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    world_size = int(os.environ["WORLD_SIZE"])
    results = {name: one_step(args.model, name, world_size) for name in CONFIGS}
    torch.save(results, args.out)


if __name__ == "__main__":
    main()
