"""The DPO training loop on a tiny random Qwen2: resume, best weights, reference cache,
gradient accumulation, validation of the configuration and of the data."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import steerable_alignment.policy.episode_loss as episode_loss
import steerable_alignment.recipes.policies as policy_loop
import steerable_alignment.training.loop as loop
from steerable_alignment.episodes.sampler import make_evaluation_episodes
from steerable_alignment.models.config import ConfigError
from steerable_alignment.policy import PolicyConfig, PolicyModel, load_policy, tokenise_pairs
from steerable_alignment.policy.checkpoint import TrainedPolicy
from steerable_alignment.policy.episode_loss import validate_policy
from steerable_alignment.policy.pairs import PolicyData, ReferenceLogps, pair_sequences
from steerable_alignment.policy.scoring import (
    base_model_logps,
    predict_policy_context_sizes,
    predict_policy_episodes,
)
from steerable_alignment.recipes.policies import PolicyTrainingConfig, train_policy
from tests.conftest import PROJECT_ROOT
from tests.models.tiny_causal_lm import WORDS, load_causal_lm, save_tiny_causal_lm, tiny_tokenizer

EMBEDDING_DIM = 12
NUM_PAIRS = 48


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny_qwen2"))


def make_data() -> PolicyData:
    """48 tokenised pairs, two objectives that disagree on half of them, random embeddings."""
    rng = random.Random(0)
    prompts = [" ".join(rng.choices(WORDS, k=4)) for _ in range(NUM_PAIRS)]
    responses_a = [" ".join(rng.choices(WORDS, k=rng.randint(2, 7))) for _ in range(NUM_PAIRS)]
    responses_b = [" ".join(rng.choices(WORDS, k=rng.randint(2, 7))) for _ in range(NUM_PAIRS)]
    pair_ids = list(range(500, 500 + NUM_PAIRS))
    pairs, _ = tokenise_pairs(tiny_tokenizer(), prompts, responses_a, responses_b, pair_ids, 64)
    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(NUM_PAIRS, 2, EMBEDDING_DIM, generator=g)  # (P, 2, D)
    first = torch.randint(0, 2, (NUM_PAIRS,), generator=g)
    flip = torch.arange(NUM_PAIRS) % 2 == 0
    choices = torch.stack([first, torch.where(flip, 1 - first, first)], 1)  # (P, K)
    splits = {
        "train": torch.arange(0, 32),
        "validation": torch.arange(32, 42),
        "test": torch.arange(42, 48),
    }
    return PolicyData.align(
        pairs,
        embeddings,
        torch.tensor(pair_ids),
        choices,
        ("helpfulness", "honesty"),
        splits,
    )


@pytest.fixture(scope="module")
def data():
    return make_data()


def tiny_policy(base_folder, seed=0, **overrides):
    values = {
        "type": "np_dpo",
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.1,
        "film_hidden_dim": 8,
        "latent_dim": 8,
        "encoder_hidden_dim": 16,
        "encoder_num_heads": 2,
        "embedding_dim": EMBEDDING_DIM,
    }
    config = PolicyConfig.from_params({**values, **overrides})
    torch.manual_seed(seed)
    return PolicyModel(config, load_causal_lm(base_folder), base_model_name="tiny")


def tiny_policy_config(**overrides):
    values = {
        "max_steps": 6,
        "batch_episodes": 2,
        "num_targets": 4,
        "max_context": 3,
        "lr": 5e-3,
        "lr_schedule": "cosine",
        "warmup_steps": 2,
        "eval_every": 3,
        "val_episodes_per_objective": 2,
        "val_context_sizes": [0, 1, 3],
        "batch_size": 8,
        "device": "cpu",
        "progress": False,
    }
    return PolicyTrainingConfig.from_params({**values, **overrides})


def _trainable(policy):
    return {k: v.detach().clone() for k, v in policy.trainable_parameters().items()}


def _assert_equal_weights(left, right):
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


class _Killed(Exception):
    """Stands for the process being killed."""


def test_resumed_run_ends_exactly_as_an_uninterrupted_run(base_folder, data, tmp_path, monkeypatch):
    config = dict(grad_accum_steps=2, checkpoint_every=2, context_lr=3e-3)  # two param groups
    full = train_policy(
        tiny_policy(base_folder),
        data,
        tiny_policy_config(**config, checkpoint_dir=str(tmp_path / "full")),
    )

    # Killed during step 5: the last checkpoint is step 4; step 5 is lost.
    real_sample = loop.EpisodeSampler.sample
    calls = {"n": 0}

    def sample_then_die(self, batch_size):
        calls["n"] += 1
        if calls["n"] == 5:
            raise _Killed
        return real_sample(self, batch_size)

    monkeypatch.setattr(loop.EpisodeSampler, "sample", sample_then_die)
    interrupted = tiny_policy_config(**config, checkpoint_dir=str(tmp_path / "resumed"))
    with pytest.raises(_Killed):
        train_policy(tiny_policy(base_folder), data, interrupted)
    monkeypatch.setattr(loop.EpisodeSampler, "sample", real_sample)
    assert [p.name for p in (tmp_path / "resumed").iterdir()] == ["step-00000004"]

    # Started again with the same configuration (the fresh policy's random init is overwritten).
    resumed = train_policy(tiny_policy(base_folder, seed=123), data, interrupted)
    assert resumed.resumed_from == 4 and full.resumed_from == 0
    _assert_equal_weights(_trainable(resumed.policy), _trainable(full.policy))
    assert resumed.best_step == full.best_step
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in full.history]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history] == strip
    # The last checkpoints (current, not best, weights) are identical too.
    last_full = load_policy(tmp_path / "full/step-00000006/trainable", load_causal_lm(base_folder))
    last_resumed = load_policy(
        tmp_path / "resumed/step-00000006/trainable", load_causal_lm(base_folder)
    )
    _assert_equal_weights(_trainable(last_full), _trainable(last_resumed))


def test_a_checkpoint_of_another_configuration_is_refused(base_folder, data, tmp_path):
    directory = str(tmp_path / "ck")
    train_policy(
        tiny_policy(base_folder),
        data,
        tiny_policy_config(max_steps=2, checkpoint_every=2, checkpoint_dir=directory),
    )
    with pytest.raises(ConfigError, match=r"training\.lr.*another 'training\.checkpoint_dir'"):
        train_policy(
            tiny_policy(base_folder),
            data,
            tiny_policy_config(max_steps=2, checkpoint_every=2, checkpoint_dir=directory, lr=1e-2),
        )


def test_the_kept_weights_are_the_best_validation_ones(base_folder, data):
    config = tiny_policy_config(
        max_steps=8, eval_every=1, lr=0.3, lr_schedule="constant", warmup_steps=0
    )
    result = train_policy(tiny_policy(base_folder, lora_dropout=0.0), data, config)
    losses = [row["val_loss"] for row in result.history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert result.best_step == result.history[best]["step"]
    assert result.best_step < config.max_steps  # the large lr overshoots: the last is not best
    val_episodes = make_evaluation_episodes(
        data.splits["validation"],
        torch.arange(2),
        config.val_episodes_per_objective,
        config.num_targets,
        config.max_context,
        seed=config.seed + 1,
    )
    loss, accuracy, chosen_nll = validate_policy(
        result.policy,
        data,
        result.reference,
        val_episodes,
        config.val_context_sizes,
        config.beta,
        config.batch_size,
        torch.device("cpu"),
    )
    assert loss == pytest.approx(losses[best], abs=1e-6)
    assert accuracy == pytest.approx(result.history[best]["val_accuracy"], abs=1e-9)
    assert chosen_nll == pytest.approx(result.history[best]["val_chosen_nll"], abs=1e-6)


def test_cached_reference_logps_equal_recomputed(base_folder, data):
    result = train_policy(tiny_policy(base_folder), data, tiny_policy_config(max_steps=3))
    reference = result.reference
    rows = torch.nonzero(reference.known).flatten()
    assert len(rows) >= 10  # the validation pairs and every pair seen in training
    for side in (0, 1):
        batch = pair_sequences(data.sequences, rows, torch.full_like(rows, side))
        recomputed = result.policy.reference_logps(batch)
        assert torch.allclose(reference.values[rows, side], recomputed, atol=1e-5)
        bare = base_model_logps(load_causal_lm(base_folder), batch)
        assert torch.allclose(reference.values[rows, side], bare, atol=1e-5)
    # the reference is computed once: a second pass over known rows computes nothing
    assert reference.ensure(rows, pytest.fail, data.sequences, 8, torch.device("cpu")) == 0


def test_gradient_accumulation_2x1_equals_one_batch_of_2(base_folder, data):
    results = []
    for accumulation in (1, 2):
        config = tiny_policy_config(
            max_steps=2, grad_accum_steps=accumulation, lr=1e-3, grad_clip=None
        )
        policy = tiny_policy(base_folder, lora_dropout=0.0)
        start = _trainable(policy)
        results.append(train_policy(policy, data, config))
    one, two = (_trainable(r.policy) for r in results)
    moved = sum(float((one[k] - start[k]).abs().max()) for k in one)
    assert moved > 1e-3
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-6, rtol=1e-5), name
    assert results[0].history[-1]["train_loss"] == pytest.approx(
        results[1].history[-1]["train_loss"], abs=1e-6
    )


def test_context_embeddings_of_the_wrong_size_fail_before_training(base_folder, data, monkeypatch):
    monkeypatch.setattr(policy_loop, "episode_dpo_loss", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(ReferenceLogps, "ensure", lambda *a, **k: pytest.fail("forward pass"))
    policy = tiny_policy(base_folder, embedding_dim=EMBEDDING_DIM + 5)
    with pytest.raises(
        ConfigError, match=rf"size {EMBEDDING_DIM} .*embedding_dim={EMBEDDING_DIM + 5}"
    ):
        train_policy(policy, data, tiny_policy_config())


def test_btl_dpo_trains_without_context_and_scores_flat(base_folder, data):
    policy = tiny_policy(base_folder, type="btl_dpo", lora_dropout=0.0)
    result = train_policy(policy, data, tiny_policy_config(max_steps=3))
    trained = TrainedPolicy.from_policy(result.policy, beta=0.05)
    rebuilt = trained.build(load_causal_lm(base_folder), "tiny")
    episodes = make_evaluation_episodes(data.splits["test"], torch.arange(2), 2, 3, 3, seed=5)
    cpu = torch.device("cpu")
    result.reference.ensure(
        episodes.rows.flatten(), rebuilt.reference_logps, data.sequences, 8, cpu
    )
    probs = [
        predict_policy_episodes(
            rebuilt, data, result.reference, episodes, n, 0.05, 8, torch.device("cpu")
        )
        for n in (0, 3)
    ]
    assert probs[0].shape == (4, 3)
    assert torch.equal(probs[0], probs[1])  # BTL-DPO reads no context


@pytest.mark.parametrize("kind", ["btl_dpo", "np_dpo"])
def test_all_context_sizes_equal_one_size_at_a_time_with_one_pass_without_context(
    base_folder, data, monkeypatch, kind
):
    policy = tiny_policy(base_folder, type=kind, lora_dropout=0.0)
    train_policy(policy, data, tiny_policy_config(max_steps=2))
    episodes = make_evaluation_episodes(data.splits["test"], torch.arange(2), 2, 3, 3, seed=5)
    cpu = torch.device("cpu")
    reference = ReferenceLogps.empty(len(data))
    reference.ensure(episodes.rows.flatten(), policy.reference_logps, data.sequences, 8, cpu)
    sizes = (0, 1, 3)
    one_at_a_time = {
        n: predict_policy_episodes(policy, data, reference, episodes, n, 0.1, 8, cpu) for n in sizes
    }
    calls = []
    import steerable_alignment.policy.scoring as policy_scoring

    original = policy_scoring.policy_pair_logps

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(policy_scoring, "policy_pair_logps", counting)
    together = predict_policy_context_sizes(policy, data, reference, episodes, sizes, 0.1, 8, cpu)
    assert list(together) == list(sizes)
    for n in sizes:
        assert torch.equal(together[n], one_at_a_time[n])
    assert len(calls) == (len(sizes) if kind == "np_dpo" else 1)
    if kind == "np_dpo":  # the context changes the prediction: nothing is shared wrongly
        assert not torch.equal(together[0], together[3])


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("grad_accum_steps", 3, r"training\.grad_accum_steps.*divide batch_episodes"),
        ("max_context", 4, r"training\.max_context.*smaller than num_targets"),
        ("beta", 0.0, r"training\.beta"),
        ("context_lr", 0.0, r"training\.context_lr"),
        ("checkpoint_every", 5, r"training\.checkpoint_dir"),
        ("dtype", "int8", r"training\.dtype"),
        ("nll_weight", -0.5, r"training\.nll_weight.*number >= 0, got -0\.5"),
        ("nll_weight", "1.0", r"training\.nll_weight.*number >= 0, got '1\.0'"),
        ("nll_weight", True, r"training\.nll_weight"),
        ("nll_weight", float("nan"), r"training\.nll_weight"),
        ("bogus", 1, r"'training' has unknown key\(s\) \['bogus'\]"),
    ],
)
def test_bad_training_parameters_name_the_parameter(key, value, needle):
    with pytest.raises(ConfigError, match=needle):
        tiny_policy_config(**{key: value})


def _val_episodes(data, config):
    return make_evaluation_episodes(
        data.splits["validation"],
        torch.arange(2),
        config.val_episodes_per_objective,
        config.num_targets,
        config.max_context,
        seed=config.seed + 1,
    )


@pytest.mark.parametrize("kind", ["btl_dpo", "np_dpo"])
def test_validation_scores_equal_the_evaluations_and_a_naive_chosen_nll(base_folder, data, kind):
    config = tiny_policy_config(max_steps=2, lr=2e-2)
    result = train_policy(tiny_policy(base_folder, type=kind, lora_dropout=0.0), data, config)
    policy, reference, cpu = result.policy, result.reference, torch.device("cpu")
    episodes = _val_episodes(data, config)
    scores = validate_policy(
        policy, data, reference, episodes, config.val_context_sizes, config.beta, 8, cpu
    )
    choices = episode_loss.episode_choices(data, episodes)  # (E, T)
    targets = episodes.rows[:, episodes.max_context :]  # (E, T)
    sizes = config.val_context_sizes if kind == "np_dpo" else config.val_context_sizes[:1]
    losses, nlls = [], []
    for n in sizes:
        prob_b = predict_policy_episodes(policy, data, reference, episodes, n, config.beta, 8, cpu)
        losses.append(float(episode_loss.score_targets(prob_b, choices)[1].mean()))
        # naive: one episode at a time, the chosen sequences only, tokens counted from the mask
        per_target = []
        for e in range(len(targets)):
            batch = pair_sequences(data.sequences, targets[e], choices[e])
            z = None
            if kind == "np_dpo":
                rows = episodes.rows[e : e + 1, :n]  # (1, n)
                ctx = data.choices[rows, episodes.objective[e]]  # (1, n)
                z = episode_loss.context_latents(
                    policy, data, rows, ctx, torch.ones_like(rows, dtype=torch.bool), cpu
                ).expand(len(batch), -1)  # (T, Z)
            policy.eval()
            with torch.no_grad():
                logps = policy.sequence_logps(batch, z)  # (T,)
            tokens = batch.attention_mask.sum(1) - batch.response_start  # the response ends it
            per_target += (-logps / tokens).tolist()
        nlls.append(sum(per_target) / len(per_target))
    assert scores.loss == sum(losses) / len(losses)  # exactly the evaluation's numbers
    assert scores.chosen_nll == pytest.approx(sum(nlls) / len(nlls), rel=1e-5)
    assert scores.chosen_nll > 0
    assert result.history[-1]["val_chosen_nll"] == pytest.approx(scores.chosen_nll, rel=1e-5)


def test_nll_weight_zero_trains_exactly_as_plain_dpo(base_folder, data, monkeypatch):
    config = tiny_policy_config(max_steps=3, eval_every=1)
    default = train_policy(tiny_policy(base_folder), data, config)
    dpo_loss = episode_loss.dpo_loss

    def plain_dpo(pc, pr, rc, rr, beta, chosen_token_counts=None, nll_weight=0.0):
        assert nll_weight == 0.0
        out = dpo_loss(pc, pr, rc, rr, beta)  # the DPO loss alone
        nll = (-pc / chosen_token_counts).detach()
        return episode_loss.DPOOutput(out.loss, out.chosen_rewards, out.rejected_rewards, nll)

    monkeypatch.setattr(episode_loss, "dpo_loss", plain_dpo)
    plain = train_policy(tiny_policy(base_folder), data, config)
    _assert_equal_weights(_trainable(default.policy), _trainable(plain.policy))
    assert [r["val_loss"] for r in default.history] == [r["val_loss"] for r in plain.history]
    assert [r["train_loss"] for r in default.history] == [r["train_loss"] for r in plain.history]
    assert default.best_step == plain.best_step


def test_nll_weight_lowers_the_chosen_nll_and_is_recorded(base_folder, data):
    results = {}
    for weight in (0.0, 1.0):
        config = tiny_policy_config(
            max_steps=4, eval_every=2, lr=1e-2, lr_schedule="constant", warmup_steps=0,
            nll_weight=weight,
        )  # fmt: skip
        results[weight] = train_policy(tiny_policy(base_folder, lora_dropout=0.0), data, config)
    plain, with_nll = results[0.0].history, results[1.0].history
    assert {"train_chosen_nll", "val_chosen_nll", "val_loss"} <= set(with_nll[-1])
    # the same first step's batch: the NLL term is in the minimised loss, not in val_loss
    assert with_nll[0]["train_loss"] > plain[0]["train_loss"]
    assert with_nll[-1]["val_chosen_nll"] < plain[-1]["val_chosen_nll"]
    assert with_nll[-1]["train_chosen_nll"] < plain[-1]["train_chosen_nll"]
    # plain DPO lets the chosen side's likelihood fall; the NLL term pulls it up
    assert with_nll[-1]["val_chosen_nll"] < with_nll[0]["val_chosen_nll"]


def test_nll_weight_at_its_default_keeps_older_checkpoint_signatures(tmp_path):
    from steerable_alignment.training import checkpointing
    from steerable_alignment.training.config import RESUMABLE_CHANGES

    default = tiny_policy_config().signature()
    assert "nll_weight" not in default  # as written before the option existed
    older = {k: v for k, v in tiny_policy_config().to_dict().items() if k != "nll_weight"}
    assert default == {k: v for k, v in older.items() if k not in RESUMABLE_CHANGES}
    weighted = tiny_policy_config(nll_weight=0.5).signature()
    assert weighted["nll_weight"] == 0.5
    checkpointing.check_signature(tmp_path, {"training": default}, {"training": default})
    with pytest.raises(ConfigError, match=r"training\.nll_weight.*\(None, 0\.5\)"):
        checkpointing.check_signature(tmp_path, {"training": default}, {"training": weighted})


def test_the_context_path_gets_its_own_learning_rate(base_folder):
    policy = tiny_policy(base_folder)
    groups = policy_loop._param_groups(policy, tiny_policy_config(lr=1e-4, context_lr=2e-3))
    names = {id(p): n for n, p in policy.trainable_parameters().items()}
    adapters, context = ({names[id(p)] for p in g["params"]} for g in groups)
    assert "lr" not in groups[0] and groups[1]["lr"] == 2e-3
    assert adapters and all("lora_" in n for n in adapters)
    assert context and all(n.startswith(("film.", "context_encoder.")) for n in context)
    assert adapters | context == set(names.values())
    single = policy_loop._param_groups(policy, tiny_policy_config(lr=1e-4))
    assert len(single) == 1 and len(single[0]["params"]) == len(names)


def test_a_split_too_small_for_an_episode_fails_clearly(base_folder, data):
    with pytest.raises(ConfigError, match=r"validation split has 10 tokenised pairs"):
        train_policy(
            tiny_policy(base_folder), data, tiny_policy_config(num_targets=9, max_context=3)
        )


# Run by two processes under `accelerate launch` (gloo on the CPU).
DDP_WORKER = """
import sys
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from tests.recipes.test_policies import make_data, tiny_policy, tiny_policy_config
from steerable_alignment.recipes.policies import train_policy

