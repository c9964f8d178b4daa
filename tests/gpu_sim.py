"""A simulated `gpu` run: conf/gpu with only the models, the data and the sizes replaced.

`kedro run --env gpu` needs CUDA, the hub and hours. Here it runs on the CPU
in minutes with everything else as conf/gpu says (bf16 base weights, chat
templates, `last_token` pooling, `max_length` 1024/512, `overflow:
truncate`, accumulation 2, every pair, explicit sampling):

- the hub data set is a local folder in the exact schema
  ``datasets.load_dataset("openbmb/UltraFeedback")`` returns (every column,
  nested ``completions[].annotations``, string ratings with ``"N/A"``,
  ``Type`` a list for helpfulness and a string for truthfulness, records with
  fewer than 4 completions, ``correct_answers``/``incorrect_answers``, a few
  responses longer than every ``max_length``), read
  through the hub source's own ``datasets.load_dataset(<id>, split="train")``
  call with the folder as the id;
- the embedding model is a tiny random ``LlamaModel`` with a Llama-3-style
  tokenizer (``<|begin_of_text|>``, header and ``<|eot_id|>`` special tokens,
  no pad token, no chat template: conf/gpu gives the Llama-3 format);
- the base policy is a tiny random ``Qwen2ForCausalLM`` in bfloat16 with
  Qwen2.5-Instruct's chat template (its default system turn) and a
  ``generation_config`` like Qwen2.5's (top_k 20, repetition_penalty 1.05,
  which the explicit sampling settings must override);
- every ``device`` is ``cpu`` and the sizes are small (runtime parameters,
  :func:`sim_runtime_params`): nothing else of conf/gpu changes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.models.tiny_causal_lm import byte_level_bpe

#: Qwen2.5-Instruct's chat template (no tools): a default system turn, then ChatML.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
#: Both tiny models: 2 blocks of width 64 (the architectures are the real ones).
TINY_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}
LLAMA3_SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
OBJECTIVE_COLUMNS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
#: A few responses are made longer than conf/gpu's limits (embedding 1024, DPO 512 tokens).
LONG_REPEATS = 300


def hub_record(record: dict[str, Any], index: int) -> dict[str, Any]:
    """A generated raw record in the full schema of the hub's ``openbmb/UltraFeedback``."""
    completions = []
    for c, completion in enumerate(record["completions"]):
        ratings = {k: completion["annotations"][k]["Rating"] for k in OBJECTIVE_COLUMNS}
        completions.append(
            {
                "annotations": {
                    "helpfulness": {
                        "Rating": ratings["helpfulness"],
                        "Rationale": "The response is clear.",
                        "Rationale For Rating": "Accurate and useful.",
                        "Type": ["1", "2"],
                    },
                    "honesty": {"Rating": ratings["honesty"], "Rationale": "Expresses doubt."},
                    "instruction_following": {
                        "Rating": ratings["instruction_following"],
                        "Rationale": "Addresses the task.",
                    },
                    "truthfulness": {
                        "Rating": ratings["truthfulness"],
                        "Rationale": "No hallucination.",
                        "Rationale For Rating": "Correct.",
                        "Type": "0",
                    },
                },
                "critique": "Fine.",
                "custom_system_prompt": "",
                "fine-grained_score": 3.75,
                "model": f"model-{c}",
                "overall_score": 7.0,
                "principle": "helpfulness",
                "response": completion["response"],
            }
        )
    if index % 5 == 4:  # real records sometimes hold fewer than 4 completions
        completions = completions[:3]
    if index < 3:  # real responses can run past every max_length: overflow: truncate cuts them
        completions[0]["response"] += " In more detail, it depends." * LONG_REPEATS
    return {
        "source": record.get("source", "generated"),
        "instruction": record["instruction"],
        "models": [c["model"] for c in completions],
        "completions": completions,
        "correct_answers": ["an answer"] if index % 2 else [],
        "incorrect_answers": ["a wrong answer"] if index % 2 else [],
    }


