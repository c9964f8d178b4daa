import pytest

from steerable_alignment.embedding import resolve_input_format, tokenize_text, tokenize_texts
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
