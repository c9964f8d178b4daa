"""The memory planner: its arithmetic, and the gpu environment within its target."""

import pytest

from steerable_alignment.runtime.memory import (
    GB,
    activation_bytes_per_token_block,
    dpo_step_bytes,
    format_plan,
    lora_parameters,
    model_config,
    plan,
)
from tests.pipelines.helpers import config_loader

TINY = {
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 100,
}


def test_per_token_activations_and_lora_sizes_by_hand():
    # kv = 8 * 1 / 2 = 4: 12*8 + 4*16 + 2*4 = 168 values
    assert activation_bytes_per_token_block(TINY, 2) == 336
    policy = {"lora_r": 2, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": "top_2"}
    assert lora_parameters(policy, TINY) == 2 * (2 * (8 + 8) + 2 * (8 + 4))  # 2 blocks


def test_an_unknown_model_needs_its_configuration():
    with pytest.raises(KeyError, match="pass its config.json"):
        model_config("someone/unknown")
    assert model_config("someone/unknown", TINY)["num_parameters"] > 0


def test_the_dpo_step_adds_up_and_scales_with_accumulation():
    params = {
        "embedding": {"hh": {"model": "tiny", "output_dtype": "float16"}},
        "dpo": {
            "base": {"source": "tiny", "dtype": "bfloat16"},
            "hh": {
                "tokenise": {"max_length": 10},
                "reference": {"trained_blocks": "top_2"},
                "nppl_mixed": {
                    "policy": {"type": "btl_dpo", "layers_to_transform": "top_2"},
                    "training": {"batch_episodes": 2, "num_targets": 3, "dtype": "bfloat16"},
                },
            },
        },
    }
    rows = plan(params, "hh", 5, policy_model=TINY, embedding_model=TINY, response_share=0.5)
    by_name = {r.what: r.bytes for r in rows}
    # 12 sequences x 10 tokens x 2 blocks x 336 B
    assert by_name["DPO step: block activations (one micro-batch)"] == 12 * 10 * 2 * 336
    assert by_name["DPO step: response logits (float32, x3)"] == 12 * 5 * 100 * 4 * 3
    assert by_name["prefix states (float32)"] == 5 * 2 * 10 * 8 * 4
    params["dpo"]["hh"]["nppl_mixed"]["training"]["grad_accum_steps"] = 2
    halved = plan(params, "hh", 5, policy_model=TINY, embedding_model=TINY, response_share=0.5)
    assert {r.what: r.bytes for r in halved}["DPO step: block activations (one micro-batch)"] == (
        6 * 10 * 2 * 336
    )
    assert "| DPO step: total | gpu |" in format_plan(rows)


def test_the_gpu_environment_fits_one_80_gb_gpu_with_margin():
    params = config_loader("gpu")["parameters"]
    for dataset in ("hh", "hht"):
        rows = plan(params, dataset, 250_000)
        assert dpo_step_bytes(rows) <= 60 * GB, format_plan(rows)
        host = sum(r.bytes for r in rows if r.where == "host")
        assert host <= 64 * GB  # half of a 128 GB host, for the rest of the process
