"""Tokenisation of (prompt, response) texts, with the response located in tokens.

Two input formats:

- ``chat``: the tokenizer's chat template over ``[user: prompt, assistant:
  response]`` rendered to text (``apply_chat_template(..., tokenize=False)``),
  then tokenised without adding special tokens (the template carries them).
- ``pair``: prompt and response as a tokenizer text pair (for BERT-like
  encoders ``[CLS] prompt [SEP] response [SEP]`` with token type ids 0/1).

Texts are never truncated; callers drop those longer than ``max_length``.
Token ids are kept in flat numpy arrays (a few hundred thousand texts of a
few hundred tokens each would take gigabytes as Python lists).
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
    """

    ids: np.ndarray
    type_ids: np.ndarray | None
    offsets: np.ndarray
    response_start: np.ndarray
    response_length: np.ndarray

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


def _response_span(
    tokenizer: Any, prompt: str, response: str, chat_template: str | None
) -> tuple[str, int, int]:
    """The rendered text and the character span of the response in it."""
    full = _render(tokenizer, prompt, response, chat_template)
    marked = _render(tokenizer, prompt, _SENTINEL, chat_template)
    start = marked.find(_SENTINEL)
    if start < 0:
        raise ValueError("the chat template does not render the assistant message")
    for content in (response, response.strip()):
        if full.startswith(content, start):
            return full, start, start + len(content)
    raise ValueError(
        "the chat template changes the response text beyond trimming whitespace; "
        "cannot locate the response in the rendered text"
    )


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
    for lo in range(0, len(prompts), _CHUNK):
        chunk_p = list(prompts[lo : lo + _CHUNK])
        chunk_r = list(responses[lo : lo + _CHUNK])
        if input_format == "chat":
            rendered = [
                _response_span(tokenizer, p, r, chat_template) for p, r in zip(chunk_p, chunk_r)
            ]
            encoded = tokenizer(
                [text for text, _, _ in rendered],
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            spans = [
                _token_span(encoded["offset_mapping"][i], s, e)
                for i, (_, s, e) in enumerate(rendered)
            ]
        else:
            encoded = tokenizer(
                chunk_p,
                chunk_r,
                return_attention_mask=False,
                return_token_type_ids=want_types,
            )
            spans = []
            for i in range(len(chunk_p)):
                in_response = [j for j, s in enumerate(encoded.sequence_ids(i)) if s == 1]
                spans.append((in_response[0], len(in_response)) if in_response else (0, 0))
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
    )


def tokenize_text(
    tokenizer: Any,
    prompt: str,
    response: str,
    input_format: str,
    chat_template: str | None = None,
) -> TokenizedText:
    """Tokenise one (prompt, response) text; see :func:`tokenize_texts`."""
    return tokenize_texts(tokenizer, [prompt], [response], input_format, chat_template).text(0)