def write_hub_copy(folder: Path, n_prompts: int = 150, seed: int = 0) -> Path:
    """Generated records in the hub schema, as the parquet file of a local data set folder."""
    import datasets

    from steerable_alignment.ultrafeedback.generate import generate_records

    records = generate_records(n_prompts, 4, seed=seed, na_fraction=0.01)
    rows = [hub_record(r, i) for i, r in enumerate(records)]
    (folder / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(
        str(folder / "data" / "train-00000-of-00001.parquet")
    )
    return folder


def corpus_of(folder: Path) -> list[str]:
    """Every prompt and response of a hub copy (the tiny tokenizers learn their words)."""
    import pyarrow.parquet as pq

    table = pq.read_table(next((folder / "data").glob("*.parquet"))).to_pylist()
    texts = [r["instruction"] for r in table]
    texts += [c["response"] for r in table for c in r["completions"]]
    return texts


def save_llama3_embedder(folder: Path, corpus: list[str]) -> Path:
    """A tiny random LlamaModel with a Llama-3-style tokenizer (base model: no chat template)."""
    import torch
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(corpus, LLAMA3_SPECIAL, 1500),
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        additional_special_tokens=LLAMA3_SPECIAL[2:],
    )
    config = LlamaConfig(
        **TINY_SIZES,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_qwen25_policy(folder: Path, corpus: list[str]) -> Path:
    """A tiny random Qwen2ForCausalLM (bfloat16) with Qwen2.5-Instruct's template and sampling."""
    import torch
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(corpus, QWEN_SPECIAL, 1500),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = QWEN25_TEMPLATE
    config = Qwen2Config(
        **TINY_SIZES,
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.05,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _cpu(block: dict[str, Any]) -> dict[str, Any]:
    return {**block, "device": "cpu"}


def sim_runtime_params(
    gpu_params: dict[str, Any], hub_copy: Path, embedder: Path, policy: Path
) -> dict[str, Any]:
    """Runtime parameters over conf/gpu: models, data, ``device: cpu`` and small sizes only.

    Args:
        gpu_params: the resolved parameters of the gpu environment (to find
            every variant whose ``device`` must move to the CPU).
    """
    tiny_training = {
        "max_steps": 4,
        "batch_episodes": 4,
        "eval_every": 2,
        "val_episodes_per_objective": 4,
        "num_threads": 1,
        "progress": False,
        "device": "cpu",
    }
    uf_training = {**tiny_training, "num_targets": 8, "max_context": 3, "val_context_sizes": [0, 3]}
    reward = {
        dataset: {
            variant: {"training": tiny_training if dataset == "synthetic" else uf_training}
            for variant in variants
        }
        for dataset, variants in gpu_params["reward_modelling"].items()
        if not dataset.startswith("_")
    }
    uf_evaluation = {
        "episodes_per_objective": 20,
        "context_sizes": [0, 1, 3],
        "num_targets": 8,
        "bootstrap": {"replicates": 20, "cluster_by": "prompt", "seed": 7},
        "device": "cpu",
    }
    dpo_training = {
        "max_steps": 2,
        "num_targets": 4,
        "max_context": 3,
        "eval_every": 1,
        "val_episodes_per_objective": 1,
        "val_context_sizes": [0, 3],
        "warmup_steps": 0,
        "batch_size": 16,
        "checkpoint_every": 0,
        "num_threads": 1,
        "progress": False,
        "device": "cpu",
    }
    dpo: dict[str, Any] = {"base": {"source": str(policy)}}
    for dataset, block in gpu_params["dpo"].items():
        if dataset.startswith("_") or dataset in ("base", "sft"):
            continue  # conf/gpu's SFT is off (dpo.sft.enabled: false): nothing to shrink
        dpo[dataset] = {
            "tokenise": {"max_pairs": {"train": 48, "validation": None, "test": None}},
            "reference": {"device": "cpu", "batch_size": 16},
            "evaluation": {
                "episodes_per_objective": 2,
                "context_sizes": [0, 1, 3],
                "num_targets": 4,
                "bootstrap": {"replicates": 20, "cluster_by": "prompt", "seed": 7},
                "device": "cpu",
            },
            **{
                variant: {"training": dpo_training}
                for variant in block
                if isinstance(block[variant], dict) and "training" in block[variant]
            },
        }
    embedding = {
        name: {"model": str(embedder), "device": "cpu", "num_threads": 1, "progress": False}
        for name in gpu_params["embedding"]
        if not name.startswith("_")
    }
    generation = copy.deepcopy(gpu_params["generation"]["hh"])
    generation.update(
        device="cpu",
        num_prompts=4,
        context_sizes=[0, 3],
        progress=False,
        bootstrap={"replicates": 20, "seed": 7},
        continuum={
            "objectives": ["honesty", "helpfulness"],
            "weights": [0, 0.5, 1],
            "num_context": 3,
            "seed": 3,
        },
    )
    generation["sampling"] = {**generation["sampling"], "max_new_tokens": 8, "batch_size": 4}
    generation["fluency"] = {"enabled": True, "batch_size": 4}
    return {
        "synthetic_data": {"n_pairs": 2000},
        "ultrafeedback": {"source": {"hub_id": str(hub_copy)}},
        "embedding": embedding,
        "reward_modelling": reward,
        "evaluation": {
            "synthetic": {
                "episodes_per_objective": 20,
                "bootstrap": {"replicates": 20, "cluster_by": "pair", "seed": 7},
                "device": "cpu",
            },
            **{d: uf_evaluation for d in ("hh", "hht")},
        },
        "generation": {"hh": generation},
        "mixed_users": {
            "hh": {
                "episodes_per_user": 20,
                "context_sizes": [0, 1, 3],
                "num_targets": 8,
                "bootstrap": {"replicates": 20, "cluster_by": "prompt", "seed": 7},
                "device": "cpu",
            }
        },
        "active_elicitation": {
            d: {
                "strategies": ["random", "uncertainty", "information", "population"],
                "population": {"size": 8, "seed": 0},
                "asked": [0, 1, 2],
                "versus_random": [[1, 2]],
                "split": "test",
                "pool_size": 10 if d != "synthetic" else 40,
                "users_per_objective": 2,
                "num_targets": 5,
                "samples": 4,
                "seed": 15,
                "batch_size": 64,
                "bootstrap": {
                    "replicates": 20,
                    "cluster_by": "pair" if d == "synthetic" else "prompt",
                    "seed": 7,
                },
                **({"oracle": True, "threshold": 0.5} if d == "synthetic" else {}),
            }
            for d in ("synthetic", "hh", "hht")
        },
        "dpo": dpo,
    }


def describe(params: dict[str, Any]) -> str:
    """The runtime parameters as JSON (for a failing test's message)."""
    return json.dumps(params, indent=1, default=str)[:4000]
