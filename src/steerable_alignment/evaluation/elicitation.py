"""Active elicitation: which pair to ask a new user next (issue 15), framework-free.

Given an NP-BTL reward model, each simulated user's current context (the
pairs asked so far and their choices) and a pool of candidate pairs, a
*strategy* scores every candidate and the best not-yet-asked one is asked;
the simulated user answers with their own choice, the answer joins the
context, and so on. Everything is batched over users on the model's device
and seeded.

Strategies (:data:`STRATEGIES`):

- ``random``: a uniform draw among the pairs not asked yet.
- ``uncertainty``: the pair whose predicted choice probability (the
  posterior predictive under the current context) is closest to ½.
- ``information``: the expected information gain about the user latent,
  the mutual information between the user's choice ``c`` and ``z`` under
  ``q(z | C)``: ``H(E_z[p]) − E_z[H(p)]`` (BALD), estimated with posterior
  draws of z. A deterministic model has one z, so its gain is 0 for every
  pair: it needs the latent model. Its cost is S passes over the pool per
  user; ``NPBTLView(shortlist=K)`` scores the gain of only each user's K
  pairs most uncertain under the mean z (one pass, then S passes over K).
- ``population``: the same expected information gain, about *which user of
  a population* the new user is. The population is a bank of K decoder
  latents of training users (:func:`population_bank`: the model's own z of
  K random training contexts); the new user's context weighs them by its
  likelihood under each (an empirical posterior over the bank), so any
  NP-BTL model, deterministic included, can score what an answer would
  reveal. Predictions stay the model's own z given the context
  (:class:`PopulationView`); only the choice of pair changes.

For the synthetic task, :func:`bayes_active_probs` and
:func:`bayes_information` give the exact Bayes-optimal active policy: the
posterior over the two user types is exact, and asking the pair of largest
information gain under it (a pair the two types disagree on) identifies the
user with one question.

Shapes: B users, M pool pairs, N context slots, T scored targets, S draws
of z, D feature size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from steerable_alignment.models.config import ConfigError
from steerable_alignment.synthetic.task import choice_probabilities

STRATEGIES = ("random", "uncertainty", "information", "population")


def check_strategies(names: list[str] | tuple[str, ...], parameter: str) -> tuple[str, ...]:
    """The strategy names, or a :class:`ConfigError` listing the valid ones."""
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise ConfigError(
            f"Parameter '{parameter}': unknown strategy {unknown}; valid strategies: "
            f"{list(STRATEGIES)}"
        )
    if not names:
        raise ConfigError(f"Parameter '{parameter}': name at least one of {list(STRATEGIES)}")
    return tuple(names)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of a Bernoulli(p), elementwise (exactly 0 at p = 0 or 1)."""
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))


def mutual_information(probs: torch.Tensor) -> torch.Tensor:
    """``I(c; z) = H(E_s[p_s]) − E_s[H(p_s)]`` from (S, ...) choice probabilities per draw."""
    return binary_entropy(probs.mean(0)) - binary_entropy(probs).mean(0)


