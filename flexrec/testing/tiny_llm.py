"""A tiny random causal LM with a locally trained tokenizer, for offline tests.

:func:`build_tiny_llm` writes a random Llama (hidden 192, 4 layers, 4 heads, 2 KV heads, vocab 4096)
and a byte-level BPE tokenizer trained by ``tokenizers`` on a synthetic corpus that contains ranking
prompts, so that `` A`` … `` Z`` are single tokens. It needs no network and builds in seconds::

    from flexrec.testing.tiny_llm import build_tiny_llm

    path = build_tiny_llm(tmp_path / "tiny")
    policy = LLMPolicy(model=str(path))
"""

from __future__ import annotations

import random
import string
from pathlib import Path

__all__ = ["CHATML_TEMPLATE", "build_tiny_llm", "tiny_corpus"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_WORDS_TEXT = (
    "the a of and to in movie film story love war comedy drama action adventure animation "
    "children fantasy romance thriller crime horror mystery sci-fi documentary musical western "
    "user watched rated recommend rank candidates history need explore new topics interest trend "
    "popular recent views rating mean count genres title year stars best worst like dislike"
)


def tiny_corpus(num_lines: int = 3000, seed: int = 0) -> list[str]:
    """Synthetic training text for the tiny tokenizer (ranking prompts and answers).

    Args:
        num_lines: number of lines.
        seed: random seed.

    Returns:
        ``num_lines`` strings.
    """
    rng = random.Random(seed)
    words_pool = _WORDS_TEXT.split()
    letters = list(string.ascii_uppercase)
    lines = []
    for i in range(num_lines):
        words = " ".join(rng.choice(words_pool) for _ in range(rng.randint(4, 12)))
        if i % 3 == 0:
            rng.shuffle(letters)
            lines.append("Ranking: " + " ".join(letters))
        elif i % 3 == 1:
            letter = rng.choice(letters)
            lines.append(f"[{letter}] {words.title()} ({rng.randint(1950, 2018)}) rating {i % 5}.5")
        else:
            lines.append(words)
    return lines


def build_tiny_llm(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Llama and its tokenizer to ``directory`` (``save_pretrained`` layout).

    Args:
        directory: output folder (created; an existing complete build is reused).
        seed: seed of the tokenizer corpus and the weights.

    Returns:
        The folder, loadable with ``AutoModelForCausalLM.from_pretrained`` and
        ``AutoTokenizer.from_pretrained``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(directory)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tiny_corpus(seed=seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=4096,
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Larger random weights than the default init, so the random model has peaked distributions.
    embeddings = model.get_input_embeddings()
    assert isinstance(embeddings, torch.nn.Embedding)
    with torch.no_grad():
        embeddings.weight.normal_(0.0, 0.15)
    model.save_pretrained(out)
    return out
