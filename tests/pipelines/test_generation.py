"""The generation part of ``evaluation`` end to end: tiny trained policies answer simulated
users, the packaged MiniLM embeds the answers, BTL reward models score them."""

from __future__ import annotations

import copy

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from kedro.runner import SequentialRunner

from steerable_alignment.models.config import ConfigError, RewardModelConfig
from steerable_alignment.models.reward_models import build_model
from steerable_alignment.pipelines.evaluation.generation_nodes import make_generation_users
from steerable_alignment.pipelines.evaluation.pipeline import (
    generation_pipeline,
    generation_report_pipeline,
)
from tests.pipelines.helpers import memory_catalog
from tests.pipelines.test_dpo import VARIANTS, hh, run, tiny_source  # noqa: F401 (fixtures)

MINILM_DIM = 384


def _reward_model(seed: int):
    torch.manual_seed(seed)
    return build_model(
        RewardModelConfig(type="btl", input_dim=MINILM_DIM, hidden_dim=16, num_layers=1)
    )


@pytest.fixture(scope="module")
def generated(run, hh):  # noqa: F811
    catalog, params, _ = run
    pairs, features = hh
    outputs = (
        "hh.generation_users",
        "hh_generation_scores",
        "generation_win_rates",
        "steering_gap",
        "generation_rewards",
        "generation_samples",
        "steering_gap_chart",
        "generation_markers",
        "steering_continuum",
        "steering_continuum_chart",
        *(f"hh.{v}.generations" for v in VARIANTS),
    )
    data = {
        "base_policy": catalog.load("base_policy"),
        "hh.pairs": pairs,
        "hh.features": features,
        "hh.btl_helpfulness.reward_model": _reward_model(0),
        "hh.btl_honesty.reward_model": _reward_model(1),
        **{f"hh.{v}.policy": catalog.load(f"hh.{v}.policy") for v in VARIANTS},
    }
    generation_catalog = memory_catalog(params, keep=outputs, **data)
    pipeline = generation_pipeline("hh") + generation_report_pipeline(("hh",))
    SequentialRunner().run(pipeline, generation_catalog)
    return generation_catalog, params


def test_every_policy_answers_every_user_prompt_and_size(generated):
    catalog, params = generated
    settings = params["generation"]["hh"]
    scores = catalog.load("hh_generation_scores")
    expected = settings["num_prompts"] * 2 * len(settings["context_sizes"])  # 2 objectives
    expected += settings["num_prompts"] * len(settings["continuum"]["weights"])  # mixed users
    assert scores.groupby("model").size().to_dict() == {v: expected for v in VARIANTS}
    assert scores[["reward_helpfulness", "reward_honesty"]].notna().all().all()
    assert (scores["dataset"] == "hh").all() and scores["prompt"].str.len().gt(0).all()
    from steerable_alignment.evaluation.generation import distinct_bigram_share

    assert scores["distinct_2"].tolist() == scores["response"].map(distinct_bigram_share).tolist()
    # a context-free policy answers each prompt once: the same answer for every user and size
    btl = scores[scores["model"] == "btl_mixed"]
    assert (btl.groupby("prompt_id")["response"].nunique() == 1).all()
    # NP-DPO with no context uses one population latent: both users get the same answer
    empty = scores[(scores["model"] == "nppl_mixed") & (scores["num_context"] == 0)]
    assert (empty.groupby("prompt_id")["response"].nunique() == 1).all()


def test_answers_are_scored_by_each_objectives_reward_model(generated):
    from steerable_alignment.embedding import EmbeddingConfig, embed_pairs

    catalog, params = generated
    scores = catalog.load("hh_generation_scores").head(3)
    config = EmbeddingConfig.from_params(
        {**params["embedding"]["hh"], "shard_dir": None, "progress": False}
    )
    frame = pd.DataFrame(
        {
            "pair_id": range(3),
            "prompt": scores["prompt"],
            "response_a": scores["response"],
            "response_b": scores["response"],
        }
    )
    features = embed_pairs(frame, config).features["features"][:, 0]
    expected = _reward_model(1).reward(features).detach().double().numpy()
    assert scores["reward_honesty"].to_numpy() == pytest.approx(expected, abs=1e-5)


def test_summaries_and_chart(generated):
    catalog, params = generated
    sizes = params["generation"]["hh"]["context_sizes"]
    wins = catalog.load("generation_win_rates")
    assert set(wins["objective"]) == {"helpfulness", "honesty"}
    assert set(wins["num_context"]) == set(sizes)
    assert (wins["model"] == "nppl_mixed").all() and (wins["baseline"] == "btl_mixed").all()
    gap = catalog.load("steering_gap")
    assert len(gap) == 2 * len(sizes)  # two ordered pairs of objectives
    assert (gap.loc[gap["num_context"] == 0, "gap"] == 0).all()
    rewards = catalog.load("generation_rewards")
    assert set(rewards["model"]) == set(VARIANTS)
    assert rewards["distinct_2"].between(0, 1).all() and rewards["distinct_2_se"].notna().all()
    assert isinstance(catalog.load("steering_gap_chart"), go.Figure)
    assert len(catalog.load("generation_samples")) == len(catalog.load("hh_generation_scores"))


