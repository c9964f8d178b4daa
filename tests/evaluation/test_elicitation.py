"""Active elicitation: information gain by hand, the exact oracle against brute force,
the sequential loop's bookkeeping, and an NP-BTL model's shapes."""

from __future__ import annotations

import math

import pytest
import torch

from steerable_alignment.evaluation.elicitation import (
    STRATEGIES,
    BayesView,
    NPBTLView,
    binary_entropy,
    check_strategies,
    elicit,
    mutual_information,
    type_posterior,
)
from steerable_alignment.models.config import ConfigError, RewardModelConfig
from steerable_alignment.models.reward_models import build_model
from steerable_alignment.synthetic.task import bayes_optimal_prob_b, choice_probabilities


def _h(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_mutual_information_by_hand_on_a_two_type_toy():
    # two equally likely types: they disagree surely, agree, or partly
    probs = torch.tensor([[1.0, 0.7, 0.9], [0.0, 0.7, 0.3]], dtype=torch.float64)  # (S=2, M=3)
    mi = mutual_information(probs)
    assert mi[0].item() == pytest.approx(math.log(2), abs=1e-9)  # the answer reveals the type
    assert mi[1].item() == pytest.approx(0.0, abs=1e-12)  # both types answer alike
    assert mi[2].item() == pytest.approx(_h(0.6) - (_h(0.9) + _h(0.3)) / 2, abs=1e-12)
    assert binary_entropy(torch.tensor([0.0, 1.0])).abs().max() < 1e-9


def _synthetic(values: list[tuple[float, float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).unsqueeze(-1)  # (M, 2, 1)


def test_the_exact_posterior_and_the_oracle_agree_with_the_bayes_predictions():
    options = torch.tensor([[[0.2, 0.8]], [[0.3, 0.1]]], dtype=torch.float64)  # (B, 1, 2)
    choices = torch.tensor([[0], [0]])  # both types prefer 0.3 of (0.3, 0.1)
    mask = torch.ones(2, 1, dtype=torch.bool)
    posterior = type_posterior(options, choices, mask)
    # a (0.2 vs 0.8) pair: type 0 prefers 0.8 (b), type 1 prefers 0.2 (a); choice a -> type 1
    assert torch.allclose(posterior[0], torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(posterior[1], torch.tensor([0.5, 0.5], dtype=torch.float64))
    targets = torch.rand(2, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    view = BayesView()
    ours = view.target_probs(posterior, targets.unsqueeze(-1))
    theirs = bayes_optimal_prob_b(options, choices, mask, targets)
    assert torch.allclose(ours, theirs)


def _expected_accuracy_after(pair: torch.Tensor, targets: torch.Tensor) -> float:
    """Brute force: average over the two types (and tie answers) of the Bayes accuracy."""
    total = 0.0
    for user in (0, 1):
        p_b = float(choice_probabilities(pair[:, 0].unsqueeze(0))[0, user])
        for answer, weight in ((1, p_b), (0, 1 - p_b)):
            if weight == 0:
                continue
            prob = bayes_optimal_prob_b(
                pair[:, 0].view(1, 1, 2),
                torch.tensor([[answer]]),
                torch.ones(1, 1, dtype=torch.bool),
                targets[:, :, 0].unsqueeze(0),
            )[0]
            truth = choice_probabilities(targets[:, :, 0])[:, user]  # (T,)
            correct = torch.where(
                (prob - 0.5).abs() < 1e-9, 0.5, ((prob > 0.5).double() == truth).double()
            )
            correct = torch.where((truth - 0.5).abs() < 1e-9, 0.5, correct)
            total += 0.5 * weight * float(correct.mean())
    return total


def test_the_oracle_asks_the_pair_a_brute_force_search_finds_best():
    g = torch.Generator().manual_seed(3)
    targets = torch.rand(40, 2, 1, generator=g, dtype=torch.float64)
    for trial in range(5):
        pool = torch.rand(6, 2, 1, generator=g, dtype=torch.float64)
        view = BayesView()
        prior = torch.full((1, 2), 0.5, dtype=torch.float64)
        scores = view.scores("information", prior, pool, g)  # (1, M)
        best = max(_expected_accuracy_after(pool[m], targets) for m in range(len(pool)))
        picked = _expected_accuracy_after(pool[int(scores.argmax())], targets)
        assert picked == pytest.approx(best, abs=1e-12), trial


def test_one_asked_pair_identifies_a_synthetic_user_when_the_pool_has_a_conflicting_pair():
    g = torch.Generator().manual_seed(0)
    pool = torch.rand(50, 2, 1, generator=g, dtype=torch.float64)
    targets = torch.rand(8, 30, 2, 1, generator=g, dtype=torch.float64)
    types = torch.arange(8) % 2
    pool_choices = choice_probabilities(pool[..., 0])[:, types].T.round().long()  # (B, M)
    result = elicit(BayesView(), pool, pool_choices, targets, "information", 2, seed=0)
    truth = choice_probabilities(targets[..., 0])  # (B, T, 2)
    truth = truth[torch.arange(8), :, types]  # (B, T)
    decided = (truth - 0.5).abs() > 1e-9
    accuracy = ((result.prob_b[1] > 0.5).double() == truth)[decided].double().mean()
    assert float(accuracy) == 1.0
    assert result.prob_b.shape == (3, 8, 30)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_loop_never_asks_a_pair_twice(strategy):
    g = torch.Generator().manual_seed(1)
    pool = torch.rand(5, 2, 1, generator=g, dtype=torch.float64)
    targets = torch.rand(4, 3, 2, 1, generator=g, dtype=torch.float64)
    choices = torch.randint(0, 2, (4, 5), generator=g)
    result = elicit(BayesView(), pool, choices, targets, strategy, 5, seed=2)
    for row in result.asked:
        assert sorted(row.tolist()) == [0, 1, 2, 3, 4]  # every pair once, none twice
    with pytest.raises(ValueError, match="cannot ask 6 distinct pairs from a pool of 5"):
        elicit(BayesView(), pool, choices, targets, strategy, 6, seed=2)


def test_unknown_strategies_are_refused_naming_the_valid_ones():
    with pytest.raises(ConfigError, match=r"elicitation\.strategies.*'best'.*random"):
        check_strategies(["random", "best"], "elicitation.strategies")
    with pytest.raises(ConfigError, match="valid strategies"):
        elicit(BayesView(), torch.zeros(2, 2, 1), torch.zeros(1, 2).long(), torch.zeros(1, 1, 2, 1),
               "best", 1, seed=0)  # fmt: skip


@pytest.mark.parametrize("model_type", ["nppl", "nppl_latent"])
def test_an_np_btl_model_scores_a_pool_for_every_user(model_type):
    config = RewardModelConfig.from_params(
        {"type": model_type, "input_dim": 3, "hidden_dim": 8, "latent_dim": 4, "num_heads": 2}
    )
    torch.manual_seed(0)
    view = NPBTLView(build_model(config), samples=5)
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(7, 2, 3, generator=g)
    targets = torch.randn(4, 6, 2, 3, generator=g)
    choices = torch.randint(0, 2, (4, 7), generator=g)
    z = view.latents(torch.zeros(4, 0, 2, 3), torch.zeros(4, 0).long(), torch.zeros(4, 0).bool())
    probs = view.pool_probs(z, pool)
    assert probs.shape == (5 if model_type == "nppl_latent" else 1, 4, 7)
    info = view.scores("information", z, pool, g)
    if model_type == "nppl":
        assert info.abs().max() < 1e-6  # one z: nothing to learn about it
    else:
        assert (info >= -1e-9).all() and info.max() > 0
    result = elicit(view, pool, choices, targets, "uncertainty", 3, seed=0)
    assert result.asked.shape == (4, 3) and result.prob_b.shape == (4, 4, 6)
    assert ((result.prob_b >= 0) & (result.prob_b <= 1)).all()


def test_a_model_without_a_context_is_refused():
    config = RewardModelConfig.from_params({"type": "btl", "input_dim": 3, "hidden_dim": 8})
    with pytest.raises(ConfigError, match="needs an NP-BTL reward model"):
        NPBTLView(build_model(config))


def test_an_answer_no_type_would_give_leaves_the_prior():
    options = torch.tensor([[[0.3, 0.1]]], dtype=torch.float64)
    posterior = type_posterior(options, torch.tensor([[1]]), torch.ones(1, 1, dtype=torch.bool))
    assert torch.equal(posterior, torch.tensor([[0.5, 0.5]], dtype=torch.float64))


def _bank_model():
    config = RewardModelConfig.from_params(
        {"type": "nppl", "input_dim": 3, "hidden_dim": 8, "latent_dim": 4, "num_heads": 2}
    )
    torch.manual_seed(0)
    return build_model(config)


def test_the_population_gain_by_hand_on_a_two_user_bank():
    from steerable_alignment.evaluation.elicitation import PopulationView

    model = _bank_model()
    bank = torch.randn(2, 4, generator=torch.Generator().manual_seed(3))  # (K=2, Z)
    view = PopulationView(model, bank)
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(5, 2, 3, generator=g)
    prepared = view.prepare_pool(pool)
    per_user = view.pool_probs(bank.unsqueeze(1), pool)[:, 0]  # (K, M)
    assert torch.allclose(prepared.bank_probs, per_user)
    # no context: uniform weights, I = H(mean p) - mean H(p)
    z = view.latents(torch.zeros(1, 0, 2, 3), torch.zeros(1, 0).long(), torch.zeros(1, 0).bool())
    gain = view.scores("population", z, prepared, g)[0]
    for m in range(5):
        p0, p1 = float(per_user[0, m]), float(per_user[1, m])
        assert gain[m].item() == pytest.approx(_h((p0 + p1) / 2) - (_h(p0) + _h(p1)) / 2, abs=1e-5)
    # a context answered as bank user 0 would answer weighs user 0 up by its likelihood
    context = pool[:2].unsqueeze(0)  # (1, 2, 2, 3)
    answers = (per_user[0, :2] > 0.5).long().unsqueeze(0)  # (1, 2)
    z = view.latents(context, answers, torch.ones(1, 2, dtype=torch.bool))
    p = per_user[:, :2]
    likely = torch.where(answers.bool(), p, 1 - p).log().sum(-1)  # (K,)
    assert torch.allclose(z.log_weights[0], likely, atol=1e-5)
    # predictions stay the model's own given the context
    own = NPBTLView(model).latents(context, answers, torch.ones(1, 2, dtype=torch.bool))
    targets = torch.randn(1, 4, 2, 3, generator=g)
    assert torch.allclose(
        view.target_probs(z, targets), NPBTLView(model).target_probs(own, targets)
    )


def test_the_population_loop_never_asks_a_pair_twice_and_the_bank_has_its_size():
    from steerable_alignment.evaluation.elicitation import PopulationView, population_bank

    model = _bank_model()
    g = torch.Generator().manual_seed(1)
    features = torch.randn(60, 2, 3, generator=g)
    choices = torch.randint(0, 2, (60, 2), generator=g)
    bank = population_bank(model, features, choices, torch.arange(40), 12, 5, seed=0)
    assert bank.shape == (12, 4)
    again = population_bank(model, features, choices, torch.arange(40), 12, 5, seed=0)
    assert torch.equal(bank, again)
    view = PopulationView(model, bank)
    pool_choices = choices[40:50, 0].repeat(3, 1)  # (B=3, M=10)
    result = elicit(view, features[40:50], pool_choices, torch.randn(3, 4, 2, 3), "population",
                    6, seed=0)  # fmt: skip
    for row in result.asked:
        assert len(set(row.tolist())) == 6


def _latent_view(**kwargs) -> NPBTLView:
    config = RewardModelConfig.from_params(
        {"type": "nppl_latent", "input_dim": 3, "hidden_dim": 8, "latent_dim": 4, "num_heads": 2}
    )
    torch.manual_seed(0)
    return NPBTLView(build_model(config), samples=6, **kwargs)


def test_the_shortlist_scores_the_most_uncertain_unasked_pairs_with_the_exact_gain():
    exact, short = _latent_view(), _latent_view(shortlist=3, budget=64)  # budget: chunks of users
    g = torch.Generator().manual_seed(3)
    pool = torch.randn(9, 2, 3, generator=g)
    context = (torch.randn(5, 2, 2, 3, generator=g), torch.randint(0, 2, (5, 2), generator=g))
    z = exact.latents(*context, torch.ones(5, 2, dtype=torch.bool), g)  # (S, B, Z')
    asked = torch.zeros(5, 9, dtype=torch.bool)
    asked[:, 0] = asked[1, 4] = True
    full = exact.scores("information", z, pool, g)  # (B, M)
    scores = short.scores("information", z, pool, g, asked)
    at_mean = exact.pool_probs(z.mean(0, keepdim=True), pool)[0]
    for user in range(5):
        closeness = (at_mean[user] - 0.5).abs().masked_fill(asked[user], math.inf)
        listed = set(closeness.argsort()[:3].tolist())
        kept = torch.isfinite(scores[user]).nonzero().flatten().tolist()
        assert set(kept) == listed and not asked[user, kept].any()
        assert torch.allclose(scores[user, kept], full[user, kept], atol=1e-6)
    # a shortlist as long as the pool is the exact strategy
    assert torch.equal(_latent_view(shortlist=9).scores("information", z, pool, g), full)


def test_the_shortlisted_loop_never_asks_a_pair_twice():
    view = _latent_view(shortlist=2)
    g = torch.Generator().manual_seed(4)
    pool = torch.randn(6, 2, 3, generator=g)
    choices = torch.randint(0, 2, (4, 6), generator=g)
    result = elicit(view, pool, choices, torch.randn(4, 3, 2, 3, generator=g), "information",
                    6, seed=0)  # fmt: skip
    for row in result.asked:
        assert sorted(row.tolist()) == list(range(6))


@pytest.mark.parametrize("bad", [0, -3, True])
def test_a_bad_shortlist_is_refused(bad):
    with pytest.raises(ConfigError, match="shortlist"):
        _latent_view(shortlist=bad)
