import pytest
import torch

from steerable_alignment.episodes.sampler import (
    EpisodeSampler,
    PreferenceData,
    make_evaluation_episodes,
    sample_distinct,
)

P, D = 200, 3


def make_data() -> PreferenceData:
    g = torch.Generator().manual_seed(0)
    features = torch.arange(P, dtype=torch.float32).view(P, 1, 1).expand(P, 2, D).clone()
    choices = torch.randint(2, (P, 2), generator=g)
    return PreferenceData(features, choices, ("u0", "u1"))


@pytest.mark.parametrize("population", [25, 400, 100_000])  # random order / rejection paths
def test_sample_distinct_rows_are_distinct_and_in_range(population):
    g = torch.Generator().manual_seed(0)
    draws = sample_distinct(population, (500, 20), g, torch.device("cpu"))
    assert draws.shape == (500, 20)
    assert int(draws.min()) >= 0 and int(draws.max()) < population
    assert all(len(set(row.tolist())) == 20 for row in draws)
    # Roughly uniform: every value about equally often.
    if population == 25:
        counts = draws.flatten().bincount(minlength=25).float()
        assert float(counts.min()) > 0.8 * float(counts.mean())


def test_training_episodes_reproducible_from_seed_and_context_within_targets():
    data = make_data()
    split = torch.arange(0, 150)
    batches = []
    for _ in range(2):
        sampler = EpisodeSampler(split, torch.tensor([0, 1]), 12, 0, 5, seed=7)
        batches.append([sampler.sample(16).batch(data, 5) for _ in range(3)])
    for a, b in zip(*batches):
        assert torch.equal(a.target_features, b.target_features)
        assert torch.equal(a.context_mask, b.context_mask)
        assert torch.equal(a.objective, b.objective)
    other = EpisodeSampler(split, torch.tensor([0, 1]), 12, 0, 5, seed=8).sample(16).batch(data, 5)
    assert not torch.equal(other.target_features, batches[0][0].target_features)

    batch = batches[0][0]
    ids = batch.target_features[..., 0, 0].long()  # (B, T) the row ids
    assert int(ids.max()) < 150  # only the split's rows
    assert all(len(set(row.tolist())) == 12 for row in ids)
    context_ids = batch.context_features[..., 0, 0].long()
    assert torch.equal(context_ids, ids[:, :5])  # context slots are targets
    counts = batch.context_mask.sum(1)
    assert int(counts.min()) >= 0 and int(counts.max()) <= 5
    # Choices follow each episode's objective.
    expected = data.choices[ids, batch.objective.unsqueeze(1)]
    assert torch.equal(batch.target_choices, expected)


def test_evaluation_episodes_disjoint_balanced_and_seeded():
    data = make_data()
    split = torch.arange(100, 200)
    episodes = make_evaluation_episodes(split, torch.tensor([0, 1]), 30, 8, 4, seed=1)
    again = make_evaluation_episodes(split, torch.tensor([0, 1]), 30, 8, 4, seed=1)
    assert torch.equal(episodes.rows, again.rows)
    assert len(episodes) == 60 and episodes.num_targets == 8
    assert torch.equal(episodes.objective.bincount(), torch.tensor([30, 30]))
    for n in (0, 2, 4):
        batch = episodes.batch(data, n)
        assert batch.context_features.shape == (60, n, 2, D)
        context = batch.context_features[..., 0, 0].long()
        targets = batch.target_features[..., 0, 0].long()
        assert int(targets.min()) >= 100
        for c, t in zip(context.tolist(), targets.tolist()):
            assert not set(c) & set(t)
        # Same scored targets at every context size.
        assert torch.equal(targets, episodes.batch(data, 0).target_features[..., 0, 0].long())


def test_unknown_objective_lists_valid_ones():
    with pytest.raises(ValueError, match=r"valid objectives: \['u0', 'u1'\]"):
        make_data().objective_ids(["u2"])


def test_episode_slices_and_batches_agree_with_the_whole():
    data = make_data()
    episodes = EpisodeSampler(torch.arange(150), torch.tensor([0, 1]), 12, 2, 5, seed=3).sample(8)
    assert len(episodes) == 8 and episodes.rows.shape == (8, 12)
    assert int(episodes.num_context.min()) >= 2 and int(episodes.num_context.max()) <= 5
    whole, half = episodes.batch(data, 5), episodes.slice(4, 8).batch(data, 5)
    assert torch.equal(half.target_features, whole.target_features[4:])
    assert torch.equal(half.context_mask, whole.context_mask[4:])
    assert torch.equal(whole.context_mask.sum(1), episodes.num_context)


def test_the_sampler_refuses_a_context_larger_than_the_targets():
    with pytest.raises(ValueError, match="max_context < num_targets"):
        EpisodeSampler(torch.arange(20), torch.tensor([0]), 4, 0, 4, seed=0)