torch.set_num_threads(1)
folder, out, checkpoints = sys.argv[1:4]
config = tiny_policy_config(max_steps=2, lr=1e-3, grad_clip=None, checkpoint_every=1,
                 checkpoint_dir=checkpoints)
result = train_policy(tiny_policy(folder, lora_dropout=0.0), make_data(), config)
if dist.get_rank() == 0:
    state = {k: v.detach().contiguous() for k, v in result.policy.trainable_parameters().items()}
    state["train_loss"] = torch.tensor(result.history[-1]["train_loss"])
    save_file(state, out)
print(f"rank {dist.get_rank()} of {dist.get_world_size()} done")
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_data_parallel_processes_equal_one_with_accumulation(base_folder, data, tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    out = tmp_path / "ddp.safetensors"
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        str(script), str(base_folder), str(out), str(tmp_path / "checkpoints"),
    ]  # fmt: skip
    env = {
        "PATH": str(Path(sys.executable).parent),
        "PYTHONPATH": str(PROJECT_ROOT),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "CUDA_VISIBLE_DEVICES": "",
    }
    result = subprocess.run(
        command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "rank 0 of 2 done" in log and "rank 1 of 2 done" in log

    config = tiny_policy_config(max_steps=2, lr=1e-3, grad_clip=None, grad_accum_steps=2)
    single = train_policy(tiny_policy(base_folder, lora_dropout=0.0), data, config)
    parallel = load_file(out)
    assert float(parallel.pop("train_loss")) == pytest.approx(
        single.history[-1]["train_loss"], abs=1e-6
    )
    weights = _trainable(single.policy)
    assert parallel.keys() == weights.keys()
    for name, value in weights.items():
        assert torch.allclose(parallel[name], value, atol=1e-6, rtol=1e-5), name
    # the main process wrote the checkpoints, with each process's RNG state
    state = load_file(tmp_path / "checkpoints/step-00000002/state.safetensors")
    assert {"rng.0.torch", "rng.1.torch"} <= set(state)


def test_a_checkpoint_made_from_other_inputs_is_refused_naming_what_changed(
    base_folder, data, tmp_path
):
    """Issue 14: resuming (or returning a finished run) must not silently keep what the
    checkpoint was made from when the reference, the base weights or the warm start change."""
    directory = str(tmp_path / "ck")
    config = tiny_policy_config(max_steps=2, checkpoint_every=2, checkpoint_dir=directory)
    reference = ReferenceLogps.empty(len(data))
    rows = torch.arange(len(data))
    with torch.no_grad():
        for side in (0, 1):
            batch = pair_sequences(data.sequences, rows, torch.full_like(rows, side))
            reference.values[:, side] = base_model_logps(load_causal_lm(base_folder), batch)
    reference.known[:] = True
    train_policy(tiny_policy(base_folder), data, config, reference=copy_reference(reference))
    # the same inputs: the finished run is returned
    again = train_policy(
        tiny_policy(base_folder), data, config, reference=copy_reference(reference)
    )
    assert again.resumed_from == 2
    shifted = copy_reference(reference)
    shifted.values += 5.0
    with pytest.raises(ConfigError, match=r"'reference': \("):
        train_policy(tiny_policy(base_folder), data, config, reference=shifted)
    other_base = tiny_policy(base_folder)
    with torch.no_grad():
        next(p for p in other_base.parameters() if not p.requires_grad).mul_(1.01)
    with pytest.raises(ConfigError, match=r"'base_weights': \("):
        train_policy(other_base, data, config, reference=copy_reference(reference))
    warm = tiny_policy(base_folder)
    warm.warm_start_digest = "another encoder"
    with pytest.raises(ConfigError, match=r"'warm_start': \(None, 'another encoder'\)"):
        train_policy(warm, data, config, reference=copy_reference(reference))


def copy_reference(reference):
    return ReferenceLogps(reference.values.clone(), reference.known.clone())
