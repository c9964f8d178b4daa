"""Tiny random causal LMs and chat tokenizers for the policy tests (built offline, < 1 s).

One module for every test that needs an LLM. Two tokenizer flavours, both
trained here with ``tokenizers``:

- :func:`tiny_tokenizer`: a whitespace BPE over :data:`WORDS` with a small
  custom chat template (the policy-model and DPO-loop tests);
- :func:`chatml_tokenizer`: a byte-level BPE (decoding gives back the exact
  text) with ChatML's special tokens and template, like SmolLM2-Instruct's and
  Qwen2-Instruct's, over :data:`CHATML_WORDS` or a given corpus (the
  tokenisation, base-model and pipeline tests).

A random Qwen2 (or Llama) config with 2 blocks of width 64 gives the model
(:func:`build_tiny_causal_lm`, :func:`tiny_model` for a given tokenizer).
``save_tiny_causal_lm`` / ``save_tiny_base_policy`` write a model and its
tokenizer with ``save_pretrained`` so code under test loads the base model
from a folder, as it would a real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
WORDS = (
    "how do i cook rice boil water add salt wait ten minutes then serve it is safe to eat "
    "the answer yes no maybe please explain why a cat sleeps all day because it likes warm "
    "places write short poem about river tree city honest helpful true false quick slow good"
).split()


# ChatML, as SmolLM2-Instruct and Qwen2-Instruct render it (without a default system turn).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Renders the assistant turn differently from the generation prompt, so the
# prompt part is not a token prefix of the full sequence.
PREFIX_BREAKING_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant: ' + message['content'] + '<|im_end|>' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_WORDS = (
    "the a an to of and is it you your how what why when should I do can boil pasta water "
    "salt minutes first then finally as far as know not sure this is certainly true false "
    "cook bake bread oven garden plant tree soil sun rain learn code python function test "
    "bug error fix run read write small large quick slow good bad helpful honest answer"
).split()


def tiny_tokenizer():
    """A fast whitespace BPE tokenizer over :data:`WORDS` with a small chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=160, special_tokens=SPECIAL_TOKENS)
    corpus = [" ".join(WORDS), *(" ".join(WORDS[i::7]) for i in range(7))]
    backend.train_from_iterator(corpus * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(vocab_size: int, model_type: str = "qwen2", **overrides: Any):
    """A 2-block, width-64 Qwen2 or Llama config (``overrides`` replace any field)."""
    from transformers import LlamaConfig, Qwen2Config

    config_class = {"qwen2": Qwen2Config, "llama": LlamaConfig}[model_type]
    values = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "tie_word_embeddings": True,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
    }
    return config_class(**{**values, **overrides})


def byte_level_bpe(corpus: Sequence[str], special_tokens: Sequence[str], vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``corpus`` (decoding is exact)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(corpus, trainer)
    return backend


def chatml_tokenizer(
    chat_template: str | None = CHATML_TEMPLATE,
    corpus: Sequence[str] | None = None,
    vocab_size: int = 400,
):
    """A fast byte-level BPE tokenizer with ChatML special tokens and ``chat_template``.

    Args:
        chat_template: the template (None: no template).
        corpus: texts to train on (default: sentences of :data:`CHATML_WORDS`);
            with a large ``vocab_size`` most of their words become one token.
        vocab_size: the BPE vocabulary size.

    ``<|im_end|>`` is the eos token (as in SmolLM2-Instruct); ``<|endoftext|>`` pads.
    """
    from transformers import PreTrainedTokenizerFast

    if corpus is None:
        words = CHATML_WORDS
        corpus = [" ".join(words), *(" ".join(words[i::7]) + "." for i in range(7))] * 20
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(corpus, CHATML_SPECIAL_TOKENS, vocab_size),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_causal_lm(
    vocab_size: int, seed: int = 0, model_type: str = "qwen2", **overrides: Any
):
    """A random float32 causal LM in eval mode (same ``seed`` -> same weights)."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(vocab_size, model_type, **overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def save_tiny_causal_lm(
    folder: Path, seed: int = 0, model_type: str = "qwen2", **overrides: Any
) -> Path:
    """Write a tiny model and its tokenizer to ``folder`` with ``save_pretrained``."""
    tokenizer = tiny_tokenizer()
    model = build_tiny_causal_lm(len(tokenizer), seed, model_type, **overrides)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_model(tokenizer, seed: int = 0, model_type: str = "qwen2", **overrides: Any):
    """A random 2-block causal LM over ``tokenizer``'s vocabulary and special tokens."""
    special = {
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    return build_tiny_causal_lm(len(tokenizer), seed, model_type, **{**special, **overrides})


def save_tiny_base_policy(folder: Path, corpus: Sequence[str], seed: int = 0) -> Path:
    """A base policy folder: a ChatML tokenizer trained on ``corpus`` (most of its words one
    token, so real texts stay short) and a random 2-block Qwen2 over it."""
    tokenizer = chatml_tokenizer(corpus=corpus, vocab_size=2000)
    tiny_model(tokenizer, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def load_causal_lm(folder: Path):
    """The base model of ``folder`` in float32 and eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def encode_chats(tokenizer, prompts: Sequence[str], responses: Sequence[str]):
    """Tokenise (prompt, response) chats, right-padded, with each response's span.

    Returns:
        A :class:`SequenceBatch`; the response covers the assistant message
        and its end marker.
    """
    from steerable_alignment.policy.pairs import SequenceBatch

    rows, starts, lengths = [], [], []
    for prompt, response in zip(prompts, responses, strict=True):
        user = [{"role": "user", "content": prompt}]
        prefix = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": response}], tokenize=False
        )
        prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert ids[: len(prefix_ids)] == prefix_ids, "prompt tokens change with the response"
        rows.append(ids)
        starts.append(len(prefix_ids))
        lengths.append(len(ids) - len(prefix_ids))
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
    return SequenceBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_start=torch.tensor(starts),
        response_len=torch.tensor(lengths),
    )


def encode_prompts(tokenizer, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded chat prompts ending with the assistant marker, for ``generate()``."""
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
        )
        for p in prompts
    ]
    tokenizer.padding_side = "left"
    encoded = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]
