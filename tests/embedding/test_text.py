import numpy as np
import pytest

from steerable_alignment.embedding import (
    resolve_input_format,
    tokenize_text,
    tokenize_texts,
    truncate_texts,
)
from steerable_alignment.embedding.text import truncation_budget
from steerable_alignment.models.config import ConfigError
from tests.embedding.tiny_models import tiny_chat_tokenizer, tiny_pair_tokenizer

PROMPT = "question 3 : how to cook pasta"
RESPONSE = "answer : boil water because salt"


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_chat_template_marks_the_response_start_and_length():
    tokenizer = tiny_chat_tokenizer()
    tokens = tokenize_text(tokenizer, PROMPT, RESPONSE, "chat")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": RESPONSE}],
        tokenize=False,
    )
    assert tokens.input_ids == _ids(tokenizer, rendered)  # the template, tokenised as is
    assert tokens.input_ids[0] == tokenizer.bos_token_id
    response_ids = _ids(tokenizer, RESPONSE)
    start, length = tokens.response_start, tokens.response_length
    assert length == len(response_ids)
    assert tokens.input_ids[start : start + length] == response_ids
    assert tokens.input_ids[start - 1] == tokenizer.convert_tokens_to_ids("<|assistant|>")
    assert tokens.input_ids[start + length] == tokenizer.convert_tokens_to_ids("<|end|>")
    assert start + length + 1 == len(tokens.input_ids)  # only <|end|> follows
    assert tokens.token_type_ids is None


def test_a_template_that_trims_the_content_still_locates_the_response():
    template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | trim }}<|end|>{% endfor %}"
    )
    tokenizer = tiny_chat_tokenizer(chat_template=None)
    tokens = tokenize_text(tokenizer, PROMPT, f"  {RESPONSE}\n\n", "chat", chat_template=template)
    response_ids = _ids(tokenizer, RESPONSE)
    start, length = tokens.response_start, tokens.response_length
    assert tokens.input_ids[start : start + length] == response_ids


def test_a_response_that_also_occurs_in_the_template_is_found_at_its_place():
    tokenizer = tiny_chat_tokenizer()
    tokens = tokenize_text(tokenizer, "end end", "end", "chat")  # "end" is in <|end|> too
    start, length = tokens.response_start, tokens.response_length
    assert tokens.input_ids[start : start + length] == _ids(tokenizer, "end")
    assert tokens.input_ids[start - 1] == tokenizer.convert_tokens_to_ids("<|assistant|>")


def test_text_pairs_mark_the_second_segment():
    tokenizer = tiny_pair_tokenizer()
    tokens = tokenize_text(tokenizer, PROMPT, RESPONSE, "pair")
    prompt_ids, response_ids = _ids(tokenizer, PROMPT), _ids(tokenizer, RESPONSE)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert tokens.input_ids == [cls, *prompt_ids, sep, *response_ids, sep]
    assert tokens.response_start == len(prompt_ids) + 2
    assert tokens.response_length == len(response_ids)
    assert tokens.token_type_ids == [0] * (len(prompt_ids) + 2) + [1] * (len(response_ids) + 1)


def test_batch_tokenisation_matches_one_by_one():
    tokenizer = tiny_chat_tokenizer()
    prompts = [PROMPT, "question 1 : why", PROMPT]
    responses = [RESPONSE, "", "answer : the dog"]
    batch = tokenize_texts(tokenizer, prompts, responses, "chat")
    assert len(batch) == 3
    for i, (p, r) in enumerate(zip(prompts, responses)):
        assert batch.text(i) == tokenize_text(tokenizer, p, r, "chat")
    assert batch.text(1).response_length == 0  # an empty response has no tokens
    assert batch.lengths.tolist() == [len(batch.text(i).input_ids) for i in range(3)]


