"""Policy tokenisation: prefix property, response spans, drop-and-count, max_length errors."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from steerable_alignment.policy import (
    PolicyPairs,
    fit_max_length,
    pair_lengths,
    tokenise_pairs,
    tokenise_pairs_table,
)
from tests.models.tiny_causal_lm import PREFIX_BREAKING_TEMPLATE, chatml_tokenizer

PROMPTS = ["How do I boil pasta?", "Why is the sun hot?", "Should I test my code?"]
RESPONSES_A = [
    "First, boil water. Then, add salt and cook for ten minutes.",
    "As far as I know, it is not sure.",
    "Yes.",
]
RESPONSES_B = [
    "I am not sure.",
    "The sun is certainly hot because of its large size and the good, quick fusion.",
    "You should write a small test first, then run it, then fix the bug.",
]
PAIR_IDS = [10, 11, 12]


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _tokenise(tokenizer, max_length: int = 256, overflow: str = "drop"):
    return tokenise_pairs(
        tokenizer, PROMPTS, RESPONSES_A, RESPONSES_B, PAIR_IDS, max_length, overflow
    )


def test_prompt_part_is_a_token_prefix_of_every_sequence(tokenizer):
    pairs, report = _tokenise(tokenizer)
    assert report.prefix_fallbacks == 0
    for p, prompt in enumerate(PROMPTS):
        prefix = _prompt_ids(tokenizer, prompt)
        for side in range(2):
            assert int(pairs.response_start[p, side]) == len(prefix)
            assert pairs.input_ids[p, side, : len(prefix)].tolist() == prefix


def test_response_span_decodes_to_the_response_and_end_of_turn(tokenizer):
    pairs, _ = _tokenise(tokenizer)
    for p in range(len(PROMPTS)):
        for side, response in enumerate((RESPONSES_A[p], RESPONSES_B[p])):
            start = int(pairs.response_start[p, side])
            length = int(pairs.response_len[p, side])
            span = pairs.input_ids[p, side, start : start + length].tolist()
            assert tokenizer.decode(span) == response + "<|im_end|>"
            assert span[-1] == tokenizer.eos_token_id
            # The sequence ends at the end-of-turn token: ChatML's trailing newline is dropped.
            assert int(pairs.attention_mask[p, side].sum()) == start + length


def test_shapes_padding_and_pair_ids(tokenizer):
    pairs, report = _tokenise(tokenizer)
    p, width = len(PROMPTS), report.longest_kept
    assert pairs.input_ids.shape == (p, 2, width) and pairs.input_ids.dtype == torch.int64
    assert pairs.attention_mask.shape == (p, 2, width)
    assert pairs.response_start.shape == pairs.response_len.shape == (p, 2)
    assert pairs.pair_id.tolist() == PAIR_IDS
    assert int(pairs.seq_len.max()) == width
    padding = pairs.attention_mask == 0
    assert padding.any()
    assert (pairs.input_ids[padding] == tokenizer.pad_token_id).all()
    assert pairs.pad_token_id == tokenizer.pad_token_id


def test_pairs_that_do_not_fit_are_dropped_and_counted(tokenizer, caplog):
    needed = pair_lengths(tokenizer, PROMPTS, RESPONSES_A, RESPONSES_B).max(axis=1)
    limit = int(np.sort(needed)[1])  # keeps the two shorter pairs, drops the longest
    with caplog.at_level(logging.WARNING, logger="steerable_alignment.policy.tokenise"):
        pairs, report = _tokenise(tokenizer, max_length=limit)
    kept = [pid for pid, n in zip(PAIR_IDS, needed) if n <= limit]
    assert pairs.pair_id.tolist() == kept and len(kept) == 2
    assert (report.pairs_in, report.pairs_kept, report.pairs_dropped) == (3, 2, 1)
    assert report.longest_needed == int(needed.max()) and report.longest_kept == limit
    assert "dropped 1" in caplog.text and f"max_length={limit}" in caplog.text
    # Kept responses are whole: nothing was cut to fit.
    for row, pair_id in enumerate(kept):
        p = PAIR_IDS.index(pair_id)
        for side, response in enumerate((RESPONSES_A[p], RESPONSES_B[p])):
            start, length = int(pairs.response_start[row, side]), int(pairs.response_len[row, side])
            span = pairs.input_ids[row, side, start : start + length]
            assert tokenizer.decode(span) == response + "<|im_end|>"


def test_max_length_equal_to_the_needed_length_keeps_the_pair(tokenizer):
    lengths = pair_lengths(tokenizer, PROMPTS[:1], RESPONSES_A[:1], RESPONSES_B[:1])
    needed = int(lengths.max())
    pairs, report = tokenise_pairs(
        tokenizer, PROMPTS[:1], RESPONSES_A[:1], RESPONSES_B[:1], [0], needed
    )
    assert report.pairs_kept == 1 and pairs.input_ids.shape[-1] == needed
    with pytest.raises(ValueError, match="max_length"):
        tokenise_pairs(
            tokenizer, PROMPTS[:1], RESPONSES_A[:1], RESPONSES_B[:1], [0], needed - 1, "drop"
        )


def test_by_default_a_long_response_is_cut_keeping_the_prompt_and_its_start(tokenizer, caplog):
    whole, _ = _tokenise(tokenizer)
    needed = pair_lengths(tokenizer, PROMPTS, RESPONSES_A, RESPONSES_B)  # (P, 2)
    limit = int(np.sort(needed.max(axis=1))[1])  # the longest pair does not fit
    with caplog.at_level(logging.WARNING, logger="steerable_alignment.policy.tokenise"):
        pairs, report = tokenise_pairs(
            tokenizer, PROMPTS, RESPONSES_A, RESPONSES_B, PAIR_IDS, limit
        )
    assert pairs.pair_id.tolist() == PAIR_IDS  # every pair kept
    assert (report.pairs_kept, report.pairs_dropped, report.pairs_truncated) == (3, 0, 1)
    assert "1 with a response cut to fit" in caplog.text
    assert pairs.input_ids.shape[-1] == limit
    for p in range(len(PROMPTS)):
        for side in range(2):
            start = int(pairs.response_start[p, side])
            n = int(pairs.seq_len[p, side])
            assert start == int(whole.response_start[p, side])  # the whole prompt part
            assert n == min(int(needed[p, side]), limit)
            # the sequence is the start of the untruncated one
            assert torch.equal(pairs.input_ids[p, side, :n], whole.input_ids[p, side, :n])
            assert int(pairs.response_len[p, side]) == n - start


def test_a_prompt_that_leaves_no_room_is_dropped_even_when_truncating(tokenizer):
    whole, _ = _tokenise(tokenizer)
    parts = whole.response_start[:, 0].tolist()  # (P,) prompt-part lengths
    longest = int(np.argmax(parts))
    limit = parts[longest]  # no room for a response token of that pair
    assert sorted(parts)[-2] < limit  # the others keep room
    pairs, report = tokenise_pairs(
        tokenizer, PROMPTS, RESPONSES_A, RESPONSES_B, PAIR_IDS, limit, "truncate"
    )
    assert pairs.pair_id.tolist() == [i for i in PAIR_IDS if i != PAIR_IDS[longest]]
    assert report.pairs_dropped == 1


def test_an_unknown_overflow_is_refused(tokenizer):
    with pytest.raises(ValueError, match=r"'overflow': expected one of \['truncate', 'drop'\]"):
        _tokenise(tokenizer, overflow="cut")


def test_max_length_too_small_for_every_pair_is_a_clear_error(tokenizer):
    needed = pair_lengths(tokenizer, PROMPTS, RESPONSES_A, RESPONSES_B).max(axis=1)
    with pytest.raises(ValueError) as err:
        _tokenise(tokenizer, max_length=int(needed.min()) - 1)
    message = str(err.value)
    assert "'max_length'" in message and "too small for every pair" in message
    assert f"shortest pair needs {int(needed.min())}" in message
    assert f"longest {int(needed.max())}" in message


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_max_length_must_be_a_positive_integer(tokenizer, bad):
    with pytest.raises(ValueError, match="'max_length'"):
        _tokenise(tokenizer, max_length=bad)


def test_a_template_that_breaks_the_prefix_property_falls_back_to_concatenation(caplog):
    tokenizer = chatml_tokenizer(PREFIX_BREAKING_TEMPLATE)
    with caplog.at_level(logging.WARNING, logger="steerable_alignment.policy.tokenise"):
        pairs, report = _tokenise(tokenizer)
    assert report.prefix_fallbacks == 2 * len(PROMPTS)
    assert "not a token prefix" in caplog.text
    for p, prompt in enumerate(PROMPTS):
        prefix = _prompt_ids(tokenizer, prompt)
        for side, response in enumerate((RESPONSES_A[p], RESPONSES_B[p])):
            start, length = int(pairs.response_start[p, side]), int(pairs.response_len[p, side])
            assert pairs.input_ids[p, side, :start].tolist() == prefix
            span = pairs.input_ids[p, side, start : start + length]
            assert tokenizer.decode(span) == response + tokenizer.eos_token


def test_a_tokenizer_without_chat_template_is_refused():
    with pytest.raises(ValueError, match="no chat template"):
        _tokenise(chatml_tokenizer(chat_template=None))


def test_bad_inputs_name_the_column(tokenizer):
    with pytest.raises(ValueError, match=r"Column 'response_b'.*row 1"):
        tokenise_pairs(tokenizer, PROMPTS, RESPONSES_A, ["ok", None, "ok"], PAIR_IDS, 64)
    with pytest.raises(ValueError, match="Column 'pair_id'"):
        tokenise_pairs(tokenizer, PROMPTS, RESPONSES_A, RESPONSES_B, [1.5, 2.5, 3.5], 64)
    with pytest.raises(ValueError, match="No pairs"):
        tokenise_pairs(tokenizer, [], [], [], [], 64)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['response_b'\]"):
        frame = pd.DataFrame({"pair_id": [1], "prompt": ["p"], "response_a": ["a"]})
        tokenise_pairs_table(tokenizer, frame, 64)


def test_pairs_table_entry_point_matches_the_list_one(tokenizer):
    frame = pd.DataFrame(
        {
            "pair_id": PAIR_IDS,
            "prompt": PROMPTS,
            "response_a": RESPONSES_A,
            "response_b": RESPONSES_B,
            "split": "train",
        }
    )
    from_table, _ = tokenise_pairs_table(tokenizer, frame, 256)
    from_lists, _ = _tokenise(tokenizer)
    assert torch.equal(from_table.input_ids, from_lists.input_ids)
    assert torch.equal(from_table.pair_id, from_lists.pair_id)


def test_select_gathers_rows_and_trims_padding(tokenizer):
    pairs, _ = _tokenise(tokenizer)
    index = torch.tensor([2, 0])
    batch = pairs.select(index)
    assert isinstance(batch, PolicyPairs)
    assert batch.pair_id.tolist() == [PAIR_IDS[2], PAIR_IDS[0]]
    width = int(pairs.seq_len[index].max())
    assert batch.input_ids.shape == (2, 2, width)
    assert torch.equal(batch.input_ids, pairs.input_ids[index, :, :width])
    assert torch.equal(batch.response_len, pairs.response_len[index])
    assert len(batch.to("cpu")) == 2


def test_fit_max_length():
    lengths = np.array([[10, 30], [50, 20], [40, 41], [7, 99]])  # pairs need 30, 50, 41, 99
    assert fit_max_length(lengths, 1.0, multiple_of=1) == 99
    assert fit_max_length(lengths, 1.0) == 104
    assert fit_max_length(lengths, 0.5, multiple_of=1) == 50  # an observed length, not 45.5
    assert fit_max_length(np.array([30, 50, 41, 99]), 0.75, multiple_of=1) == 99
    with pytest.raises(ValueError, match="'quantile'"):
        fit_max_length(lengths, 0.0)
    with pytest.raises(ValueError, match="'lengths'"):
        fit_max_length(np.array([]), 0.9)
    with pytest.raises(ValueError, match="'multiple_of'"):
        fit_max_length(lengths, 0.9, multiple_of=0)


def test_fit_max_length_keeps_the_quantile_of_pairs(tokenizer):
    lengths = pair_lengths(tokenizer, PROMPTS, RESPONSES_A, RESPONSES_B)
    _, report = _tokenise(tokenizer, max_length=fit_max_length(lengths, 1.0))
    assert report.pairs_dropped == 0
