"""Policy tokenisation of preference pairs through the tokenizer's chat template.

Each pair ``(prompt, response_a, response_b)`` becomes two sequences, one per
response: the chat template rendered with the prompt as the user turn and the
response as the assistant turn. The *prompt part* is the template rendered
with the user turn only and the generation prompt (``<|im_start|>assistant\\n``
for ChatML), and the *response span* is everything after it:

- the response text and the end-of-turn token(s) the template writes after
  the assistant message (ChatML's ``<|im_end|>``), so the policy's log-prob of
  a response includes stopping where the response stops;
- *not* whitespace the template writes after that end-of-turn special token
  (ChatML's newline): it carries no preference signal and a policy never
  generates it before stopping, so it is dropped from the sequence.

The prompt part must be a token-exact prefix of the full sequence (templates
that re-render earlier turns differently, or merge tokens across the boundary,
break this). :func:`tokenise_pairs` checks it for every sequence; where it
fails, that sequence is rebuilt from the prompt part's ids followed by the
response tokenised on its own plus the tokenizer's ``eos_token`` (the
end-of-turn token of ChatML and Llama-3 chat models), and the number of such
sequences is logged.

A sequence longer than ``max_length`` is handled by ``overflow``:
``truncate`` (the default) keeps the whole prompt part and the *start* of the
response, cutting its end (and the end-of-turn token with it: a cut response
did not stop there); ``drop`` leaves the pair out. Either way the affected
pairs are counted (:class:`TokenisationReport`), and a pair whose prompt part
alone leaves no room for one response token is dropped. If no pair fits, an
error names ``max_length`` and the lengths needed. :func:`fit_max_length`
suggests a ``max_length`` from the data.

Glossary for shapes: P pairs, L tokens; the middle axis of size 2 is
``(a, b)``. torch and transformers are imported inside functions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ("pair_id", "prompt", "response_a", "response_b")
#: What happens to a sequence longer than ``max_length`` (module docstring).
OVERFLOWS = ("truncate", "drop")


@dataclass(frozen=True)
class PolicyPairs:
    """Tokenised preference pairs as tensors, ready to gather batches by index.

    Attributes:
        input_ids: ``(P, 2, L)`` int64; sequence ``[p, 0]`` holds
            prompt + response a, ``[p, 1]`` prompt + response b; right-padded
            with ``pad_token_id``. ``L`` is the longest kept sequence (at most
            the ``max_length`` used).
        attention_mask: ``(P, 2, L)`` int64, 1 on real tokens, 0 on padding.
        response_start: ``(P, 2)`` int64, index of the first response token
            (= the prompt part's length).
        response_len: ``(P, 2)`` int64, number of response tokens (response
            text + end-of-turn token); the response occupies positions
            ``response_start .. response_start + response_len - 1`` and the
            sequence ends there.
        pair_id: ``(P,)`` int64, the pairs table's ``pair_id`` of each row.
        pad_token_id: the id used for padding.
        prefix_states: ``(P, 2, L, H)`` hidden states entering block
            ``prefix_blocks`` of the base model, computed once
            (:mod:`steerable_alignment.policy.prefix`), or None.
        prefix_blocks: the number of lower blocks the states stand for (0: none).
    """

    input_ids: Any
    attention_mask: Any
    response_start: Any
    response_len: Any
    pair_id: Any
    pad_token_id: int
    prefix_states: Any = None
    prefix_blocks: int = 0

    def __len__(self) -> int:
        return int(self.pair_id.shape[0])

    @property
    def seq_len(self) -> Any:
        """``(P, 2)`` int64, the length of each sequence (prompt + response)."""
        return self.response_start + self.response_len

    def select(self, index: Any) -> PolicyPairs:
        """The pairs at ``index`` (a ``(B,)`` index tensor), trimmed to their longest sequence.

        Returns:
            A :class:`PolicyPairs` with ``B`` rows and ``L`` = the longest
            selected sequence, so a batch carries no all-padding columns.
        """
        seq_len = self.seq_len[index]  # (B, 2)
        width = int(seq_len.max()) if seq_len.numel() else 0
        return PolicyPairs(
            input_ids=self.input_ids[index, :, :width],  # (B, 2, L_b)
            attention_mask=self.attention_mask[index, :, :width],  # (B, 2, L_b)
            response_start=self.response_start[index],  # (B, 2)
            response_len=self.response_len[index],  # (B, 2)
            pair_id=self.pair_id[index],  # (B,)
            pad_token_id=self.pad_token_id,
            prefix_states=(
                None if self.prefix_states is None else self.prefix_states[index, :, :width]
            ),  # (B, 2, L_b, H)
            prefix_blocks=self.prefix_blocks,
        )

    def to(self, device: Any) -> PolicyPairs:
        """The same pairs with every tensor on ``device``."""
        return PolicyPairs(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            response_start=self.response_start.to(device),
            response_len=self.response_len.to(device),
            pair_id=self.pair_id.to(device),
            pad_token_id=self.pad_token_id,
            prefix_states=None if self.prefix_states is None else self.prefix_states.to(device),
            prefix_blocks=self.prefix_blocks,
        )


@dataclass(frozen=True)
class TokenisationReport:
    """What :func:`tokenise_pairs` kept and dropped.

    Attributes:
        pairs_in: pairs given.
        pairs_kept: pairs whose two sequences fit ``max_length``.
        pairs_dropped: pairs dropped because a sequence exceeded ``max_length``
            (with ``overflow: truncate``, only pairs whose prompt part leaves
            no room for a response token).
        pairs_truncated: kept pairs with a response cut to fit (``truncate``).
        max_length: the limit applied.
        longest_kept: the longest kept sequence (the ``L`` of the tensors).
        longest_needed: the longest sequence over all pairs.
        prefix_fallbacks: sequences whose chat-template rendering did not
            start with the prompt part's tokens, rebuilt by concatenation.
    """

    pairs_in: int
    pairs_kept: int
    pairs_dropped: int
    max_length: int
    longest_kept: int
    longest_needed: int
    prefix_fallbacks: int
    pairs_truncated: int = 0


@dataclass(frozen=True)
class _Encoded:
    """Token ids before padding: per pair the prompt part and the two full sequences."""

    prompt_ids: list[list[int]]  # P lists
    sequences: list[tuple[list[int], list[int]]]  # P pairs of (a, b) ids
    fallbacks: int

    def lengths(self) -> np.ndarray:
        """``(P, 2)`` int64 sequence lengths."""
        return np.array([[len(a), len(b)] for a, b in self.sequences], dtype=np.int64)


def _check_texts(values: Sequence[Any], name: str) -> list[str]:
    texts = list(values)
    for row, value in enumerate(texts):
        if not isinstance(value, str):
            raise ValueError(
                f"Column '{name}' must hold strings; row {row} holds {value!r} "
                f"({type(value).__name__})"
            )
    return texts


def _check_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"Tokenizer {name!r} has no chat template; policy tokenisation renders each pair "
            "through it (set tokenizer.chat_template or use an instruction-tuned model)"
        )


def _render(tokenizer: Any, prompt: str, response: str | None) -> str:
    messages = [{"role": "user", "content": prompt}]
    if response is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": response})
    return tokenizer.apply_chat_template(messages, tokenize=False)


def render_prompt(tokenizer: Any, prompt: str) -> str:
    """The prompt part of a sequence as text: the chat template with the user turn and the
    generation prompt (what a policy answers from, in training and in generation)."""
    _check_template(tokenizer)
    return _render(tokenizer, prompt, None)


def _encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered templates; the template already holds the special tokens."""
    if not texts:
        return []
    return list(tokenizer(texts, add_special_tokens=False)["input_ids"])


def _trim_after_end_of_turn(ids: list[int], start: int, tokenizer: Any) -> list[int]:
    """Drop whitespace-only tokens after the response's last special token (module docstring)."""
    special = set(tokenizer.all_special_ids)
    last_special = next((i for i in range(len(ids) - 1, start - 1, -1) if ids[i] in special), None)
    if last_special is None or last_special == len(ids) - 1:
        return ids
    tail = tokenizer.decode(ids[last_special + 1 :])
    return ids[: last_special + 1] if not tail.strip() else ids


def _encode_pairs(
    tokenizer: Any, prompts: list[str], responses_a: list[str], responses_b: list[str]
) -> _Encoded:
    """Tokenise every pair through the chat template, checking the prefix property."""
    _check_template(tokenizer)
    n = len(prompts)
    if not (len(responses_a) == len(responses_b) == n):
        raise ValueError(
            f"prompts, response_a and response_b must have the same length, got "
            f"{n}, {len(responses_a)}, {len(responses_b)}"
        )
    prompt_ids = _encode_texts(tokenizer, [_render(tokenizer, p, None) for p in prompts])
    full_texts = [
        _render(tokenizer, p, r)
        for p, a, b in zip(prompts, responses_a, responses_b)
        for r in (a, b)
    ]
    full_ids = _encode_texts(tokenizer, full_texts)  # 2P lists, a then b per pair
    eos = tokenizer.eos_token_id
    sequences: list[tuple[list[int], list[int]]] = []
    fallbacks = 0
    for p in range(n):
        prefix = prompt_ids[p]
        pair = []
        for side, response in enumerate((responses_a[p], responses_b[p])):
            ids = list(full_ids[2 * p + side])
            if len(ids) <= len(prefix) or ids[: len(prefix)] != prefix:
                if eos is None:
                    raise ValueError(
                        "The chat template's prompt part is not a token prefix of the full "
                        f"sequence (pair row {p}) and the tokenizer has no eos_token to end a "
                        "separately tokenised response"
                    )
                fallbacks += 1
                response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
                ids = [*prefix, *response_ids, eos]
            else:
                ids = _trim_after_end_of_turn(ids, len(prefix), tokenizer)
            pair.append(ids)
        sequences.append((pair[0], pair[1]))
    if fallbacks:
        logger.warning(
            "%d of %d sequences: the chat template's prompt part was not a token prefix of the "
            "full rendering; they were built as prompt ids + response ids + eos",
            fallbacks,
            2 * n,
        )
    return _Encoded(prompt_ids=prompt_ids, sequences=sequences, fallbacks=fallbacks)


def pair_lengths(
    tokenizer: Any,
    prompts: Sequence[str],
    responses_a: Sequence[str],
    responses_b: Sequence[str],
) -> np.ndarray:
    """The token length of each pair's two sequences (prompt part + response span).

    Returns:
        ``(P, 2)`` int64 lengths, the input of :func:`fit_max_length`.
    """
    encoded = _encode_pairs(
        tokenizer,
        _check_texts(prompts, "prompt"),
        _check_texts(responses_a, "response_a"),
        _check_texts(responses_b, "response_b"),
    )
    return encoded.lengths()


def fit_max_length(lengths: Any, quantile: float = 1.0, multiple_of: int = 8) -> int:
    """Suggest a ``max_length`` that keeps a ``quantile`` of the pairs.

    Args:
        lengths: ``(P,)`` or ``(P, 2)`` sequence lengths (:func:`pair_lengths`);
            a pair needs the longer of its two.
        quantile: share of pairs to keep, in (0, 1]; 1.0 keeps every pair.
        multiple_of: round up to a multiple of this (8 suits GPU kernels; 1
            gives the exact length).

    Returns:
        The smallest multiple of ``multiple_of`` at or above the ``quantile``
        of the pairs' lengths (an observed length, never interpolated).

    Raises:
        ValueError: naming ``lengths``, ``quantile`` or ``multiple_of`` when out of range.
    """
    values = np.asarray(lengths)
    if values.ndim == 2:
        values = values.max(axis=1)  # (P,)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"Argument 'lengths' must be a non-empty (P,) or (P, 2) array, got shape "
            f"{np.asarray(lengths).shape}"
        )
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"Argument 'quantile' must be in (0, 1], got {quantile}")
    if multiple_of < 1:
        raise ValueError(f"Argument 'multiple_of' must be >= 1, got {multiple_of}")
    needed = int(np.quantile(values, quantile, method="higher"))
    return int(math.ceil(needed / multiple_of) * multiple_of)


