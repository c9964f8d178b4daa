"""Tokenisation of (prompt, response) texts, with the response located in tokens.

Two input formats:

- ``chat``: the tokenizer's chat template over ``[user: prompt, assistant:
  response]`` rendered to text (``apply_chat_template(..., tokenize=False)``),
  then tokenised without adding special tokens (the template carries them).
- ``pair``: prompt and response as a tokenizer text pair (for BERT-like
  encoders ``[CLS] prompt [SEP] response [SEP]`` with token type ids 0/1).

:func:`tokenize_texts` never truncates; :func:`truncate_texts` cuts texts
longer than ``max_length`` to fit (the embedding's ``overflow: truncate``),
keeping the start of the prompt and the start of the response and every
template token around them. Token ids are kept in flat numpy arrays (a few
hundred thousand texts of a few hundred tokens each would take gigabytes as
Python lists).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from steerable_alignment.models.config import ConfigError

_SENTINEL = "\u2063\u2063RESPONSE\u2063\u2063"  # invisible separators: never in real text
_CHUNK = 1024  # texts tokenised per call to the fast tokenizer


@dataclass(frozen=True)
class TokenizedText:
    """One tokenised (prompt, response) text.

    Attributes:
        input_ids: token ids, (L,).
        token_type_ids: segment ids, (L,), or ``None`` if the model takes none.
        response_start: index of the first token of the response.
        response_length: number of tokens of the response (template tokens
            around it, such as an end-of-turn marker, are not counted).
    """

    input_ids: list[int]
    token_type_ids: list[int] | None
    response_start: int
    response_length: int


@dataclass(frozen=True)
class TokenizedTexts:
    """Many tokenised texts in flat arrays (text ``i`` is ``ids[offsets[i]:offsets[i+1]]``).

    Attributes:
        ids: (sum L,) int32 token ids.
        type_ids: (sum L,) int8 token type ids, or ``None``.
        offsets: (n + 1,) int64 start of each text in ``ids``.
        response_start: (n,) int32.
        response_length: (n,) int32.
        prompt_start: (n,) int32 index of the first prompt token.
        prompt_length: (n,) int32 number of prompt tokens (template tokens
            around it not counted).
    """

    ids: np.ndarray
    type_ids: np.ndarray | None
    offsets: np.ndarray
    response_start: np.ndarray
    response_length: np.ndarray
    prompt_start: np.ndarray
    prompt_length: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """(n,) number of tokens of each text."""
        return np.diff(self.offsets)

    def text(self, i: int) -> TokenizedText:
        """Text ``i`` as a :class:`TokenizedText`."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return TokenizedText(
            input_ids=self.ids[lo:hi].tolist(),
            token_type_ids=None if self.type_ids is None else self.type_ids[lo:hi].tolist(),
            response_start=int(self.response_start[i]),
            response_length=int(self.response_length[i]),
        )


def has_chat_template(tokenizer: Any, chat_template: str | None = None) -> bool:
    """Whether a chat template is available (given or the tokenizer's)."""
    return bool(chat_template or getattr(tokenizer, "chat_template", None))


