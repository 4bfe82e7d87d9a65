"""Score a ranking with a flexrec LLM export, using only transformers and peft (no flexrec).

    python score_with_peft.py EXPORT_FOLDER < task.json

``task.json`` holds ``{"instruction": ..., "history": [lines], "candidates": [lines],
"ranking": [candidate indices, best first]}``; the script prints the prompt's token ids and, for
each step of the ranking, the log-probability of every candidate (``null`` for the candidates
already placed) as JSON.
"""

import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(folder):
    """The export's manifest, tokenizer and model (the adapter on its base model, or the full
    fine-tuned model)."""
    with open(f"{folder}/flexrec_export.json") as handle:
        manifest = json.load(handle)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    dtype = getattr(torch, manifest["dtype"])
    if manifest["weights"] == "lora_adapter":
        base = AutoModelForCausalLM.from_pretrained(manifest["base_model"], dtype=dtype)
        model = PeftModel.from_pretrained(base, folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return manifest, tokenizer, model.eval()


def prompt_ids(manifest, tokenizer, instruction, history, candidates):
    """The prompt's token ids: chat messages, generation prompt, answer prefix; the oldest history
    lines are dropped while it is longer than max_prompt_tokens."""
    p = manifest["prompt"]
    k = len(candidates)
    identifiers = p["identifiers_by_count"].get(str(k)) or p["identifiers"][:k]
    lines = "\n".join(
        p["candidate_line"].format(label=i.strip(), identifier=i, text=c)
        for i, c in zip(identifiers, candidates, strict=True)
    )
    history = list(history)
    while True:
        block = "\n".join(p["history_line"].format(text=h) for h in history) or p["empty_history"]
        user = p["user_message"].format(
            instruction=instruction, history=block, candidates=lines, count=k
        )
        messages = [{"role": "system", "content": p["system_prompt"]}] if p["system_prompt"] else []
        messages.append({"role": "user", "content": user})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer.encode(text + p["answer_prefix"], add_special_tokens=False)
        limit = p["max_prompt_tokens"]
        if limit is None or len(ids) <= limit or not history:
            return ids, identifiers
        history = history[1:]


@torch.no_grad()
def step_log_probs(model, tokenizer, ids, identifiers, ranking):
    """Per step of ``ranking``, the log-probabilities of the candidates (None once placed): the
    next-token logits renormalised over the identifier tokens of the remaining candidates."""
    tokens = [tokenizer.encode(i, add_special_tokens=False) for i in identifiers]
    assert all(len(t) == 1 for t in tokens), "this recipe covers single-token identifiers"
    tokens = torch.tensor([t[0] for t in tokens])
    # the prompt followed by the ranking's identifier tokens, in one forward pass
    sequence = torch.tensor([ids + [int(tokens[c]) for c in ranking[:-1]]])
    logits = model(input_ids=sequence).logits[0, len(ids) - 1 :].double()
    steps, placed = [], torch.zeros(len(identifiers), dtype=torch.bool)
    for step, chosen in enumerate(ranking):
        scores = logits[step, tokens].masked_fill(placed, float("-inf"))
        logp = torch.log_softmax(scores, -1)
        steps.append([None if placed[c] else float(logp[c]) for c in range(len(identifiers))])
        placed[chosen] = True
    return steps


if __name__ == "__main__":
    task = json.load(sys.stdin)
    manifest, tokenizer, model = load(sys.argv[1])
    ids, identifiers = prompt_ids(
        manifest, tokenizer, task["instruction"], task["history"], task["candidates"]
    )
    steps = step_log_probs(model, tokenizer, ids, identifiers, task["ranking"])
    print(json.dumps({"prompt_ids": ids, "step_logprobs": steps}))