def test_input_format_auto_follows_the_chat_template():
    assert resolve_input_format(tiny_chat_tokenizer(), "auto") == "chat"
    assert resolve_input_format(tiny_pair_tokenizer(), "auto") == "pair"
    assert resolve_input_format(tiny_pair_tokenizer(), "auto", chat_template="{{ 1 }}") == "chat"
    with pytest.raises(ConfigError, match=r"embedding\.hh\.input_format.*chat_template"):
        resolve_input_format(tiny_pair_tokenizer(), "chat", None, "embedding.hh")


def test_the_prompt_is_located_in_both_formats():
    for tokenizer, input_format in (
        (tiny_chat_tokenizer(), "chat"),
        (tiny_pair_tokenizer(), "pair"),
    ):
        tokens = tokenize_texts(tokenizer, [PROMPT], [RESPONSE], input_format)
        start, length = int(tokens.prompt_start[0]), int(tokens.prompt_length[0])
        assert tokens.ids[start : start + length].tolist() == _ids(tokenizer, PROMPT)


@pytest.mark.parametrize(
    ("prompt", "response", "budget", "expected"),
    [
        (3, 4, 10, (3, 4)),  # fits: nothing cut
        (30, 40, 10, (5, 5)),  # both long: the response keeps half
        (2, 40, 10, (2, 8)),  # a short prompt is kept whole, the response takes the rest
        (40, 3, 10, (7, 3)),  # a short response is kept whole, the prompt takes the rest
        (40, 40, 7, (3, 4)),  # an odd budget: the response gets the extra token
    ],
)
def test_truncation_budget_keeps_the_response_at_least_half(prompt, response, budget, expected):
    kept = truncation_budget(np.array([prompt]), np.array([response]), np.array([budget]))
    assert (int(kept[0][0]), int(kept[1][0])) == expected


@pytest.mark.parametrize("input_format", ["chat", "pair"])
def test_truncation_keeps_the_template_and_both_starts(input_format):
    tokenizer = tiny_chat_tokenizer() if input_format == "chat" else tiny_pair_tokenizer()
    long_prompt = " ".join([PROMPT] * 6)
    long_response = " ".join([RESPONSE] * 6)
    prompts, responses = [PROMPT, long_prompt], [RESPONSE, long_response]
    full = tokenize_texts(tokenizer, prompts, responses, input_format)
    max_length = int(full.lengths[0]) + 4  # the short text fits, the long one does not
    cut, truncated = truncate_texts(full, max_length)
    assert truncated.tolist() == [False, True]
    assert cut.text(0) == full.text(0)  # a text that fits is unchanged
    assert cut.lengths.tolist() == [full.lengths[0], max_length]
    before, after = full.text(1), cut.text(1)
    ids, new = before.input_ids, after.input_ids
    ps, pl = int(full.prompt_start[1]), int(full.prompt_length[1])
    rs, rl = before.response_start, before.response_length
    nps, npl = int(cut.prompt_start[1]), int(cut.prompt_length[1])
    nrs, nrl = after.response_start, after.response_length
    assert npl + nrl == max_length - (len(ids) - pl - rl) and nrl >= npl  # room shared
    assert new[nps : nps + npl] == ids[ps : ps + npl]  # the prompt's start
    assert new[nrs : nrs + nrl] == ids[rs : rs + nrl]  # the response's start
    assert new[:nps] == ids[:ps]  # template before the prompt
    assert new[nps + npl : nrs] == ids[ps + pl : rs]  # template between them
    assert new[nrs + nrl :] == ids[rs + rl :]  # template after the response (e.g. <|end|>)
    if input_format == "pair":
        assert after.token_type_ids == [0] * nrs + [1] * (len(new) - nrs)


def test_a_template_with_no_room_left_is_not_cut():
    tokenizer = tiny_chat_tokenizer()
    full = tokenize_texts(tokenizer, [PROMPT], [RESPONSE], "chat")
    overhead = int(full.lengths[0] - full.prompt_length[0] - full.response_length[0])
    cut, truncated = truncate_texts(full, overhead + 1)  # one token for prompt and response
    assert not truncated.any() and cut is full  # left for the caller to drop