def resolve_input_format(
    tokenizer: Any, input_format: str, chat_template: str | None = None, parameter: str = ""
) -> str:
    """``auto`` becomes ``chat`` when a chat template is available, else ``pair``.

    Raises:
        ConfigError: ``chat`` was asked for but no template is available, or
            the tokenizer is not a fast (Rust) tokenizer.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"Parameter '{parameter}.model': the embedding step needs a fast tokenizer "
            f"(token offsets), got {type(tokenizer).__name__}"
        )
    if input_format == "auto":
        return "chat" if has_chat_template(tokenizer, chat_template) else "pair"
    if input_format == "chat" and not has_chat_template(tokenizer, chat_template):
        raise ConfigError(
            f"Parameter '{parameter}.input_format' is 'chat' but the tokenizer has no chat "
            f"template; set '{parameter}.chat_template' or use input_format 'pair'"
        )
    return input_format


def _render(tokenizer: Any, prompt: str, response: str, chat_template: str | None) -> str:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return tokenizer.apply_chat_template(messages, tokenize=False, chat_template=chat_template)


def _content_span(full: str, marked: str, content: str, role: str) -> tuple[int, int]:
    """The character span of ``content`` in ``full``, found where ``marked`` has the sentinel."""
    start = marked.find(_SENTINEL)
    if start < 0:
        raise ValueError(f"the chat template does not render the {role} message")
    for text in (content, content.strip()):
        if full.startswith(text, start):
            return start, start + len(text)
    raise ValueError(
        f"the chat template changes the {role} text beyond trimming whitespace; "
        f"cannot locate the {role} in the rendered text"
    )


def _response_span(
    tokenizer: Any, prompt: str, response: str, chat_template: str | None
) -> tuple[str, int, int, int, int]:
    """The rendered text and the character spans of the response and of the prompt in it."""
    full = _render(tokenizer, prompt, response, chat_template)
    marked = _render(tokenizer, prompt, _SENTINEL, chat_template)
    start, end = _content_span(full, marked, response, "assistant")
    # the text before the prompt does not depend on it, so the sentinel's place is the prompt's
    marked = _render(tokenizer, _SENTINEL, response, chat_template)
    prompt_start, prompt_end = _content_span(full, marked, prompt, "user")
    return full, start, end, prompt_start, prompt_end


def _token_span(offsets: Sequence[tuple[int, int]], lo: int, hi: int) -> tuple[int, int]:
    """First token and number of tokens that overlap the characters ``[lo, hi)``."""
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)  # (L, 2) character spans
    inside = np.flatnonzero((spans[:, 1] > lo) & (spans[:, 0] < hi) & (spans[:, 1] > spans[:, 0]))
    if inside.size == 0:
        return len(spans), 0
    return int(inside[0]), int(inside[-1] - inside[0] + 1)


def tokenize_texts(
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    input_format: str,
    chat_template: str | None = None,
) -> TokenizedTexts:
    """Tokenise (prompt, response) texts and locate each response in tokens.

    Args:
        tokenizer: a fast Hugging Face tokenizer.
        prompts, responses: the texts, aligned.
        input_format: ``chat`` or ``pair`` (resolve ``auto`` first with
            :func:`resolve_input_format`).
        chat_template: a template to use instead of the tokenizer's.

    Returns:
        The token ids of every text, untruncated, with response start/length.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if input_format not in ("chat", "pair"):
        raise ValueError(f"input_format must be 'chat' or 'pair', got {input_format!r}")
    want_types = input_format == "pair" and "token_type_ids" in tokenizer.model_input_names
    ids: list[np.ndarray] = []
    types: list[np.ndarray] = []
    lengths: list[int] = []
    starts: list[int] = []
    counts: list[int] = []
    prompt_spans: list[tuple[int, int]] = []
    for lo in range(0, len(prompts), _CHUNK):
        chunk_p = list(prompts[lo : lo + _CHUNK])
        chunk_r = list(responses[lo : lo + _CHUNK])
        if input_format == "chat":
            rendered = [
                _response_span(tokenizer, p, r, chat_template) for p, r in zip(chunk_p, chunk_r)
            ]
            encoded = tokenizer(
                [text for text, *_ in rendered],
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            spans = [
                _token_span(encoded["offset_mapping"][i], s, e)
                for i, (_, s, e, _, _) in enumerate(rendered)
            ]
            prompt_spans.extend(
                _token_span(encoded["offset_mapping"][i], ps, pe)
                for i, (_, _, _, ps, pe) in enumerate(rendered)
            )
        else:
            encoded = tokenizer(
                chunk_p,
                chunk_r,
                return_attention_mask=False,
                return_token_type_ids=want_types,
            )
            spans = []
            for i in range(len(chunk_p)):
                sequence_ids = encoded.sequence_ids(i)
                in_response = [j for j, s in enumerate(sequence_ids) if s == 1]
                in_prompt = [j for j, s in enumerate(sequence_ids) if s == 0]
                spans.append((in_response[0], len(in_response)) if in_response else (0, 0))
                prompt_spans.append((in_prompt[0], len(in_prompt)) if in_prompt else (0, 0))
        for i, token_ids in enumerate(encoded["input_ids"]):
            ids.append(np.asarray(token_ids, dtype=np.int32))
            if want_types:
                types.append(np.asarray(encoded["token_type_ids"][i], dtype=np.int8))
            lengths.append(len(token_ids))
            starts.append(spans[i][0])
            counts.append(spans[i][1])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return TokenizedTexts(
        ids=np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32),
        type_ids=(np.concatenate(types) if types else np.zeros(0, dtype=np.int8))
        if want_types
        else None,
        offsets=offsets,
        response_start=np.asarray(starts, dtype=np.int32),
        response_length=np.asarray(counts, dtype=np.int32),
        prompt_start=np.asarray([s for s, _ in prompt_spans], dtype=np.int32).reshape(-1),
        prompt_length=np.asarray([n for _, n in prompt_spans], dtype=np.int32).reshape(-1),
    )


