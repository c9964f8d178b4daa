"""The reward-model training loop's checkpoints: a run stopped midway and started again ends
exactly as an uninterrupted run; a checkpoint of another run is refused."""

from __future__ import annotations

import json

import pytest
import torch

from steerable_alignment.models.config import ConfigError
from steerable_alignment.recipes.reward_models import train
from steerable_alignment.training import loop
from steerable_alignment.training.checkpointing import STATE_JSON, STATE_TENSORS
from tests.recipes.test_reward_models import make_model, tiny_config, tiny_setup


class _Killed(Exception):
    """Stands for the process being killed."""


def _without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def _same_weights(left, right):
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


# nppl_latent draws its latent z from torch's global RNG in training and validation, so it
# also checks that the RNG state is restored; btl checks the plain path.
@pytest.mark.parametrize("model_type", ["nppl_latent", "btl"])
def test_a_stopped_and_resumed_run_ends_as_an_uninterrupted_one(model_type, tmp_path, monkeypatch):
    data, train_rows, val_rows = tiny_setup()
    # checkpoints at 2, 4, 6, 7; validations at 3, 6, 7: the checkpoint at step 4 holds a
    # running train loss, a cosine schedule in warm-up and a best state from step 3
    settings = dict(
        max_steps=7, eval_every=3, checkpoint_every=2, lr_schedule="cosine", warmup_steps=3
    )
    full = train(
        make_model(model_type),
        data,
        train_rows,
        val_rows,
        tiny_config(**settings, checkpoint_dir=str(tmp_path / "full")),
    )

    # killed while sampling step 5: the last checkpoint is step 4, step 5 is lost
    real_sample = loop.EpisodeSampler.sample
    calls = {"n": 0}

    def sample_then_die(self, batch_size):
        calls["n"] += 1
        if calls["n"] == 5:
            raise _Killed
        return real_sample(self, batch_size)

    monkeypatch.setattr(loop.EpisodeSampler, "sample", sample_then_die)
    config = tiny_config(**settings, checkpoint_dir=str(tmp_path / "resumed"))
    with pytest.raises(_Killed):
        train(make_model(model_type), data, train_rows, val_rows, config)
    monkeypatch.setattr(loop.EpisodeSampler, "sample", real_sample)
    assert [p.name for p in (tmp_path / "resumed").iterdir()] == ["step-00000004"]
    saved = json.loads((tmp_path / "resumed/step-00000004" / STATE_JSON).read_text())
    assert saved["step"] == 4 and [row["step"] for row in saved["history"]] == [3]

    # started again with the same configuration; the fresh model's other init is overwritten
    resumed = train(make_model(model_type, seed=99), data, train_rows, val_rows, config)
    assert (resumed.resumed_from, full.resumed_from) == (4, 0)
    _same_weights(resumed.model.state_dict(), full.model.state_dict())
    assert resumed.best_step == full.best_step
    assert _without_seconds(resumed.history) == _without_seconds(full.history)
    assert [row["step"] for row in full.history] == [3, 6, 7]
    # the last checkpoints (the current weights, optimiser, RNGs) are identical too
    from safetensors.torch import load_file

    last = [
        load_file(tmp_path / run / "step-00000007" / STATE_TENSORS) for run in ("full", "resumed")
    ]
    _same_weights(*last)
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["step-00000007"]


def test_a_finished_run_started_again_trains_no_more(tmp_path, monkeypatch):
    data, train_rows, val_rows = tiny_setup()
    config = tiny_config(checkpoint_every=3, checkpoint_dir=str(tmp_path))
    first = train(make_model(), data, train_rows, val_rows, config)
    monkeypatch.setattr(loop.EpisodeSampler, "sample", lambda *a: pytest.fail("trained"))
    again = train(make_model(seed=5), data, train_rows, val_rows, config)
    assert again.resumed_from == config.max_steps and again.best_step == first.best_step
    _same_weights(again.model.state_dict(), first.model.state_dict())


