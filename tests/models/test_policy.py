"""The DPO policy on a tiny random Qwen2: FiLM, LoRA, reference mode, training, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from steerable_alignment.models.config import ConfigError
from steerable_alignment.policy import (
    BaseModelMismatchError,
    PolicyConfig,
    PolicyModel,
    dpo_loss,
    load_policy,
    save_trainable,
    sequence_logps,
    sequence_logps_from_hidden,
)
from steerable_alignment.policy.logps import position_ids_from_mask
from tests.models.tiny_causal_lm import (
    encode_chats,
    encode_prompts,
    load_causal_lm,
    save_tiny_causal_lm,
    tiny_tokenizer,
)

EMBEDDING_DIM = 12
LATENT_DIM = 8
PROMPTS = ["how do i cook rice", "why a cat sleeps all day", "write short poem about river"]
CHOSEN = ["boil water add salt wait ten minutes", "it likes warm places", "the river is slow"]
REJECTED = ["no", "because it is a cat", "tree city"]


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def chosen(tokenizer):
    return encode_chats(tokenizer, PROMPTS, CHOSEN)


@pytest.fixture(scope="module")
def rejected(tokenizer):
    return encode_chats(tokenizer, PROMPTS, REJECTED)


def _config(**overrides):
    values = {
        "type": "np_dpo",
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "film_hidden_dim": 16,
        "latent_dim": LATENT_DIM,
        "encoder_hidden_dim": 16,
        "encoder_num_heads": 2,
        "embedding_dim": EMBEDDING_DIM,
    }
    return PolicyConfig.from_params({**values, **overrides})


def _policy(base_folder, **overrides):
    torch.manual_seed(0)
    return PolicyModel(_config(**overrides), load_causal_lm(base_folder))


def _perturb(policy, std=0.3, seed=1):
    """Give every trainable weight (LoRA B and FiLM output layers included) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in policy.trainable_parameters().values():
            param.copy_(torch.randn(param.shape, generator=g) * std)


def _base_logps(base, batch):
    with torch.no_grad():
        output = base(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=position_ids_from_mask(batch.attention_mask),
        )
    return sequence_logps(output, batch.input_ids, batch.response_start, batch.response_len)


def _context(batch_size, num_pairs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch_size, num_pairs, 2, EMBEDDING_DIM, generator=g)  # (B, N, 2, D)
    choices = torch.randint(0, 2, (batch_size, num_pairs), generator=g)  # (B, N)
    mask = torch.ones(batch_size, num_pairs, dtype=torch.bool)  # (B, N)
    return embeddings, choices, mask


def test_film_at_init_leaves_outputs_equal_to_base(base_folder, chosen):
    base = load_causal_lm(base_folder)
    policy = _policy(base_folder)
    z = torch.randn(len(chosen), LATENT_DIM) * 5
    with torch.no_grad(), policy.conditioned(z):
        logits = policy.lm(input_ids=chosen.input_ids, attention_mask=chosen.attention_mask).logits
        logps = policy.sequence_logps(chosen)
    with torch.no_grad():
        base_logits = base(input_ids=chosen.input_ids, attention_mask=chosen.attention_mask).logits
    assert torch.allclose(logits, base_logits, atol=1e-6)
    assert torch.allclose(logps, _base_logps(base, chosen), atol=1e-5)


def test_per_sequence_latent_changes_only_its_sequence(base_folder, chosen):
    policy = _policy(base_folder)
    _perturb(policy)
    z = torch.randn(len(chosen), LATENT_DIM)
    z_changed = z.clone()
    z_changed[1] += 2.0
    with torch.no_grad():
        before = policy.sequence_logps(chosen, z)
        after = policy.sequence_logps(chosen, z_changed)
    assert torch.allclose(before[[0, 2]], after[[0, 2]], atol=1e-6)
    assert (before[1] - after[1]).abs() > 1e-3


