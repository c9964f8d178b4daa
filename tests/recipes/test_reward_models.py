import math

import pytest
import torch

from steerable_alignment.episodes.sampler import PreferenceData
from steerable_alignment.models.config import ConfigError, RewardModelConfig
from steerable_alignment.models.reward_models import build_model
from steerable_alignment.recipes import reward_models as loop
from steerable_alignment.recipes.reward_models import TrainingConfig, train
from steerable_alignment.runtime.devices import seeded
from steerable_alignment.synthetic.task import generate_pairs
from steerable_alignment.training.config import lr_factor as _lr_factor


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


# Scripted validation scores for the validations at steps 3, 6 and 9: the
# lowest NLL is at step 6, the highest accuracy at step 3 (tied with step 9).
SCRIPTED_SCORES = {3: (0.60, 0.80), 6: (0.40, 0.50), 9: (0.50, 0.80)}


def snapshot_validations(monkeypatch) -> dict[int, dict[str, torch.Tensor]]:
    """Replace ``validate_model`` by a spy that copies the weights it is shown.

    Returns the dict it fills: validation step -> the model's state dict at
    that validation. The spy returns ``SCRIPTED_SCORES`` so that the best step
    is known in advance and is not the last one.
    """
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    steps = iter(sorted(SCRIPTED_SCORES))

    def spy(model, *args, **kwargs):
        step = next(steps)
        snapshots[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return SCRIPTED_SCORES[step]

    monkeypatch.setattr(loop, "validate_model", spy)
    return snapshots


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("select_by", "best_step"), [("nll", 6), ("accuracy", 3)])
def test_returned_weights_are_the_best_steps_weights(monkeypatch, select_by, best_step):
    data, train_rows, val_rows = tiny_setup()
    snapshots = snapshot_validations(monkeypatch)
    config = tiny_config(max_steps=9, select_by=select_by)
    result = train(make_model(), data, train_rows, val_rows, config)
    assert [h["step"] for h in result.history] == sorted(snapshots) == [3, 6, 9]
    assert result.best_step == best_step
    returned = result.model.state_dict()
    assert same_weights(returned, snapshots[best_step])
    # Training moved the weights after the best step, and the final ones were dropped.
    assert not same_weights(snapshots[best_step], snapshots[9])
    assert not same_weights(returned, snapshots[9])


def test_loss_decreases_on_the_synthetic_task():
    data, train_rows, val_rows = tiny_setup()
    config = tiny_config(max_steps=150, eval_every=50, lr=3e-3, batch_episodes=16)
    result = train(make_model("btl"), data, train_rows, val_rows, config)
    assert result.history[-1]["train_loss"] < 0.6 < 0.69  # log 2 at chance
    assert result.history[-1]["val_accuracy"] > 0.7


def test_cosine_schedule_with_warmup():
    # Warm-up over 4 steps, (step + 1) / 4, then a cosine from 1 down to
    # min_lr_ratio over the remaining 16 steps:
    # 0.2 + 0.8 * 0.5 * (1 + cos(pi * (step - 4) / 16)).
    config = tiny_config(max_steps=20, lr_schedule="cosine", warmup_steps=4, min_lr_ratio=0.2)
    expected = {
        0: 0.25,
        1: 0.5,
        2: 0.75,
        3: 1.0,
        4: 1.0,
        8: 0.2 + 0.4 * (1 + math.sqrt(0.5)),  # a quarter of the way: cos(pi/4)
        12: 0.6,  # half way: cos(pi/2) = 0
        20: 0.2,
        25: 0.2,  # held at the floor past max_steps
    }
    for step, factor in expected.items():
        assert _lr_factor(config, step) == pytest.approx(factor, abs=1e-12), step


def test_constant_schedule_with_warmup():
    config = tiny_config(max_steps=20, warmup_steps=4, min_lr_ratio=0.2)
    assert [_lr_factor(config, s) for s in range(7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]


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
    with pytest.raises(ConfigError, match="validation split has 5") as err:
        train(make_model(), data, train_rows, val_rows[:5], tiny_config())
    # the smallest change that works is named: max_context 3 + num_targets 2 = 5 pairs
    assert "with 5 pairs, max_context 3 and num_targets 2 (or smaller) would fit" in str(err.value)
    with pytest.raises(ConfigError, match="train split has 5") as err:
        train(make_model(), data, train_rows[:5], val_rows, tiny_config())
    assert "max_context 3 and num_targets 5" in str(err.value)  # training: context ⊆ targets


def test_checkpoint_selected_by_accuracy():
    data, train_rows, val_rows = tiny_setup()
    result = train(
        make_model(), data, train_rows, val_rows, tiny_config(max_steps=9, select_by="accuracy")
    )
    best = max(result.history, key=lambda h: h["val_accuracy"])  # first of ties
    assert result.best_step == best["step"]
