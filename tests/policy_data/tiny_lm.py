"""A tiny random causal LM and a ChatML tokenizer for the policy tests (built offline in ~0.2 s).

The tokenizer is a byte-level BPE trained here with ``tokenizers`` (so
decoding gives back the exact text), with ChatML's special tokens and a
ChatML chat template like SmolLM2's and Qwen2's. The model is a random
2-layer Qwen2 (hidden size 64) over that vocabulary.
"""

from __future__ import annotations

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
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

WORDS = (
    "the a an to of and is it you your how what why when should I do can boil pasta water "
    "salt minutes first then finally as far as know not sure this is certainly true false "
    "cook bake bread oven garden plant tree soil sun rain learn code python function test "
    "bug error fix run read write small large quick slow good bad helpful honest answer"
).split()


def tiny_tokenizer(chat_template: str | None = CHATML_TEMPLATE):
    """A fast byte-level BPE tokenizer with ChatML special tokens and ``chat_template``.

    ``<|im_end|>`` is the eos token (as in SmolLM2-Instruct); ``<|endoftext|>``
    pads.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [" ".join(WORDS), *(" ".join(WORDS[i::7]) + "." for i in range(7))]
    backend.train_from_iterator(corpus * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def tiny_model(tokenizer, seed: int = 0):
    """A random 2-layer Qwen2 causal LM (hidden 64) over ``tokenizer``'s vocabulary."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model.eval()
