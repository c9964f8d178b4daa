import pytest
import torch

from steerable_alignment.episodes.batch import EpisodeBatch
from steerable_alignment.models.config import ConfigError, RewardModelConfig
from steerable_alignment.models.reward_models import (
    ContextEncoder,
    NPBTLRewardModel,
    build_model,
)

B, N, T, D = 3, 4, 5, 2


def make_batch(seed: int = 0, n_real: int = N) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    context_mask = torch.zeros(B, N, dtype=torch.bool)
    context_mask[:, :n_real] = True
    return EpisodeBatch(
        context_features=torch.rand(B, N, 2, D, generator=g),
        context_choices=torch.randint(2, (B, N), generator=g),
        context_mask=context_mask,
        target_features=torch.rand(B, T, 2, D, generator=g),
        target_choices=torch.randint(2, (B, T), generator=g),
        target_mask=torch.ones(B, T, dtype=torch.bool),
        objective=torch.zeros(B, dtype=torch.long),
    )


def small_config(model_type: str, **kw) -> RewardModelConfig:
    params = {"type": model_type, "hidden_dim": 16, "latent_dim": 4, "num_heads": 2, **kw}
    return RewardModelConfig.from_params(params, input_dim=D)


@pytest.mark.parametrize("model_type", ["btl", "dpl", "nppl", "nppl_latent"])
def test_shapes_probabilities_and_gradients(model_type):
    torch.manual_seed(0)
    model = build_model(small_config(model_type))
    batch = make_batch()
    log_probs = model(batch)
    assert log_probs.shape == (B, T, 2)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(B, T), atol=1e-5)
    out = model.loss(batch)
    assert out.loss.shape == (B,) and not out.nll.requires_grad
    out.loss.mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    if model_type == "nppl_latent":
        assert out.kl is not None


def _posteriors(model, batch):
    mean_c, std_c = model.encode_context(
        batch.context_features, batch.context_choices, batch.context_mask
    )
    mean_t, std_t = model.encode_context(
        batch.target_features, batch.target_choices, batch.target_mask
    )
    return mean_c, std_c, mean_t, std_t


def test_latent_elbo_uses_kl_from_target_posterior_to_context_posterior():
    from torch.distributions import Normal, kl_divergence

    from steerable_alignment.models.losses import choice_nll

    torch.manual_seed(0)
    model = build_model(small_config("nppl_latent", kl_weight=0.7))
    batch = make_batch(n_real=2)
    mean_c, std_c, mean_t, std_t = _posteriors(model, batch)
    forward = kl_divergence(Normal(mean_t, std_t), Normal(mean_c, std_c)).sum(-1)
    reverse = kl_divergence(Normal(mean_c, std_c), Normal(mean_t, std_t)).sum(-1)
    assert (forward - reverse).abs().max() > 1e-3  # the inputs are asymmetric enough
    torch.manual_seed(5)
    out = model.loss(batch)
    assert torch.allclose(out.kl, forward.detach(), atol=1e-5)
    # The likelihood term uses a reparameterised draw of z from q(z|T).
    torch.manual_seed(5)
    z = mean_t + std_t * torch.randn_like(std_t)
    nll = choice_nll(model._target_log_probs(batch, z), batch.target_choices, batch.target_mask)
    expected = nll + 0.7 * forward / T
    assert torch.allclose(out.loss, expected, atol=1e-5)


def test_latent_prediction_is_the_posterior_predictive():
    torch.manual_seed(0)
    model = build_model(small_config("nppl_latent", predictive_samples=64))
    batch = make_batch(n_real=2)
    mean_c, std_c, _, _ = _posteriors(model, batch)
    torch.manual_seed(11)
    log_probs = model(batch)
    torch.manual_seed(11)
    z = mean_c + std_c * torch.randn(64, *mean_c.shape)  # (S, B, Z)
    probs = torch.stack([model._target_log_probs(batch, z[s]).exp() for s in range(64)])
    assert torch.allclose(log_probs.exp(), probs.mean(0), atol=1e-5)
    # Averaging probabilities is not plugging in the mean latent.
    plug_in = build_model(small_config("nppl_latent", predictive_samples=0))
    plug_in.load_state_dict(model.state_dict())
    assert torch.allclose(plug_in(batch), model._target_log_probs(batch, mean_c), atol=1e-6)
    assert (plug_in(batch).exp() - log_probs.exp()).abs().max() > 1e-4


def test_np_model_uses_the_context_and_btl_ignores_it():
    torch.manual_seed(0)
    batch = make_batch()
    flipped = EpisodeBatch(**{**batch.__dict__, "context_choices": 1 - batch.context_choices})
    np_model = build_model(small_config("nppl"))
    btl = build_model(small_config("btl"))
    z, _ = np_model.encode_context(
        batch.context_features, batch.context_choices, batch.context_mask
    )
    z_flip, _ = np_model.encode_context(
        flipped.context_features, flipped.context_choices, flipped.context_mask
    )
    assert (z - z_flip).abs().max() > 1e-4
    # The target likelihood depends on the context encoder (gradients reach it).
    np_model.loss(batch).loss.mean().backward()
    encoder_grads = [p.grad for p in np_model.context_encoder.parameters()]
    assert all(g is not None for g in encoder_grads)
    assert sum(float(g.abs().sum()) for g in encoder_grads) > 0
    assert torch.allclose(btl(batch), btl(flipped))


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
@pytest.mark.parametrize("pair_encoder", ["linear", "mlp"])
def test_context_encoder_is_permutation_invariant(aggregation, pair_encoder):
    torch.manual_seed(0)
    config = small_config("nppl", aggregation=aggregation, pair_encoder=pair_encoder)
    encoder = ContextEncoder(config, out_dim=4).eval()
    batch = make_batch(n_real=3)
    perm = torch.tensor([2, 0, 3, 1])  # moves the padding slot too
    z = encoder(batch.context_features, batch.context_choices, batch.context_mask)
    z_perm = encoder(
        batch.context_features[:, perm], batch.context_choices[:, perm], batch.context_mask[:, perm]
    )
    assert torch.allclose(z, z_perm, atol=1e-6)


