import pytest
import torch

from steerable_alignment.episodes.sampler import PreferenceData
from steerable_alignment.models.config import ConfigError, RewardModelConfig
from steerable_alignment.models.reward_models import build_model
from steerable_alignment.synthetic.task import generate_pairs
from steerable_alignment.training.loop import TrainingConfig, _lr_factor, seeded, train


def tiny_setup():
    pairs = generate_pairs(400, 0.5, (0.6, 0.2, 0.2), seed=0)
    data = PreferenceData(pairs.options.unsqueeze(-1), pairs.choices, ("user_0", "user_1"))
    train_rows = (pairs.split == 0).nonzero().squeeze(1)
    val_rows = (pairs.split == 1).nonzero().squeeze(1)
    return data, train_rows, val_rows


def tiny_config(**kw) -> TrainingConfig:
    params = {
        "max_steps": 6,
        "batch_episodes": 4,
        "num_targets": 8,
        "max_context": 3,
        "eval_every": 3,
        "val_episodes_per_objective": 4,
        "val_context_sizes": [0, 3],
        "progress": False,
        "device": "cpu",
        **kw,
    }
    return TrainingConfig.from_params(params)


def make_model(model_type="nppl", seed=0):
    config = RewardModelConfig.from_params(
        {"type": model_type, "hidden_dim": 16, "latent_dim": 4, "num_heads": 2}
    )
    with seeded(seed):
        return build_model(config)


def test_one_optimiser_step_changes_every_trained_parameter():
    data, train_rows, val_rows = tiny_setup()
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, data, train_rows, val_rows, tiny_config(max_steps=1, eval_every=1))
    after = result.model.state_dict()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    # The reward's output bias cancels in r_b - r_a (BTL is shift invariant),
    # so it gets no gradient; every other parameter must move.
    assert unchanged == ["reward_head.2.bias"]
    assert result.history[0]["step"] == 1


@pytest.mark.parametrize("model_type", ["btl", "nppl_latent"])
def test_training_is_deterministic_from_the_seed(model_type):
    data, train_rows, val_rows = tiny_setup()
    runs = [
        train(make_model(model_type), data, train_rows, val_rows, tiny_config(seed=5))
        for _ in range(2)
    ]
    for key, value in runs[0].model.state_dict().items():
        assert torch.equal(value, runs[1].model.state_dict()[key])
    assert runs[0].history == [
        {**h, "seconds": runs[0].history[i]["seconds"]} for i, h in enumerate(runs[1].history)
    ]


def test_best_validation_checkpoint_is_kept():
    data, train_rows, val_rows = tiny_setup()
    result = train(make_model(), data, train_rows, val_rows, tiny_config(max_steps=9))
    best = min(result.history, key=lambda h: h["val_nll"])
    assert result.best_step == best["step"]
    assert [h["step"] for h in result.history] == [3, 6, 9]


def test_loss_decreases_on_the_synthetic_task():
    data, train_rows, val_rows = tiny_setup()
    config = tiny_config(max_steps=150, eval_every=50, lr=3e-3, batch_episodes=16)
    result = train(make_model("btl"), data, train_rows, val_rows, config)
    assert result.history[-1]["train_loss"] < 0.6 < 0.69  # log 2 at chance
    assert result.history[-1]["val_accuracy"] > 0.7


def test_cosine_schedule_with_warmup():
    config = tiny_config(max_steps=100, lr_schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert _lr_factor(config, 0) == pytest.approx(0.1)
    assert _lr_factor(config, 10) == pytest.approx(1.0)
    assert _lr_factor(config, 100) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"max_context": 8}, "training.max_context"),
        ({"max_context": 10}, "training.max_context"),
        ({"min_context": 5}, "training.min_context"),
        ({"lr_schedule": "linear"}, "training.lr_schedule"),
        ({"device": "tpu"}, "training.device"),
        ({"dtype": "float64"}, "training.dtype"),
        ({"select_by": "loss"}, "training.select_by"),
        ({"max_steps": 0}, "training.max_steps"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_bad_training_parameters_name_the_parameter(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        tiny_config(**override)


def test_splits_too_small_for_an_episode_fail_before_training():
    data, train_rows, val_rows = tiny_setup()
    with pytest.raises(ConfigError, match="validation split has 5"):
        train(make_model(), data, train_rows, val_rows[:5], tiny_config())


def test_checkpoint_selected_by_accuracy():
    data, train_rows, val_rows = tiny_setup()
    result = train(
        make_model(), data, train_rows, val_rows, tiny_config(max_steps=9, select_by="accuracy")
    )
    best = max(result.history, key=lambda h: h["val_accuracy"])  # first of ties
    assert result.best_step == best["step"]