def test_reference_logps_equal_base_model(base_folder, chosen):
    base = load_causal_lm(base_folder)
    policy = _policy(base_folder)
    _perturb(policy)
    policy.train()
    z = torch.randn(len(chosen), LATENT_DIM)
    expected = _base_logps(base, chosen)
    with policy.conditioned(z):
        reference = policy.reference_logps(chosen)
        trained = policy.sequence_logps(chosen)
    assert torch.allclose(reference, expected, atol=1e-5)
    assert not reference.requires_grad
    assert (trained - expected).abs().max() > 1e-3  # adapters and FiLM do change the policy
    assert policy.training  # reference mode restores the training flag


def test_one_copy_of_the_base_weights(base_folder):
    base = load_causal_lm(base_folder)
    policy = _policy(base_folder)
    num_base = sum(p.numel() for p in base.parameters())
    num_trainable = sum(p.numel() for p in policy.trainable_parameters().values())
    num_policy = sum(p.numel() for p in policy.parameters())
    assert num_policy <= (num_base + num_trainable) * 1.01
    frozen = [n for n, p in policy.named_parameters() if not p.requires_grad]
    assert frozen and all("lora_" not in n and "film" not in n for n in frozen)


def _reachable_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of ``module``'s tree, duplicates included, plus tensors and
    modules kept as plain attributes (e.g. a reference model hidden in a list)."""
    tensors = [p for _, p in module.named_parameters(remove_duplicate=False)]
    tensors += [b for _, b in module.named_buffers(remove_duplicate=False)]
    for sub in module.modules():
        stack = [v for k, v in vars(sub).items() if not k.startswith("_")]
        while stack:
            value = stack.pop()
            if isinstance(value, torch.nn.Module):
                tensors += [*value.parameters(), *value.buffers()]
            elif isinstance(value, torch.Tensor):
                tensors.append(value)
            elif isinstance(value, list | tuple | set):
                stack.extend(value)
            elif isinstance(value, dict):
                stack.extend(value.values())
    return tensors


def _unique_numel(tensors: list[torch.Tensor]) -> int:
    """Elements of distinct storages (tied or shared tensors count once)."""
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes() // tensor.element_size()
    return sum(storages.values())


@pytest.mark.parametrize("policy_type", ["np_dpo", "btl_dpo"])
def test_the_whole_policy_holds_one_copy_of_the_base_weights(base_folder, policy_type):
    base = load_causal_lm(base_folder)
    base_storages = {t.untyped_storage().data_ptr() for t in _reachable_tensors(base)}
    num_base = _unique_numel(_reachable_tensors(base))
    torch.manual_seed(0)
    policy = PolicyModel(_config(type=policy_type, film_layers="all"), base)
    trainable = list(policy.trainable_parameters().values())
    assert policy.film is None or sum(p.numel() for p in policy.film.parameters()) > 0
    num_trainable = _unique_numel(trainable)
    tensors = _reachable_tensors(policy)
    # peft wrapper, LoRA, FiLM, encoder and the base model, counted by storage
    assert _unique_numel(tensors) <= (num_base + num_trainable) * 1.01
    # ... and besides the trainable weights, every tensor is one the base model had (wrapped
    # in place: no reference copy, no cast copy)
    trainable_storages = {p.untyped_storage().data_ptr() for p in trainable}
    others = {t.untyped_storage().data_ptr() for t in tensors} - trainable_storages
    assert others <= base_storages


def test_logits_at_response_positions_equal_full_logits_on_the_model(base_folder, chosen):
    base = load_causal_lm(base_folder)
    ids, mask = chosen.input_ids, chosen.attention_mask
    with torch.no_grad():
        hidden = base.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (S, L, H)
        full = sequence_logps(
            base(input_ids=ids, attention_mask=mask),
            ids,
            chosen.response_start,
            chosen.response_len,
        )
    gathered = sequence_logps_from_hidden(
        hidden, base.lm_head, ids, chosen.response_start, chosen.response_len
    )
    assert torch.allclose(full, gathered, atol=1e-5)

    full_policy = _policy(base_folder, logits_at_response_only=False)
    fast_policy = _policy(base_folder)
    _perturb(full_policy)
    _perturb(fast_policy)
    z = torch.randn(len(chosen), LATENT_DIM)
    with torch.no_grad():
        assert torch.allclose(
            full_policy.sequence_logps(chosen, z), fast_policy.sequence_logps(chosen, z), atol=1e-5
        )


def test_lora_and_film_blocks_follow_the_config(base_folder):
    policy = _policy(base_folder, layers_to_transform="top_1", film_layers=[0])
    lora_names = [n for n in policy.trainable_parameters() if "lora_" in n]
    assert lora_names and all(".layers.1." in n for n in lora_names)
    assert policy.film.layer_indices == [0]
    with pytest.raises(ConfigError, match="asks for 3 blocks but the model has 2"):
        _policy(base_folder, film_layers="top_3")
    with pytest.raises(ConfigError, match="'policy.target_modules'"):
        _policy(base_folder, target_modules=["no_such_proj"])


def test_one_step_raises_the_chosen_implicit_reward(base_folder, chosen, rejected):
    policy = _policy(base_folder)
    policy.train()
    first, second = chosen.select(slice(0, 1)), rejected.select(slice(0, 1))
    ref_chosen, ref_rejected = policy.reference_logps(first), policy.reference_logps(second)
    context = _context(1)
    optimiser = torch.optim.Adam(policy.trainable_parameters().values(), lr=1e-2)

    def step():
        z = policy.encode_context(*context)  # (1, Z)
        logp_chosen, logp_rejected = policy.pair_logps(first, second, z)
        return dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta=0.1)

    before = step()
    assert before.margins.abs().item() < 1e-5  # identity at init: policy == reference
    before.loss.mean().backward()
    optimiser.step()
    optimiser.zero_grad()
    after = step()
    assert after.margins.item() > before.margins.item() + 1e-3
    assert after.chosen_rewards.item() > 0
    assert after.loss.item() < before.loss.item()
    # FiLM has left the identity, so the context encoder now trains jointly with it.
    after.loss.mean().backward()
    encoder_grads = [p.grad for p in policy.context_encoder.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in encoder_grads)


def test_save_load_reproduces_logps(base_folder, chosen, tmp_path):
    policy = _policy(base_folder)
    _perturb(policy)
    context = _context(len(chosen))
    with torch.no_grad():
        expected = policy.sequence_logps(chosen, policy.encode_context(*context))
    save_trainable(policy, tmp_path / "ckpt")
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["policy.json", "trainable.safetensors"]
    meta = json.loads((tmp_path / "ckpt" / "policy.json").read_text())
    assert meta["base_model"]["fingerprint"]["hidden_size"] == 64

    from safetensors.torch import load_file

    stored = load_file(tmp_path / "ckpt" / "trainable.safetensors")
    assert set(stored) == set(policy.trainable_parameters())
    assert sum(t.numel() for t in stored.values()) < sum(p.numel() for p in policy.parameters()) / 2

    loaded = load_policy(tmp_path / "ckpt", load_causal_lm(base_folder))
    with torch.no_grad():
        got = loaded.sequence_logps(chosen, loaded.encode_context(*context))
    assert torch.allclose(got, expected, atol=1e-6)


def test_loading_onto_another_base_model_names_both(base_folder, chosen, tmp_path):
    policy = _policy(base_folder)
    save_trainable(policy, tmp_path / "ckpt")
    other = save_tiny_causal_lm(tmp_path / "other_llama", model_type="llama", hidden_size=32)
    with pytest.raises(BaseModelMismatchError) as error:
        load_policy(tmp_path / "ckpt", load_causal_lm(other))
    message = str(error.value)
    assert str(base_folder) in message and str(other) in message
    assert "hidden_size" in message


def test_context_embedding_size_mismatch_names_both_sizes(base_folder):
    policy = _policy(base_folder)
    embeddings, choices, mask = _context(2)
    wrong = torch.randn(2, 3, 2, EMBEDDING_DIM + 5)
    with pytest.raises(ConfigError, match=rf"size {EMBEDDING_DIM + 5} .*embedding_dim=12"):
        policy.encode_context(wrong, choices, mask)
    z = policy.encode_context(embeddings, choices, mask)
    assert z.shape == (2, LATENT_DIM)
    empty = policy.encode_context(torch.zeros(2, 0, 2, EMBEDDING_DIM), choices[:, :0], mask[:, :0])
    assert empty.shape == (2, LATENT_DIM)


def test_generate_with_a_latent(base_folder, tokenizer):
    policy = _policy(base_folder)
    _perturb(policy, std=1.0)
    input_ids, attention_mask = encode_prompts(tokenizer, PROMPTS[:2])
    kwargs = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    z = torch.randn(2, LATENT_DIM)
    first = policy.generate(input_ids, attention_mask, z=z, **kwargs)
    again = policy.generate(input_ids, attention_mask, z=z, **kwargs)
    other = policy.generate(input_ids, attention_mask, z=-3 * z, **kwargs)
    prompt_len = input_ids.shape[1]
    assert first.shape[1] > prompt_len
    assert torch.equal(first, again)
    assert not torch.equal(first[:, prompt_len:], other[:, prompt_len:])
    with pytest.raises(ValueError, match="num_return_sequences > 1 is not supported"):
        policy.generate(input_ids, attention_mask, z=z, num_return_sequences=2, **kwargs)
    with pytest.raises(ValueError, match="FiLM latent holds 2 sequences but decoder block"):
        with policy.conditioned(z):
            policy.lm.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                **{**kwargs, "do_sample": True, "num_return_sequences": 2},
            )
    with pytest.raises(ValueError, match="needs a latent"):
        policy.generate(input_ids, attention_mask, **kwargs)


def test_film_disabled_and_btl_dpo(base_folder, chosen):
    base = load_causal_lm(base_folder)
    policy = _policy(base_folder)
    _perturb(policy)
    z = torch.randn(len(chosen), LATENT_DIM)
    with (
        torch.no_grad(),
        policy.conditioned(z),
        policy.film_disabled(),
        policy.lm.disable_adapter(),
    ):
        off = policy.sequence_logps(chosen)
    assert torch.allclose(off, _base_logps(base, chosen), atol=1e-5)
    with pytest.raises(ValueError, match="needs a latent"):
        policy.sequence_logps(chosen)

    btl = _policy(base_folder, type="btl_dpo", embedding_dim=None)
    assert btl.film is None and btl.context_encoder is None
    assert all("lora_" in n for n in btl.trainable_parameters())
    with torch.no_grad():
        assert torch.allclose(btl.sequence_logps(chosen), _base_logps(base, chosen), atol=1e-5)
    with pytest.raises(ValueError, match="no FiLM layers"):
        btl.conditioned(z)


def test_the_context_encoder_starts_from_an_np_btl_reward_model(base_folder):
    from steerable_alignment.models.config import RewardModelConfig
    from steerable_alignment.models.reward_models import build_model

    policy = _policy(base_folder)
    torch.manual_seed(5)
    reward_model = build_model(
        RewardModelConfig(
            type="nppl",
            input_dim=EMBEDDING_DIM,
            hidden_dim=16,
            num_layers=2,
            latent_dim=LATENT_DIM,
            num_heads=2,
        )
    )
    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(2, 3, 2, EMBEDDING_DIM, generator=g)  # (B, N, 2, D)
    choices = torch.tensor([[0, 1, 1], [1, 0, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    before = policy.encode_context(embeddings, choices, mask)
    policy.init_context_encoder(reward_model)
    after = policy.encode_context(embeddings, choices, mask)
    expected = reward_model.decoder_latent(embeddings, choices, mask)
    assert torch.allclose(after, expected) and not torch.allclose(before, after)

    wider = build_model(
        RewardModelConfig(
            type="nppl", input_dim=EMBEDDING_DIM, hidden_dim=32, latent_dim=LATENT_DIM, num_heads=2
        )
    )
    with pytest.raises(ConfigError, match=r"sizes differ .*hidden_dim: 32 vs 16"):
        policy.init_context_encoder(wider)
    latent = build_model(
        RewardModelConfig(
            type="nppl_latent",
            input_dim=EMBEDDING_DIM,
            hidden_dim=16,
            latent_dim=LATENT_DIM,
            num_heads=2,
            deterministic_path=False,
        )
    )
    with pytest.raises(ConfigError, match="sizes differ"):
        policy.init_context_encoder(latent)  # its head outputs mean and std
    with pytest.raises(ConfigError, match="no context encoder"):
        _policy(base_folder, type="btl_dpo", embedding_dim=None).init_context_encoder(reward_model)
