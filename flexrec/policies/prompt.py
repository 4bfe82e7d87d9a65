"""Prompts and candidate identifiers of the LLM policy.

Candidates are labelled by short identifiers (default `` A`` … `` Z``, then `` a`` … `` z``). When they
are single, distinct tokens of the tokenizer, each ranking step emits exactly one token and
constrained decoding only needs the identifier rows of the output head: :func:`resolve_identifiers`
validates them per tokenizer and skips those that are not single tokens. Otherwise the LLM policy
falls back to multi-token identifiers decoded through a token trie
(:mod:`flexrec.policies.trie`); :func:`resolve_identifier_paths` picks their token paths.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from flexrec.types import RankingBatch

__all__ = [
    "CANDIDATE_TEMPLATES",
    "DEFAULT_CANDIDATE_TEMPLATE",
    "DEFAULT_IDENTIFIERS",
    "DEFAULT_SYSTEM_PROMPT",
    "EMPTY_HISTORY",
    "HISTORY_LINE",
    "USER_MESSAGE",
    "build_messages",
    "candidate_template",
    "encode_prompts",
    "resolve_identifier_paths",
    "resolve_identifiers",
]

DEFAULT_IDENTIFIERS: tuple[str, ...] = tuple(
    " " + c for c in string.ascii_uppercase + string.ascii_lowercase
)
DEFAULT_SYSTEM_PROMPT = (
    "You are a recommender system. Rank every candidate exactly once, best first, "
    "by writing their letters."
)


USER_MESSAGE = (
    "{instruction}\n\nMy recent history:\n{history}\n\nCandidates:\n{candidates}\n\n"
    "Answer with all {count} letters in order, best first."
)
"""The user message of a task's prompt (:func:`build_messages`): ``{history}`` is one
:data:`HISTORY_LINE` per history item (oldest first) or :data:`EMPTY_HISTORY`, ``{candidates}``
one candidate line per candidate (the candidate template), ``{count}`` the number of candidates."""
HISTORY_LINE = "- {text}"
"""A history line of the user message."""
EMPTY_HISTORY = "- (none)"
"""The history block of a user without history."""

DEFAULT_CANDIDATE_TEMPLATE = "[{label}] {text}"
#: Named candidate-line templates. ``{label}`` is the stripped identifier (``"C"``),
#: ``{identifier}`` the identifier as the model writes it in its answer (``" C"``), ``{text}`` the
#: candidate's description. ``"bracket"`` (the default) writes ``[C] text``: the letter in the
#: prompt is a different token from the one the model must answer with (``"C"`` vs ``" C"`` in
#: SmolLM2's tokenizer). ``"answer_token"`` writes ``- C: text``, whose letter is exactly the answer
#: token. ``"label_last"`` writes ``text -> C``: the answer token comes *after* its description, so
#: that under causal attention it can already carry what the line says about the candidate, and
#: choosing a candidate is one attention hop from the answer position to that token (see issue 12's
#: learnability check in ``benchmarks/README.md``).
CANDIDATE_TEMPLATES: dict[str, str] = {
    "bracket": DEFAULT_CANDIDATE_TEMPLATE,
    "answer_token": "-{identifier}: {text}",
    "label_last": "{text} ->{identifier}",
}


def candidate_template(spec: str) -> str:
    """A candidate-line template: a name in :data:`CANDIDATE_TEMPLATES` or a format string.

    Raises:
        ValueError: when a format string lacks ``{text}`` or any label field, or names another field.
    """
    template = CANDIDATE_TEMPLATES.get(spec, spec)
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if (
        "text" not in fields
        or not fields & {"label", "identifier"}
        or fields
        - {
            "text",
            "label",
            "identifier",
        }
    ):
        raise ValueError(
            f"candidate_template must be one of {sorted(CANDIDATE_TEMPLATES)} or a format string "
            f"with {{text}} and {{label}} or {{identifier}} (and no other field), got {spec!r}"
        )
    return template


def resolve_identifiers(
    tokenizer: Any, num_candidates: int, identifiers: Sequence[str] | None = None
) -> tuple[list[str], list[int]]:
    """The first ``num_candidates`` identifiers that are single, distinct tokens.

    Args:
        tokenizer: a Hugging Face tokenizer.
        num_candidates: ``K``.
        identifiers: candidate identifier strings (with their leading space), in preference order;
            default :data:`DEFAULT_IDENTIFIERS`.

    Returns:
        ``(identifiers, token_ids)``, both of length ``K``.

    Raises:
        ValueError: when fewer than ``K`` identifiers are single tokens.
    """
    pool = list(identifiers or DEFAULT_IDENTIFIERS)
    chosen: list[str] = []
    token_ids: list[int] = []
    rejected: list[str] = []
    for ident in pool:
        ids = tokenizer.encode(ident, add_special_tokens=False)
        if len(ids) == 1 and ids[0] not in token_ids:
            chosen.append(ident)
            token_ids.append(ids[0])
            if len(chosen) == num_candidates:
                return chosen, token_ids
        else:
            rejected.append(ident)
    raise ValueError(
        f"only {len(chosen)} of the identifiers are single distinct tokens of this tokenizer, "
        f"K={num_candidates} are needed; not single tokens: {rejected[:10]}. Pass more "
        "`identifiers` (e.g. ' A'..' Z', ' a'..' z') or use fewer candidates."
    )


def resolve_identifier_paths(
    tokenizer: Any, num_candidates: int, identifiers: Sequence[str] | None = None
) -> tuple[list[str], list[list[int]]]:
    """The first ``num_candidates`` identifiers whose token paths are distinct and prefix-free.

    Multi-token identifiers are allowed. An identifier is skipped when its token path is empty, or
    equal to, a prefix of, or prefixed by the path of an identifier already chosen: every
    candidate must then end at its own leaf of the token trie. Identifiers of equal length in
    characters (e.g. zero-padded numbers) are always prefix-free.

    Args:
        tokenizer: a Hugging Face tokenizer.
        num_candidates: ``K``.
        identifiers: candidate identifier strings (with their leading space), in preference order;
            default :data:`DEFAULT_IDENTIFIERS`.

    Returns:
        ``(identifiers, token_paths)``, both of length ``K`` (each path a list of token ids).

    Raises:
        ValueError: when fewer than ``K`` identifiers have distinct, prefix-free token paths.
    """
    chosen: list[str] = []
    paths: list[list[int]] = []
    rejected: list[str] = []
    for ident in list(identifiers or DEFAULT_IDENTIFIERS):
        ids = list(tokenizer.encode(ident, add_special_tokens=False))
        # Equal to, a prefix of, or an extension of a chosen path.
        clash = any(p[: len(ids)] == ids or ids[: len(p)] == p for p in paths)
        if ids and not clash:
            chosen.append(ident)
            paths.append(ids)
            if len(chosen) == num_candidates:
                return chosen, paths
        else:
            rejected.append(ident)
    raise ValueError(
        f"only {len(chosen)} of the identifiers have distinct, prefix-free token paths, "
        f"K={num_candidates} are needed; rejected: {rejected[:10]}. Pass more `identifiers` "
        "(e.g. zero-padded numbers ' 01'..' 20') or use fewer candidates."
    )


def build_messages(
    instruction: str,
    history_text: Sequence[str],
    candidate_text: Sequence[str],
    labels: Sequence[str],
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    identifiers: Sequence[str] | None = None,
    template: str = DEFAULT_CANDIDATE_TEMPLATE,
) -> list[dict[str, str]]:
    """Chat messages for one task.

    Args:
        instruction: the need's instruction.
        history_text: ``L`` history item descriptions (oldest first).
        candidate_text: ``K`` candidate descriptions (prompt order).
        labels: ``K`` identifier labels (stripped identifiers, e.g. ``"A"``).
        system_prompt: system message, or None for none.
        identifiers: ``K`` identifiers as answered (e.g. ``" A"``); default ``" " + label``.
        template: candidate-line format string (see :data:`CANDIDATE_TEMPLATES`).

    Returns:
        A list of ``{"role", "content"}`` dicts.
    """
    history = "\n".join(HISTORY_LINE.format(text=h) for h in history_text) or EMPTY_HISTORY
    idents = list(identifiers) if identifiers is not None else [f" {lab}" for lab in labels]
    candidates = "\n".join(
        template.format(label=lab, identifier=ident, text=c)
        for lab, ident, c in zip(labels, idents, candidate_text, strict=True)
    )
    user = USER_MESSAGE.format(
        instruction=instruction, history=history, candidates=candidates, count=len(labels)
    )
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": user}]


def encode_prompts(
    tokenizer: Any,
    batch: RankingBatch,
    identifiers: Sequence[str],
    answer_prefix: str = "Ranking:",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    max_prompt_tokens: int | None = None,
    template: str = DEFAULT_CANDIDATE_TEMPLATE,
) -> list[list[int]]:
    """Token ids of each task's prompt (chat template + generation prompt + ``answer_prefix``).

    The oldest history items are dropped while a prompt exceeds ``max_prompt_tokens``.

    Args:
        tokenizer: a tokenizer with a chat template.
        batch: ``B`` tasks with ``candidate_text`` (and optionally ``history_text``).
        identifiers: ``K`` identifier strings.
        answer_prefix: text after the assistant turn start, before the first identifier.
        system_prompt: system message or None.
        max_prompt_tokens: token budget per prompt, or None.
        template: candidate-line format string (see :data:`CANDIDATE_TEMPLATES`).

    Returns:
        ``B`` lists of token ids.

    Raises:
        ValueError: when ``candidate_text`` is missing or a prompt cannot fit the budget.
    """
    if len(batch.candidate_text) != batch.batch_size:
        raise ValueError("the LLM policy needs batch.candidate_text for every task")
    labels = [ident.strip() for ident in identifiers]
    out = []
    for b in range(batch.batch_size):
        history = list(batch.history_text[b]) if batch.history_text else []
        while True:
            messages = build_messages(
                batch.instruction[b],
                history,
                batch.candidate_text[b],
                labels,
                system_prompt,
                identifiers,
                template,
            )
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer.encode(text + answer_prefix, add_special_tokens=False)
            if max_prompt_tokens is None or len(ids) <= max_prompt_tokens:
                break
            if not history:
                raise ValueError(
                    f"task {b}: prompt has {len(ids)} tokens without history, more than "
                    f"max_prompt_tokens={max_prompt_tokens}; shorten candidate_text or raise it"
                )
            history = history[1:]
        out.append(ids)
    return out
