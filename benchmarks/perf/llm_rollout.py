"""Rollout and RL-step cost of the LLM policy with SmolLM2-135M-Instruct on this CPU.

Prints, for one ~600-token ml-latest-small prompt with K = 20 candidates and G = 8 rollouts:

- constrained sampling time with the prompt prefilled once and its cache shared by the 8 rollouts,
  versus prefilling each rollout's prompt (targets: <= 4 s and >= 3x faster);
- the valid-permutation rate of constrained decoding (100 %) versus the raw rate of the free-text
  mode (generate, parse, repair);
- one LoRA RL step (sample 8 rollouts, recompute log-probs with gradients sharing the prompt's
  forward pass, pi_ref log-probs, clipped loss, backward, optimizer step): time and peak RSS
  (targets <= 30 s and <= 4 GB; aim <= 8 s).

Run: ``.venv/bin/python benchmarks/perf/llm_rollout.py [--threads 2] [--data DIR]``.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from flexrec.objectives import policy_loss
from flexrec.policies.free_text import free_text_rankings
from flexrec.policies.llm import LLMPolicy
from flexrec.testing.batches import movielens_task

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-latest-small"


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    """Best wall time over ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    """Run the benchmark and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--prompt-tokens", type=int, default=600)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--free-text-tokens", type=int, default=80)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = args.group

    batch = movielens_task(args.data, user_id=1, history_length=20, num_candidates=20)
    policy = LLMPolicy(model="smollm2", lora=True, max_prompt_tokens=args.prompt_tokens)
    prompt_len = len(policy.prompt_ids(batch)[0])
    print(
        f"prompt tokens: {prompt_len}, K = {batch.num_candidates}, G = {g}, "
        f"threads = {args.threads}"
    )
    policy.sample(batch, 1)  # warm-up

    shared_s, rollout = timed(lambda: policy.sample(batch, g), repeats=2)
    with torch.no_grad():
        recomputed, _ = policy.log_probs(batch, rollout.permutations)
    drift = (recomputed - rollout.logprobs).abs().max().item()
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-4)

    def rl_step() -> float:
        rollout = policy.sample(batch, g)
        advantages = torch.randn(1, g, 20)
        _, ref_steps = policy.reference_log_probs(batch, rollout.permutations)
        logprobs, steps = policy.log_probs(batch, rollout.permutations)
        loss = policy_loss(logprobs, rollout.logprobs, advantages, steps, ref_steps).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    step_s, _ = timed(rl_step, repeats=2)
    step_rss = peak_rss_gb()

    repeated = batch.select([0] * g)
    policy.micro_batch_size = g
    per_rollout_s, _ = timed(lambda: policy.sample(repeated, 1))
    policy.micro_batch_size = 4
    perms = rollout.permutations
    valid = (perms.sort(-1).values == torch.arange(20)).all(-1).float().mean().item()
    free_s, free = timed(
        lambda: free_text_rankings(
            policy, batch, group_size=g, max_new_tokens=args.free_text_tokens, temperature=1.0
        )
    )

    print(f"{g} rollouts, shared prefill:      {shared_s:6.2f} s  (target <= 4 s)")
    print(f"{g} rollouts, prefill per rollout: {per_rollout_s:6.2f} s")
    print(f"speed-up:                        {per_rollout_s / shared_s:6.2f} x (target >= 3x)")
    print(f"max |sample - log_probs| log-prob: {drift:.2e}")
    print(f"valid permutations, constrained: {100 * valid:5.1f} %")
    print(
        f"valid permutations, free text:   {100 * free.valid_rate:5.1f} % "
        f"({g} answers of <= {args.free_text_tokens} tokens, {free_s:.1f} s)"
    )
    print(f"  e.g. {free.texts[0][0][:120]!r}")
    print(
        f"LoRA RL step (sample + ref + train pass + update): {step_s:6.2f} s "
        "(target <= 30 s, aim <= 8 s)"
    )
    print(f"peak RSS after the RL steps: {step_rss:.2f} GB (target <= 4 GB)")
    print(f"peak RSS at the end (incl. per-rollout prefill, free text): {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