def test_padding_content_is_ignored():
    torch.manual_seed(0)
    encoder = ContextEncoder(small_config("nppl"), out_dim=4)
    batch = make_batch(n_real=2)
    noisy = batch.context_features.clone()
    noisy[:, 2:] = 100.0
    z = encoder(batch.context_features, batch.context_choices, batch.context_mask)
    z_noisy = encoder(noisy, batch.context_choices, batch.context_mask)
    assert torch.allclose(z, z_noisy, atol=1e-6)


def test_empty_context_gives_the_population_prediction():
    torch.manual_seed(0)
    model = build_model(small_config("nppl"))
    empty = make_batch(n_real=0)
    no_slots = EpisodeBatch(
        **{
            **empty.__dict__,
            "context_features": torch.zeros(B, 0, 2, D),
            "context_choices": torch.zeros(B, 0, dtype=torch.long),
            "context_mask": torch.zeros(B, 0, dtype=torch.bool),
        }
    )
    out_masked, out_none = model(empty), model(no_slots)
    assert torch.isfinite(out_masked).all()
    assert torch.allclose(out_masked, out_none, atol=1e-6)
    # Same z for every episode, whatever the (masked) slots hold.
    z, _ = model.encode_context(empty.context_features, empty.context_choices, empty.context_mask)
    assert torch.allclose(z, z[:1].expand_as(z))


def test_split_head_equals_concatenation():
    torch.manual_seed(0)
    model = NPBTLRewardModel(small_config("nppl"))
    options, z = torch.rand(B, 7, D), torch.randn(B, 4)
    encoded = torch.relu(model.option_encoder(options))
    concat = torch.cat([encoded, z.unsqueeze(1).expand(-1, 7, -1)], dim=-1)
    expected = model.reward_head(concat).squeeze(-1)
    assert torch.allclose(model.reward(options, z), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"type": "transformer"}, "model.type"),
        ({"type": "btl", "hidden_dim": 0}, "model.hidden_dim"),
        ({"type": "btl", "hidden_dim": -4}, "model.hidden_dim"),
        ({"type": "btl", "hiden_dim": 8}, "hiden_dim"),
        ({"hidden_dim": 8}, "model.type"),
        ({"type": "nppl", "hidden_dim": 10, "num_heads": 4}, "model.num_heads"),
        ({"type": "nppl", "aggregation": "max"}, "model.aggregation"),
        ({"type": "nppl_latent", "predictive_samples": -1}, "model.predictive_samples"),
    ],
)
def test_bad_model_parameters_name_the_parameter(params, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        RewardModelConfig.from_params(params)


def test_deterministic_path_feeds_the_decoder_beside_the_sampled_latent():
    torch.manual_seed(0)
    model = build_model(small_config("nppl_latent", deterministic_path=True, predictive_samples=8))
    batch = make_batch(n_real=2)
    det, mean, std = model._encode(
        batch.context_features, batch.context_choices, batch.context_mask
    )
    assert det.shape == mean.shape == std.shape == (B, 4)
    assert model.reward_head[0].in_features == 16 + 4 + 4  # [g(x), r_C, z]
    # With z pinned to its mean, the prediction is the decoder on [r_C, mean].
    plug_in = build_model(
        small_config("nppl_latent", deterministic_path=True, predictive_samples=0)
    )
    plug_in.load_state_dict(model.state_dict())
    expected = model._target_log_probs(batch, torch.cat([det, mean], dim=-1))
    assert torch.allclose(plug_in(batch), expected, atol=1e-6)
    # The deterministic path carries context information of its own.
    flipped = EpisodeBatch(**{**batch.__dict__, "context_choices": 1 - batch.context_choices})
    det_flip, _, _ = model._encode(
        flipped.context_features, flipped.context_choices, flipped.context_mask
    )
    assert (det - det_flip).abs().max() > 1e-4
    out = model.loss(batch)
    out.loss.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("model_type", ["nppl", "nppl_latent"])
def test_rewards_from_encoded_options_match_the_full_forward_with_and_without_gradients(
    model_type,
):
    config = RewardModelConfig.from_params(
        {"type": model_type, "input_dim": 3, "hidden_dim": 8, "latent_dim": 4, "num_heads": 2}
    )
    torch.manual_seed(0)
    model = build_model(config)
    options = torch.randn(1, 5, 3)  # (1, M, D)
    z = torch.randn(2, 4, config.latent_dim * (2 if model_type == "nppl_latent" else 1))
    full = model.reward(options.expand(4, -1, -1), z)  # (S, B, M)
    encoded = model.encode_options(options)
    with_grad = model.reward_from_encoded(encoded, z)
    with torch.no_grad():  # the in-place inference path
        without = model.reward_from_encoded(encoded, z)
    assert torch.allclose(with_grad, full, atol=1e-6) and torch.equal(with_grad.detach(), without)
    with_grad.sum().backward()
    assert model.reward_head[0].weight.grad is not None