def truncation_budget(
    prompt_length: np.ndarray, response_length: np.ndarray, budget: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How many prompt and response tokens to keep so that both fit in ``budget`` tokens.

    The response keeps at least half of the budget (its whole length if
    shorter) and the prompt takes the rest, up to its own length; the
    response then takes what the prompt leaves. Both keep their start.

    Args:
        prompt_length, response_length: (n,) tokens of each text's prompt and response.
        budget: (n,) tokens available to prompt and response together (>= 2).

    Returns:
        (n,) prompt tokens and (n,) response tokens kept; their sum is
        ``min(budget, prompt_length + response_length)``.
    """
    prompt_length, response_length, budget = (
        np.asarray(v, dtype=np.int64) for v in (prompt_length, response_length, budget)
    )
    keep_prompt = np.minimum(prompt_length, np.maximum(budget // 2, budget - response_length))
    keep_response = np.minimum(response_length, budget - keep_prompt)
    return keep_prompt, keep_response


def truncate_texts(tokens: TokenizedTexts, max_length: int) -> tuple[TokenizedTexts, np.ndarray]:
    """Cut every text longer than ``max_length`` tokens down to ``max_length``.

    Each overflowing text keeps every template token (special tokens, role
    headers, the end-of-turn marker that last-token pooling reads), the
    *start* of its prompt and the *start* of its response, shared as
    :func:`truncation_budget` says; the ends of the prompt and of the
    response are cut. Texts whose template tokens alone leave fewer than two
    tokens are left as they are (the caller drops them).

    Args:
        tokens: the untruncated texts (:func:`tokenize_texts`).
        max_length: the longest text to keep, in tokens.

    Returns:
        The texts with the overflowing ones cut (the others unchanged), and
        an (n,) bool mask of the texts that were cut.
    """
    lengths = tokens.lengths  # (n,)
    over = lengths > max_length  # (n,)
    overhead = lengths - tokens.prompt_length - tokens.response_length  # (n,) template tokens
    cut = over & (max_length - overhead >= 2)  # (n,)
    if not cut.any():
        return tokens, cut
    rows = np.flatnonzero(cut)
    keep_prompt, keep_response = truncation_budget(
        tokens.prompt_length[rows], tokens.response_length[rows], max_length - overhead[rows]
    )
    keep = np.ones(len(tokens.ids), dtype=bool)  # (sum L,) token kept
    response_start = tokens.response_start.astype(np.int64)
    prompt_start = tokens.prompt_start.astype(np.int64)
    for row, n_prompt, n_response in zip(rows, keep_prompt, keep_response):
        base = int(tokens.offsets[row])
        ps, pl = int(prompt_start[row]), int(tokens.prompt_length[row])
        rs, rl = int(response_start[row]), int(tokens.response_length[row])
        keep[base + ps + n_prompt : base + ps + pl] = False
        keep[base + rs + n_response : base + rs + rl] = False
        if ps > rs:  # the response comes first (no template does this; kept for safety)
            prompt_start[row] -= rl - n_response
        else:
            response_start[row] -= pl - n_prompt
    new_lengths = lengths.copy()
    new_lengths[rows] = overhead[rows] + keep_prompt + keep_response
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(new_lengths, out=offsets[1:])
    prompt_length = tokens.prompt_length.copy()
    response_length = tokens.response_length.copy()
    prompt_length[rows] = keep_prompt
    response_length[rows] = keep_response
    truncated = TokenizedTexts(
        ids=tokens.ids[keep],
        type_ids=None if tokens.type_ids is None else tokens.type_ids[keep],
        offsets=offsets,
        response_start=response_start.astype(np.int32),
        response_length=response_length,
        prompt_start=prompt_start.astype(np.int32),
        prompt_length=prompt_length,
    )
    return truncated, cut


def tokenize_text(
    tokenizer: Any,
    prompt: str,
    response: str,
    input_format: str,
    chat_template: str | None = None,
) -> TokenizedText:
    """Tokenise one (prompt, response) text; see :func:`tokenize_texts`."""
    return tokenize_texts(tokenizer, [prompt], [response], input_format, chat_template).text(0)
