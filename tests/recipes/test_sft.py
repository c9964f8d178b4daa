"""SFT of the base policy (recipes/sft.py) on a tiny random Qwen2: the loss is the chosen
responses' per-token NLL, it falls, the merged model scores exactly as the adapted one,
the lower blocks never change, and bad settings are refused naming the parameter."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from steerable_alignment.episodes.sampler import TrainingEpisodes
from steerable_alignment.models.config import ConfigError
from steerable_alignment.pipelines.dpo.nodes import lower_block_states
from steerable_alignment.policy import PolicyConfig, PolicyModel
from steerable_alignment.policy.blocks import decoder_blocks
from steerable_alignment.policy.logps import response_token_counts
from steerable_alignment.policy.pairs import pair_sequences
from steerable_alignment.policy.scoring import base_model_logps
from steerable_alignment.recipes.sft import SFTConfig, SFTTask, fine_tune
from tests.models.tiny_causal_lm import load_causal_lm, save_tiny_causal_lm
from tests.recipes.test_policies import make_data


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny_qwen2_sft"))


@pytest.fixture(scope="module")
def data():
    return make_data()


def _policy(base_folder, **overrides):
    values = {"type": "btl_dpo", "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}
    values["target_modules"] = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]
    torch.manual_seed(0)
    config = PolicyConfig.from_params({**values, **overrides})
    return PolicyModel(config, load_causal_lm(base_folder), base_model_name="tiny")


def _config(**overrides):
    values = {
        "max_steps": 12,
        "batch_episodes": 2,
        "num_targets": 4,
        "lr": 1e-2,
        "eval_every": 4,
        "val_episodes_per_objective": 2,
        "batch_size": 8,
        "device": "cpu",
        "progress": False,
    }
    return SFTConfig.from_params({**values, **overrides})


def _chosen_nll_by_hand(model, data, rows, objective):
    """Mean per-token NLL of each row's chosen side under a bare causal LM."""
    choices = data.choices[rows, objective]
    sequences = pair_sequences(data.sequences, rows, choices)
    logps = base_model_logps(model, sequences)
    return float((-logps / response_token_counts(sequences)).mean())


def test_loss_is_the_chosen_responses_per_token_nll(base_folder, data):
    policy = _policy(base_folder)  # LoRA B starts at 0: the policy is the base model
    config = _config()
    task = SFTTask(policy, data, config)
    task.setup(torch.device("cpu"), torch.float32)
    rows = data.splits["train"][:8].reshape(2, 4)  # (E, T)
    objective = torch.tensor([0, 1])
    episodes = TrainingEpisodes(rows, objective, torch.zeros(2, dtype=torch.long))
    loss, stats = task.loss(episodes, total=2)
    by_hand = [
        _chosen_nll_by_hand(load_causal_lm(base_folder), data, rows[e], int(objective[e]))
        for e in range(2)
    ]
    assert float(loss.detach()) == pytest.approx(sum(by_hand) / 2, rel=1e-5)
    assert stats["chosen_nll"] == pytest.approx(4 * sum(by_hand), rel=1e-5)
    loss.backward()
    grads = [p.grad for p in policy.trainable_parameters().values()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_fine_tune_lowers_the_validation_nll_and_merges_exactly(base_folder, data):
    policy = _policy(base_folder, layers_to_transform="top_1")
    base_before = load_causal_lm(base_folder)
    result = fine_tune(policy, data, _config())
    history = result.history
    assert [h["step"] for h in history] == [4, 8, 12]
    assert history[-1]["val_chosen_nll"] < history[0]["val_chosen_nll"]
    # The merged model is a plain causal LM of the same architecture, no adapter left ...
    assert type(result.model) is type(base_before)
    assert set(result.model.state_dict()) == set(base_before.state_dict())
    # ... that scores validation texts as the kept weights did
    val = data.splits["validation"]
    kept = min(history, key=lambda h: h["val_chosen_nll"])
    assert result.best_step == kept["step"]
    rows = val[:8]
    merged = _chosen_nll_by_hand(result.model, data, rows, 0)
    assert merged < _chosen_nll_by_hand(base_before, data, rows, 0)
    # the lower block (below the adapters) is untouched, the top one changed
    lower_after, lower_before = decoder_blocks(result.model)[0], decoder_blocks(base_before)[0]
    for (name, after), before in zip(
        lower_after.state_dict().items(), lower_before.state_dict().values(), strict=True
    ):
        assert torch.equal(after, before), name
    top_after, top_before = decoder_blocks(result.model)[1], decoder_blocks(base_before)[1]
    assert not torch.equal(top_after.self_attn.q_proj.weight, top_before.self_attn.q_proj.weight)


def test_fine_tune_from_cached_lower_states_equals_the_full_forward(base_folder, data):
    model = load_causal_lm(base_folder)
    rows = torch.cat([data.splits["train"], data.splits["validation"]])
    states = lower_block_states(model, data.sequences, rows, 1, 8, torch.device("cpu"))
    cached = dataclasses.replace(
        data, sequences=dataclasses.replace(data.sequences, prefix_states=states, prefix_blocks=1)
    )
    full = fine_tune(_policy(base_folder, layers_to_transform="top_1"), data, _config())
    fast = fine_tune(_policy(base_folder, layers_to_transform="top_1"), cached, _config())
    for a, b in zip(full.history, fast.history, strict=True):
        assert a["val_chosen_nll"] == pytest.approx(b["val_chosen_nll"], abs=1e-4)


def test_bad_settings_are_refused(base_folder, data):
    with pytest.raises(ConfigError, match="max_context"):
        _config(max_context=2)
    np_policy = _policy(
        base_folder,
        type="np_dpo",
        film_hidden_dim=4,
        latent_dim=4,
        encoder_hidden_dim=8,
        encoder_num_heads=2,
        embedding_dim=12,
    )
    with pytest.raises(ConfigError, match="btl_dpo"):
        fine_tune(np_policy, data, _config())
    with pytest.raises(ConfigError, match="num_targets"):
        fine_tune(_policy(base_folder), data, _config(num_targets=40))
