"""Tiny random models and tokenizers for the embedding tests (built offline in ~0.2 s).

A BPE tokenizer is trained on the test texts with ``tokenizers``; a random
Llama (decoder, chat template) or BERT (encoder, text pairs) config gives the
model. Both are saved with ``save_pretrained`` so the code under test loads
them from a folder exactly as it loads a real model.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}"
)
_WORDS = (
    "the a model answer question helpful honest true false because water salt pasta "
    "cook boil minutes please explain why how what when where cat dog tree river city "
    "code python function list value error test data small large quick slow good bad"
).split()


def make_pairs(num_prompts: int = 6, responses: int = 4, seed: int = 0) -> pd.DataFrame:
    """An UltraFeedback-shaped pairs table: every pair of a prompt's responses."""
    rng = random.Random(seed)
    rows = []
    for p in range(num_prompts):
        prompt = f"question {p} : " + " ".join(rng.choices(_WORDS, k=rng.randint(3, 8)))
        answers = [
            f"answer {j} : " + " ".join(rng.choices(_WORDS, k=rng.randint(2, 14)))
            for j in range(responses)
        ]
        for a in range(responses):
            for b in range(a + 1, responses):
                rows.append(
                    {
                        "pair_id": 1000 + len(rows),
                        "prompt_id": p,
                        "prompt": prompt,
                        "response_a": answers[a],
                        "response_b": answers[b],
                        "split": "train",
                    }
                )
    return pd.DataFrame(rows)


def _train_bpe(special: list[str], post_processor=None):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [" ".join(_WORDS), *(f"question answer {i} : ." for i in range(50))]
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=special)
    tokenizer.train_from_iterator(corpus * 5, trainer)
    if post_processor is not None:
        tokenizer.post_processor = post_processor(tokenizer)
    return tokenizer


def tiny_chat_tokenizer(chat_template: str | None = CHAT_TEMPLATE):
    """A fast BPE tokenizer with special chat tokens and (optionally) a chat template."""
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(special),
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _bert_post_processor(tokenizer):
    from tokenizers import processors

    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    return processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )


def tiny_pair_tokenizer():
    """A fast BPE tokenizer that encodes text pairs BERT-style, with token type ids."""
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    return PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(special, _bert_post_processor),
        pad_token="[PAD]",
        unk_token="<unk>",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def save_tiny_llama(folder: Path, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """A random 2-layer Llama (hidden 32) and its chat tokenizer, saved to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    tokenizer = tiny_chat_tokenizer(chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path) -> Path:
    """A random 2-layer BERT (hidden 32) and its text-pair tokenizer, saved to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = tiny_pair_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