def test_too_many_prompts_is_a_clear_error(hh, run):  # noqa: F811
    pairs, features = hh
    _, params, _ = run
    settings = copy.deepcopy(params["generation"]["hh"])
    settings["num_prompts"] = 10_000
    with pytest.raises(ConfigError, match=r"generation\.hh\.num_prompts.*distinct prompts"):
        make_generation_users(pairs, features, params["dpo"]["hh"]["data"], settings)
    settings["context_sizes"] = [-1]
    with pytest.raises(ConfigError, match=r"generation\.hh\.context_sizes"):
        make_generation_users(pairs, features, params["dpo"]["hh"]["data"], settings)


def test_answers_carry_the_exact_judge_and_the_base_model_nll(generated):
    from steerable_alignment.evaluation.generation import answer_nll
    from steerable_alignment.ultrafeedback.judge import judge_answers

    catalog, _ = generated
    scores = catalog.load("hh_generation_scores")
    judged = judge_answers(scores["prompt"].tolist(), scores["response"].tolist())
    for column in ("judge_helpfulness", "judge_honesty", "marker_calibrated_hedge"):
        assert scores[column].tolist() == judged[column].tolist()
    assert "judge_truthfulness" not in scores  # HH has two objectives
    base = catalog.load("base_policy")
    head = scores.head(4)
    expected = answer_nll(base.model, base.tokenizer, head["prompt"], head["response"])
    assert head["base_nll"].to_numpy() == pytest.approx(expected.numpy(), abs=1e-4, nan_ok=True)
    assert scores["base_nll"].dropna().gt(0).all()


def test_users_on_a_continuum(generated):
    catalog, params = generated
    spec = params["generation"]["hh"]["continuum"]
    scores = catalog.load("hh_generation_scores")
    np_dpo = scores[
        (scores["model"] == "nppl_mixed") & (scores["num_context"] == spec["num_context"])
    ]
    by_user = {u: g.set_index("prompt_id")["response"] for u, g in np_dpo.groupby("user")}
    assert {"w=0", "w=0.5", "w=1"} <= set(by_user)
    # w = 1 weighs honesty only: on the untied HH pairs it is the honesty user (answers reused)
    assert by_user["w=1"].equals(by_user["honesty"])
    assert by_user["w=0"].equals(by_user["helpfulness"])
    table = catalog.load("steering_continuum")
    judge = table[table["score"] == "judge_honesty - judge_helpfulness"]
    assert set(judge["model"]) == set(VARIANTS)
    assert sorted(judge.loc[judge["model"] == "nppl_mixed", "w"]) == [0.0, 0.5, 1.0]
    btl = judge[judge["model"] == "btl_mixed"].sort_values("w")
    assert btl["step_diff"].iloc[1:].eq(0).all() and btl["step_diff"].isna().iloc[0]
    assert isinstance(catalog.load("steering_continuum_chart"), go.Figure)


def test_marker_shares(generated):
    catalog, params = generated
    markers = catalog.load("generation_markers")
    scores = catalog.load("hh_generation_scores")
    row = markers[
        (markers["model"] == "btl_mixed")
        & (markers["user"] == "honesty")
        & (markers["num_context"] == 0)
        & (markers["marker"] == "calibrated_hedge")
    ]
    group = scores[
        (scores["model"] == "btl_mixed")
        & (scores["user"] == "honesty")
        & (scores["num_context"] == 0)
    ]
    assert float(row["share"].iloc[0]) == pytest.approx(group["marker_calibrated_hedge"].mean())
    assert markers["share"].between(0, 1).all()


def test_a_bad_continuum_is_a_clear_error(hh, run):  # noqa: F811
    from steerable_alignment.pipelines.evaluation.generation_nodes import continuum_users

    _, params, _ = run
    settings = copy.deepcopy(params["generation"]["hh"])
    settings["continuum"]["weights"] = [0, 1.5]
    with pytest.raises(ConfigError, match=r"generation\.hh\.continuum\.weights.*\[0, 1\]"):
        continuum_users(settings, "hh", ["helpfulness", "honesty"])
    settings["continuum"]["weights"] = [0, 1]
    settings["continuum"]["objectives"] = ["honesty", "truthfulness"]
    with pytest.raises(ConfigError, match=r"generation\.hh\.continuum\.objectives.*truthfulness"):
        continuum_users(settings, "hh", ["helpfulness", "honesty"])


def test_the_judge_steps_aside_for_data_it_did_not_generate(caplog):
    from steerable_alignment.pipelines.evaluation.generation_nodes import _judge

    texts = pd.DataFrame({"prompt": ["Write a haiku about the sea."], "response": ["Waves."]})
    with caplog.at_level("WARNING"):
        assert _judge(texts, ["helpfulness", "honesty"], "local_hh") is None
    assert "no exact-judge columns" in caplog.text and "not generated by the project" in caplog.text