def acquisition(strategy: str, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, M) scores, higher is asked first, from (S, B, M) per-draw choice probabilities."""
    if strategy == "random":
        return torch.rand(probs.shape[1:], generator=generator, device=probs.device)
    if strategy == "uncertainty":
        return -(probs.mean(0) - 0.5).abs()
    if strategy == "information":
        return mutual_information(probs)
    raise ConfigError(f"Unknown strategy {strategy!r}; valid strategies: {list(STRATEGIES)}")


# -- the model's view ------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedPool:
    """A pool's options through the model's option encoder, computed once for every user.

    Attributes:
        encoded: (1, 2M, H) the options' half of the reward head's first layer.
        size: M, the number of pairs.
    """

    encoded: torch.Tensor
    size: int


class NPBTLView:
    """An NP-BTL reward model as the elicitation loop needs it.

    Args:
        model: an ``NPBTLRewardModel`` (deterministic ``nppl`` or ``nppl_latent``).
        samples: draws of z from ``q(z|C)`` for the latent model (ignored
            for the deterministic one, which has a single z).
        budget: most elements of the (S, users, 2M, H) hidden tensor held at
            once; users are taken in chunks that fit. Results do not depend
            on it; speed does: on a 2-core CPU 2**20 scored a pool of 1,000
            for 1,000 users 5x faster than 2**25, and 2**22 (16 MB) about
            1.3x faster than 2**20, with or without a shortlist
            (benchmarks/elicitation_selection.py).
        shortlist: for ``information`` with a latent model, score the gain
            of only the ``shortlist`` pairs whose choice is most uncertain
            under the mean of the draws of z (one pass over the pool instead
            of S); the others are not asked. ``None``: every pair.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        samples: int = 32,
        budget: int = 2**22,
        shortlist: int | None = None,
    ) -> None:
        if not hasattr(model, "sample_decoder_latents"):
            raise ConfigError(
                f"Active elicitation needs an NP-BTL reward model (nppl, nppl_latent), got "
                f"{type(model).__name__}"
            )
        self.model = model.eval()
        self.latent = bool(getattr(model, "latent", False))
        self.samples = samples if self.latent else 1
        self.budget = budget
        self.shortlist = shortlist
        if self.latent and samples < 2:
            raise ConfigError(f"a latent model needs at least 2 draws of z, got {samples}")
        if shortlist is not None and (isinstance(shortlist, bool) or shortlist < 1):
            raise ConfigError(
                f"shortlist: expected a positive number of pairs or null, got {shortlist!r}"
            )

    @torch.no_grad()
    def latents(
        self,
        features: torch.Tensor,
        choices: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(S, B, Z') decoder latents from contexts ``(B, N, 2, D)``, ``(B, N)``, ``(B, N)``."""
        return self.model.sample_decoder_latents(features, choices, mask, self.samples, generator)

    @torch.no_grad()
    def prepare_pool(self, pool: torch.Tensor) -> EncodedPool:
        """Encode pool pairs ``(M, 2, D)`` once, for every user and step."""
        return self._encoded(pool)

    @torch.no_grad()
    def _encoded(self, pool: Any) -> EncodedPool:
        """The model's encoding of raw pairs ``(M, 2, D)``, or of an already prepared pool."""
        if isinstance(pool, EncodedPool):
            return pool
        if isinstance(pool, PopulationPool):
            return pool.encoded
        options = pool.reshape(1, -1, pool.shape[-1])  # (1, 2M, D): shared by every user
        return EncodedPool(self.model.encode_options(options), pool.shape[0])

    @torch.no_grad()
    def pool_probs(self, z: torch.Tensor, pool: torch.Tensor | EncodedPool) -> torch.Tensor:
        """(S, B, M) ``P(b ≻ a)`` of pool pairs under each draw ``(S, B, Z')``.

        ``pool``: the pairs ``(M, 2, D)`` or their :meth:`prepare_pool` encoding.
        """
        pool = self._encoded(pool)
        samples, users = z.shape[:2]
        rows = z.reshape(1, samples * users, z.shape[-1])  # (1, S*B, Z'): one row per draw
        step = max(1, self.budget // (pool.encoded.shape[-2] * pool.encoded.shape[-1]))
        # One output buffer written in place: many small results kept alive between
        # the large per-chunk temporaries fragment the heap (seen: +0.7 MB per chunk).
        probs = torch.empty(samples * users, pool.size, dtype=z.dtype, device=z.device)
        for lo in range(0, rows.shape[1], step):
            rewards = self.model.reward_from_encoded(pool.encoded, rows[:, lo : lo + step])
            rewards = rewards.reshape(-1, pool.size, 2)  # (rows, M, 2)
            torch.sigmoid(rewards[..., 1] - rewards[..., 0], out=probs[lo : lo + step])
        return probs.reshape(samples, users, pool.size)

    def scores(
        self,
        strategy: str,
        z: torch.Tensor,
        pool: torch.Tensor | EncodedPool,
        generator: torch.Generator,
        asked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, M) how worth asking each pool pair is (higher first).

        ``asked``: (B, M) bool, pairs already asked (kept out of the shortlist).
        """
        if strategy == "random":  # the same draws as acquisition's, without scoring the pool
            size = pool.size if isinstance(pool, EncodedPool | PopulationPool) else pool.shape[0]
            return torch.rand((z.shape[1], size), generator=generator, device=z.device)
        pool = self._encoded(pool)
        if strategy == "information" and self.latent and self.shortlist is not None:
            if self.shortlist < pool.size:
                return self._shortlisted_information(z, pool, asked)
        return acquisition(strategy, self.pool_probs(z, pool), generator)

    @torch.no_grad()
    def _shortlisted_information(
        self, z: torch.Tensor, pool: EncodedPool, asked: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, M) the gain of each user's ``shortlist`` most uncertain pairs; −inf elsewhere.

        The shortlist: the unasked pairs whose ``P(b ≻ a)`` under the mean of the
        draws ``(S, B, Z')`` is closest to ½ (the gain is at most the entropy of
        the predictive, and a pair the user's z agrees on has little of either).
        """
        samples, users = z.shape[:2]
        at_mean = self.pool_probs(z.mean(0, keepdim=True), pool)[0]  # (B, M)
        prescreen = -(at_mean - 0.5).abs()
        if asked is not None:
            prescreen = prescreen.masked_fill(asked, -math.inf)
        k = self.shortlist
        picked = prescreen.topk(k, dim=-1).indices  # (B, K)
        sides = torch.stack([2 * picked, 2 * picked + 1], dim=-1).reshape(users, 2 * k)
        hidden = pool.encoded.shape[-1]
        step = max(1, self.budget // (samples * 2 * k * hidden))
        gain = torch.empty(users, k, dtype=z.dtype, device=z.device)
        for lo in range(0, users, step):
            part = slice(lo, lo + step)
            encoded = pool.encoded[0][sides[part]]  # (b, 2K, H): each user's own shortlist
            rewards = self.model.reward_from_encoded(encoded, z[:, part])  # (S, b, 2K)
            rewards = rewards.reshape(samples, -1, k, 2)
            gain[part] = mutual_information(torch.sigmoid(rewards[..., 1] - rewards[..., 0]))
        scores = torch.full((users, pool.size), -math.inf, dtype=z.dtype, device=z.device)
        return scores.scatter_(1, picked, gain)

    @torch.no_grad()
    def target_probs(self, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, T) posterior-predictive ``P(b ≻ a)`` of each user's targets ``(B, T, 2, D)``."""
        b, t = targets.shape[:2]
        rewards = self.model.reward(targets.reshape(b, 2 * t, -1), z)  # (S, B, 2T)
        rewards = rewards.reshape(*rewards.shape[:-1], t, 2)
        return torch.sigmoid(rewards[..., 1] - rewards[..., 0]).double().mean(0)  # (B, T)


def population_bank(
    model: torch.nn.Module,
    features: torch.Tensor,
    choices: torch.Tensor,
    rows: torch.Tensor,
    size: int,
    max_context: int,
    seed: int,
) -> torch.Tensor:
    """(K, Z') decoder latents of ``size`` simulated training users, the population prior.

    Each is the model's plug-in latent of a random context: an objective
    (column of ``choices``) drawn uniformly, 1..``max_context`` distinct
    ``rows`` (the train split) answered by that objective.

    Args:
        features: (P, 2, D) every pair's features; ``choices``: (P, K_obj) long.
        rows: (R,) the rows contexts are drawn from.
    """
    from steerable_alignment.episodes.sampler import sample_distinct

    generator = torch.Generator().manual_seed(seed)
    objective = torch.randint(choices.shape[1], (size,), generator=generator)  # (K,)
    picks = rows[sample_distinct(len(rows), (size, max_context), generator, torch.device("cpu"))]
    sizes = torch.randint(1, max_context + 1, (size,), generator=generator)  # (K,)
    mask = torch.arange(max_context).unsqueeze(0) < sizes.unsqueeze(1)  # (K, N)
    device = next(model.parameters()).device
    with torch.no_grad():
        return model.eval().decoder_latent(
            features[picks].to(device),
            choices[picks, objective.unsqueeze(1)].to(device),
            mask.to(device),
        )  # (K, Z')


@dataclass(frozen=True)
class PopulationLatents:
    """What :class:`PopulationView` knows of each user.

    Attributes:
        own: (S, B, Z') the model's latents of the users' contexts (its predictions).
        log_weights: (B, K) log posterior weights of the bank given each context.
    """

    own: torch.Tensor
    log_weights: torch.Tensor


@dataclass(frozen=True)
class PopulationPool:
    """A pool for :class:`PopulationView`: the model's encoding and the bank's predictions.

    Attributes:
        encoded: the pool as :meth:`NPBTLView.prepare_pool` encodes it.
        bank_probs: (K, M) ``P(b ≻ a)`` of every pool pair for every bank user.
    """

    encoded: EncodedPool
    bank_probs: torch.Tensor

    @property
    def size(self) -> int:
        return self.encoded.size


class PopulationView(NPBTLView):
    """An NP-BTL model that also scores pairs by what they reveal about a user population.

    Args:
        model: an NP-BTL reward model.
        bank: (K, Z') decoder latents of training users (:func:`population_bank`).
        samples, budget, shortlist: as :class:`NPBTLView` (for the model's own predictions).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        bank: torch.Tensor,
        samples: int = 32,
        budget: int = 2**22,
        shortlist: int | None = None,
    ) -> None:
        super().__init__(model, samples, budget, shortlist)
        self.bank = bank  # (K, Z')

    @torch.no_grad()
    def latents(self, features, choices, mask, generator=None) -> PopulationLatents:
        own = super().latents(features, choices, mask, generator)  # (S, B, Z')
        b, n = choices.shape
        k = self.bank.shape[0]
        if n == 0:
            return PopulationLatents(own, torch.zeros(b, k, device=own.device))
        options = features.reshape(b, 2 * n, features.shape[-1])  # (B, 2N, D)
        encoded = self.model.encode_options(options)  # (B, 2N, H)
        step = max(1, self.budget // (b * 2 * n * encoded.shape[-1]))
        log_weights = torch.zeros(b, k, device=own.device)
        for lo in range(0, k, step):
            z = self.bank[lo : lo + step].unsqueeze(1).expand(-1, b, -1)  # (k', B, Z')
            rewards = self.model.reward_from_encoded(encoded, z).reshape(-1, b, n, 2)
            margin = rewards[..., 1] - rewards[..., 0]  # (k', B, N): log-odds of b
            signed = torch.where(choices.bool(), margin, -margin)
            picked = torch.nn.functional.logsigmoid(signed).masked_fill(~mask, 0.0)
            log_weights[:, lo : lo + step] = picked.sum(-1).T  # (B, k')
        return PopulationLatents(own, log_weights)

    @torch.no_grad()
    def prepare_pool(self, pool: torch.Tensor) -> PopulationPool:
        if isinstance(pool, PopulationPool):
            return pool
        encoded = self._encoded(pool)
        bank_probs = super().pool_probs(self.bank.unsqueeze(1), encoded)[:, 0]  # (K, M)
        return PopulationPool(encoded, bank_probs)

    def scores(self, strategy, z: PopulationLatents, pool, generator, asked=None) -> torch.Tensor:
        pool = self.prepare_pool(pool)
        if strategy != "population":
            return super().scores(strategy, z.own, pool.encoded, generator, asked)
        weights = torch.softmax(z.log_weights, dim=-1)  # (B, K)
        mixed = (weights @ pool.bank_probs).clamp(0.0, 1.0)  # (B, M) population predictive
        expected = weights @ binary_entropy(pool.bank_probs)  # (B, M)
        return binary_entropy(mixed) - expected

    def pool_probs(self, z, pool) -> torch.Tensor:
        own = z.own if isinstance(z, PopulationLatents) else z
        return super().pool_probs(own, pool)

    def target_probs(self, z: PopulationLatents, targets: torch.Tensor) -> torch.Tensor:
        return super().target_probs(z.own, targets)


# -- the sequential loop ---------------------------------------------------------------------


@dataclass(frozen=True)
class ElicitationResult:
    """What a sequential run asked and how well it then predicted.

    Attributes:
        asked: (B, K) long pool indices asked, in order (never repeated).
        prob_b: (K + 1, B, T) float64 target predictions after 0..K asked pairs.
    """

    asked: torch.Tensor
    prob_b: torch.Tensor


def select_next(
    view: NPBTLView | BayesView,
    z: torch.Tensor,
    pool: torch.Tensor | EncodedPool,
    asked: torch.Tensor,
    strategy: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """(B,) long: the pool pair each user is asked next, never one already asked.

    Args:
        view: the model.
        z: the users' latents from ``view.latents`` (their current contexts).
        pool: the pool, as :meth:`NPBTLView.prepare_pool` (or the raw pairs) gives it.
        asked: (B, M) bool, pairs already asked of each user.
        strategy: one of :data:`STRATEGIES`.
        generator: seeds ``random``.
    """
    scores = view.scores(strategy, z, pool, generator, asked)
    return scores.masked_fill(asked, -math.inf).argmax(-1)  # never ask a pair twice


def elicit(
    view: NPBTLView,
    pool_features: torch.Tensor,
    pool_choices: torch.Tensor,
    target_features: torch.Tensor,
    strategy: str,
    steps: int,
    seed: int,
    chunk: int = 256,
) -> ElicitationResult:
    """Ask ``steps`` pairs of each user, one at a time, from a shared pool.

    Args:
        view: the model.
        pool_features: (M, 2, D) candidate pairs (never among the targets).
        pool_choices: (B, M) long, what each simulated user would answer.
        target_features: (B, T, 2, D) each user's scored targets.
        strategy: one of :data:`STRATEGIES`.
        steps: K pairs asked per user (K <= M).
        seed: seeds the random strategy and the draws of z.
        chunk: users per forward pass (memory: chunk x M x hidden).

    Returns:
        The pairs asked and the target predictions after each step.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown strategy {strategy!r}; valid strategies: {list(STRATEGIES)}")
    num_users, pool_size = pool_choices.shape
    if steps > pool_size:
        raise ValueError(f"cannot ask {steps} distinct pairs from a pool of {pool_size}")
    device = pool_features.device
    generator = torch.Generator(device=device).manual_seed(seed)
    dim = pool_features.shape[-1]
    context = torch.zeros(num_users, steps, 2, dim, dtype=pool_features.dtype, device=device)
    answers = torch.zeros(num_users, steps, dtype=torch.long, device=device)
    mask = torch.zeros(num_users, steps, dtype=torch.bool, device=device)
    asked = torch.zeros(num_users, pool_size, dtype=torch.bool, device=device)
    order = torch.zeros(num_users, steps, dtype=torch.long, device=device)
    predictions = []
    users = torch.arange(num_users, device=device)
    prepared = view.prepare_pool(pool_features)
    for k in range(steps + 1):
        probs_k = []
        for lo in range(0, num_users, chunk):
            part = slice(lo, lo + chunk)
            z = view.latents(context[part], answers[part], mask[part], generator)
            probs_k.append(view.target_probs(z, target_features[part]))
            if k == steps:
                continue
            pick = select_next(view, z, prepared, asked[part], strategy, generator)  # (b,)
            rows = users[part]
            order[rows, k] = pick
            asked[rows, pick] = True
        predictions.append(torch.cat(probs_k).cpu())
        if k < steps:
            picked = order[:, k]
            context[:, k] = pool_features[picked]
            answers[:, k] = pool_choices[users, picked]
            mask[:, k] = True
    return ElicitationResult(order.cpu(), torch.stack(predictions))


# -- the synthetic task's exact oracle --------------------------------------------------------


def type_posterior(
    options: torch.Tensor, choices: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """(B, 2) exact posterior over the two user types (uniform prior) from scalar contexts.

    A context no type could have answered (possible only with noisy answers)
    leaves the prior.
    """
    prob_b = choice_probabilities(options.double(), threshold)  # (B, N, 2 types)
    c = choices.unsqueeze(-1).double()
    likelihood = c * prob_b + (1 - c) * (1 - prob_b)
    likelihood = torch.where(mask.unsqueeze(-1), likelihood, torch.ones_like(likelihood))
    posterior = likelihood.prod(1)
    total = posterior.sum(-1, keepdim=True)
    return torch.where(
        total > 0, posterior / total.clamp_min(1e-300), torch.full_like(posterior, 0.5)
    )


class BayesView:
    """The synthetic task's exact model, in the shape :func:`elicit` reads.

    Its "latent" is the exact posterior over the two user types (B, 2); the
    choice probabilities per type are the task's own. With ``information``
    it is the Bayes-optimal active policy; its target predictions are the
    Bayes oracle's (:func:`~steerable_alignment.synthetic.task.bayes_optimal_prob_b`).
    Features are the scalar option values, ``(..., 2, 1)``.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def latents(self, features, choices, mask, generator=None) -> torch.Tensor:
        return type_posterior(features[..., 0], choices, mask, self.threshold)  # (B, 2)

    def prepare_pool(self, pool: torch.Tensor) -> torch.Tensor:
        return pool  # the option values are all it reads

    def scores(
        self,
        strategy: str,
        posterior: torch.Tensor,
        pool: torch.Tensor,
        generator: torch.Generator,
        asked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        per_type = choice_probabilities(pool[..., 0].double(), self.threshold)  # (M, 2)
        per_type = per_type.T.unsqueeze(1).expand(-1, posterior.shape[0], -1)  # (2, B, M)
        weights = posterior.T.unsqueeze(-1)  # (2, B, 1)
        mixed = (weights * per_type).sum(0)  # (B, M)
        if strategy in ("information", "population"):  # its population is the two types
            return binary_entropy(mixed) - (weights * binary_entropy(per_type)).sum(0)
        if strategy == "uncertainty":
            return -(mixed - 0.5).abs()
        return acquisition(strategy, per_type, generator)

    def target_probs(self, posterior: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_type = choice_probabilities(targets[..., 0].double(), self.threshold)  # (B, T, 2)
        return (per_type * posterior.unsqueeze(1)).sum(-1)