def _pad_token_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError("The tokenizer has neither a pad_token nor an eos_token to pad with")


def tokenise_pairs(
    tokenizer: Any,
    prompts: Sequence[str],
    responses_a: Sequence[str],
    responses_b: Sequence[str],
    pair_ids: Sequence[int],
    max_length: int,
    overflow: str = "truncate",
) -> tuple[PolicyPairs, TokenisationReport]:
    """Tokenise preference pairs for the policy; sequences that do not fit are cut or dropped.

    Args:
        tokenizer: a transformers tokenizer with a chat template.
        prompts: ``P`` user prompts.
        responses_a: ``P`` responses, first option.
        responses_b: ``P`` responses, second option.
        pair_ids: ``P`` integer pair ids, carried to :attr:`PolicyPairs.pair_id`.
        max_length: the longest sequence allowed (prompt part + response span).
        overflow: ``truncate``: a longer sequence keeps its prompt part and
            the start of its response; ``drop``: its pair is left out
            (module docstring).

    Returns:
        The kept pairs as tensors (padding with ``pad_token_id``, else
        ``eos_token_id``; padding is masked out) and the counts.

    Raises:
        ValueError: no pairs; a non-string text or non-integer pair id (naming
            the column and row); no chat template; ``max_length`` not positive,
            or too small for every pair (naming the shortest and longest
            lengths needed).
    """
    import torch

    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise ValueError(f"Parameter 'max_length' must be a positive integer, got {max_length!r}")
    if overflow not in OVERFLOWS:
        raise ValueError(
            f"Parameter 'overflow': expected one of {list(OVERFLOWS)}, got {overflow!r}"
        )
    prompts = _check_texts(prompts, "prompt")
    responses_a = _check_texts(responses_a, "response_a")
    responses_b = _check_texts(responses_b, "response_b")
    ids = np.asarray(list(pair_ids))
    if ids.shape != (len(prompts),) or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(
            f"Column 'pair_id' must hold one integer per pair ({len(prompts)}), got "
            f"{ids.size} values of dtype {ids.dtype}"
        )
    if not prompts:
        raise ValueError("No pairs to tokenise (the pairs table is empty)")
    pad_id = _pad_token_id(tokenizer)

    encoded = _encode_pairs(tokenizer, prompts, responses_a, responses_b)
    lengths = encoded.lengths()  # (P, 2)
    needed = lengths.max(axis=1)  # (P,)
    prompt_lengths = np.array([len(ids) for ids in encoded.prompt_ids], dtype=np.int64)  # (P,)
    if overflow == "truncate":
        fits = prompt_lengths < max_length  # (P,) room for at least one response token
        cut = fits & (needed > max_length)  # (P,)
        lengths = np.minimum(lengths, max_length)
    else:
        fits = needed <= max_length
        cut = np.zeros_like(fits)
    keep = np.flatnonzero(fits)
    if keep.size == 0:
        raise ValueError(
            f"Parameter 'max_length' = {max_length} is too small for every pair: the shortest "
            f"pair needs {int(needed.min())} tokens and the longest {int(needed.max())} "
            f"(fit_max_length suggests {fit_max_length(lengths, 0.95)} to keep 95% of them)"
        )
    width = int(lengths[keep].max())
    input_ids = torch.full((keep.size, 2, width), pad_id, dtype=torch.int64)  # (P, 2, L)
    attention = torch.zeros((keep.size, 2, width), dtype=torch.int64)  # (P, 2, L)
    for row, p in enumerate(keep):
        for side, seq in enumerate(encoded.sequences[p]):
            seq = seq[:max_length]  # truncate: the end of the response is cut
            input_ids[row, side, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
            attention[row, side, : len(seq)] = 1
    start = torch.tensor(
        [[len(encoded.prompt_ids[p])] * 2 for p in keep], dtype=torch.int64
    )  # (P, 2)
    seq_len = torch.as_tensor(lengths[keep], dtype=torch.int64)  # (P, 2)
    pairs = PolicyPairs(
        input_ids=input_ids,
        attention_mask=attention,
        response_start=start,
        response_len=seq_len - start,
        pair_id=torch.as_tensor(ids[keep], dtype=torch.int64),
        pad_token_id=pad_id,
    )
    report = TokenisationReport(
        pairs_in=len(prompts),
        pairs_kept=int(keep.size),
        pairs_dropped=int(len(prompts) - keep.size),
        max_length=max_length,
        longest_kept=width,
        longest_needed=int(needed.max()),
        prefix_fallbacks=encoded.fallbacks,
        pairs_truncated=int(cut.sum()),
    )
    log = logger.warning if report.pairs_dropped or report.pairs_truncated else logger.info
    log(
        "Tokenised %d pairs: kept %d (%d with a response cut to fit), dropped %d longer than "
        "max_length=%d (overflow: %s; longest needed %d)",
        report.pairs_in,
        report.pairs_kept,
        report.pairs_truncated,
        report.pairs_dropped,
        max_length,
        overflow,
        report.longest_needed,
    )
    return pairs, report


def tokenise_pairs_table(
    tokenizer: Any, pairs: Any, max_length: int, overflow: str = "truncate"
) -> tuple[PolicyPairs, TokenisationReport]:
    """:func:`tokenise_pairs` on a pairs table (DESIGN.md §4) with :data:`PAIR_COLUMNS`.

    Raises:
        ValueError: naming the missing columns, or as :func:`tokenise_pairs`.
    """
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(
            f"The pairs table lacks the column(s) {missing}; policy tokenisation needs "
            f"{list(PAIR_COLUMNS)}"
        )
    return tokenise_pairs(
        tokenizer,
        pairs["prompt"].tolist(),
        pairs["response_a"].tolist(),
        pairs["response_b"].tolist(),
        pairs["pair_id"].to_numpy(),
        max_length,
        overflow,
    )