def test_settings_that_do_not_change_the_result_may_change_on_resume(tmp_path):
    data, train_rows, val_rows = tiny_setup()
    train(
        make_model(),
        data,
        train_rows,
        val_rows,
        tiny_config(max_steps=3, checkpoint_every=3, checkpoint_dir=str(tmp_path)),
    )
    config = tiny_config(
        max_steps=3, checkpoint_every=1, checkpoint_dir=str(tmp_path), num_threads=1
    )
    assert train(make_model(), data, train_rows, val_rows, config).resumed_from == 3


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"config": {"lr": 3e-3}}, r"training\.lr': \(0\.0001, 0\.003\)"),
        ({"config": {"seed": 1, "max_steps": 9}}, r"training\.max_steps.*training\.seed"),
        ({"model": "btl"}, r"model\.class': \('NPBTLRewardModel', 'BTLRewardModel'\)"),
        ({"val_rows": slice(1, None)}, r"data\.digest"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused_naming_the_differences(tmp_path, change, needle):
    data, train_rows, val_rows = tiny_setup()
    settings = dict(max_steps=3, checkpoint_every=3, checkpoint_dir=str(tmp_path))
    train(make_model(), data, train_rows, val_rows, tiny_config(**settings))
    config = tiny_config(**{**settings, **change.get("config", {})})
    model = make_model(change.get("model", "nppl"))
    val_rows = val_rows[change.get("val_rows", slice(None))]
    with pytest.raises(ConfigError, match=needle) as error:
        train(model, data, train_rows, val_rows, config)
    assert "another 'training.checkpoint_dir'" in str(error.value)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"checkpoint_every": 2}, r"training\.checkpoint_dir.*needed"),
        ({"checkpoint_every": -1, "checkpoint_dir": "x"}, r"training\.checkpoint_every"),
        ({"keep_checkpoints": 0}, r"training\.keep_checkpoints"),
    ],
)
def test_bad_checkpoint_parameters_name_the_parameter(override, needle):
    with pytest.raises(ConfigError, match=needle):
        tiny_config(**override)


def test_checkpoints_are_off_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, train_rows, val_rows = tiny_setup()
    train(make_model(), data, train_rows, val_rows, tiny_config(max_steps=2))
    assert list(tmp_path.iterdir()) == []


def test_the_reward_modelling_node_resumes_from_its_checkpoint_parameters(
    tiny_synthetic, tmp_path, monkeypatch
):
    import copy

    from steerable_alignment.pipelines.reward_modelling.nodes import train_reward_model
    from tests.pipelines.helpers import project_parameters

    params = project_parameters()["reward_modelling"]["synthetic"]
    assert params["nppl"]["training"]["checkpoint_dir"] is None  # off unless asked for
    variant = copy.deepcopy(params["nppl"])
    variant["training"].update(checkpoint_dir=str(tmp_path), checkpoint_every=10)
    pairs, features = tiny_synthetic
    model, history = train_reward_model(pairs, features, params["data"], variant)
    steps = variant["training"]["max_steps"]
    assert [p.name for p in tmp_path.iterdir()] == [f"step-{steps:08d}"]
    # started again, the finished run's checkpoint gives the same model without training
    monkeypatch.setattr(loop.EpisodeSampler, "sample", lambda *a: pytest.fail("trained"))
    again, again_history = train_reward_model(pairs, features, params["data"], variant)
    _same_weights(again.state_dict(), model.state_dict())
    assert again_history.drop(columns="seconds").equals(history.drop(columns="seconds"))


def test_a_checkpoint_written_by_an_older_version_is_refused_with_a_way_out(tmp_path):
    data, train_rows, val_rows = tiny_setup()
    config = tiny_config(
        max_steps=2, eval_every=2, checkpoint_every=2, checkpoint_dir=str(tmp_path)
    )
    train(make_model("btl"), data, train_rows, val_rows, config)
    state = tmp_path / "step-00000002" / STATE_JSON
    meta = json.loads(state.read_text())
    state.write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(
        ConfigError, match=rf"checkpoint format 1, this code reads 2.*delete {tmp_path}"
    ):
        train(make_model("btl"), data, train_rows, val_rows, config)
