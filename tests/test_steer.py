"""``python -m steerable_alignment.steer`` end to end on tiny trained artefacts, and bad inputs.

One temporary copy of the project trains, in the ``test`` environment, only
what the command reads: the HH pairs, their MiniLM features, the
``hh.nppl_mixed`` reward model and the ``hh.nppl_mixed`` NP-DPO policy on a
tiny random base policy. The command then runs against it: in this process
(its ``main``), or as a subprocess where a test checks what a user sees on
each stream.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from steerable_alignment.steering import (
    ContextTooLongError,
    check_context_size,
    read_candidates,
    read_context,
    read_prompts,
)
from tests.conftest import PROJECT_ROOT
from tests.pipelines.helpers import project_parameters
from tests.project_copy import copy_project, save_tiny_base_policy

EXAMPLES = PROJECT_ROOT / "docs" / "examples"
TRAINED_NODES = (
    "hh.embed_pairs",
    "hh.nppl_mixed.train_reward_model",
    "prepare_base_policy",
    "fine_tune_base_policy",
    "hh.tokenise_policy_pairs",
    "hh.compute_prefix_states",
    "hh.compute_reference_logps",
    "hh.nppl_mixed.train_policy",
)


def trained_max_context() -> dict[str, int]:
    """The largest training context of each NP model in the test env (3 in conf/test)."""
    params = project_parameters()
    return {
        "reward_model": params["reward_modelling"]["hh"]["nppl_mixed"]["training"]["max_context"],
        "policy": params["dpo"]["hh"]["nppl_mixed"]["training"]["max_context"],
    }


# The example contexts are cut to a size both models were trained with.
TEST_MAX_CONTEXT = min(trained_max_context().values())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project copy holding the trained artefacts ``steer`` reads (env ``test``)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    root = copy_project(tmp_path_factory.mktemp("steer_project"))
    old_cwd = Path.cwd()
    os.chdir(root)
    try:
        bootstrap_project(root)
        with KedroSession.create(project_path=root, env="test") as session:
            session.run(
                pipeline_name="ultrafeedback",
                node_names=["load_ultrafeedback_raw", "hh.build_preference_pairs"],
            )
        save_tiny_base_policy(root)
        with KedroSession.create(project_path=root, env="test") as session:
            session.run(
                pipeline_names=["embedding", "reward_modelling", "dpo"],
                node_names=list(TRAINED_NODES),
            )
    finally:
        os.chdir(old_cwd)
    return root


# -- helpers ---------------------------------------------------------------------------------


def steer(
    project: Path, *args: str, cwd: Path | None = None, subprocess_run: bool = False
) -> subprocess.CompletedProcess:
    """Run the command from outside the project folder: status, stdout and stderr.

    By default the command's ``main`` runs in this process (the same arguments,
    streams and exit status; about 3 s instead of 14 s, most of it imports).
    ``subprocess_run=True`` runs ``python -m steerable_alignment.steer`` as a
    user would; the tests of what a user sees on each stream use it.
    """
    argv = ["--project-path", str(project), "--env", "test", *args]
    if subprocess_run:
        env = {
            **os.environ,
            "KEDRO_DISABLE_TELEMETRY": "true",
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
        }
        return subprocess.run(
            [sys.executable, "-m", "steerable_alignment.steer", *argv],
            cwd=cwd or project.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    from steerable_alignment.steer import main

    out, err = io.StringIO(), io.StringIO()
    # the command sets environment variables for itself (quiet progress bars): not for later tests
    with (
        mock.patch.dict(os.environ),
        contextlib.chdir(cwd or project.parent),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            status = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            status = exit_.code
    return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def head(path: Path, lines: int, out: Path) -> Path:
    """The first ``lines`` lines of an example file (conf/test trains on contexts of <= 3)."""
    out.write_text("".join(path.read_text().splitlines(keepends=True)[:lines]))
    return out


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 1, one message on stderr holding every fragment, no traceback, no stdout."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stdout == ""
    assert "steer: error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr[-3000:])


def pipeline_features(rows: list[dict]) -> torch.Tensor:
    """(N, 2, D) features of (prompt, response_a, response_b) rows by the embedding node."""
    import pandas as pd

    from steerable_alignment.pipelines.embedding.nodes import embed_pairs

    params = {**project_parameters()["embedding"]["hh"], "shard_dir": None}
    pairs = pd.DataFrame(
        {
            "pair_id": range(len(rows)),
            "prompt": [r["prompt"] for r in rows],
            "response_a": [r["response_a"] for r in rows],
            "response_b": [r["response_b"] for r in rows],
        }
    )
    return embed_pairs(pairs, params)["features"]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_reward_model(project: Path):
    from kedro.io.core import Version

    from steerable_alignment.datasets import RewardModelDataset

    path = project / "data/06_models/hh/nppl_mixed/reward_model.safetensors"
    return RewardModelDataset(filepath=str(path), version=Version(None, None)).load()


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    """The two example users, cut to the test env's largest context (3 pairs)."""
    folder = tmp_path_factory.mktemp("contexts")
    return {
        user: head(EXAMPLES / f"context_{user}.jsonl", TEST_MAX_CONTEXT, folder / f"{user}.jsonl")
        for user in ("helpful", "honest")
    }


# -- the example files -----------------------------------------------------------------------


def test_the_example_users_disagree_on_every_pair():
    helpful = read_context(EXAMPLES / "context_helpful.jsonl")
    honest = read_context(EXAMPLES / "context_honest.jsonl")
    assert len(helpful) == len(honest) == 6
    for a, b in zip(helpful, honest):
        assert (a.prompt, a.response_a, a.response_b) == (b.prompt, b.response_a, b.response_b)
        assert a.choice == 1 - b.choice
    candidates = read_candidates(EXAMPLES / "candidates.jsonl")
    assert len({c.prompt for c in candidates}) < len(candidates)  # several per prompt: a ranking
    assert read_prompts(EXAMPLES / "prompts.jsonl")


def test_a_context_up_to_the_trained_size_is_accepted_and_a_larger_one_refused():
    check_context_size(3, 3, "m", "p.max_context", "ctx.jsonl")
    with pytest.raises(
        ContextTooLongError, match=r"ctx.jsonl holds 4 .* at most 3 .*p\.max_context"
    ):
        check_context_size(4, 3, "m", "p.max_context", "ctx.jsonl")


def test_missing_artefacts_name_the_pipeline_that_makes_them():
    from kedro.framework.project import configure_project

    from steerable_alignment.pipeline_registry import register_pipelines
    from steerable_alignment.steering.commands import missing_artifacts_message, producing_pipeline

    configure_project("steerable_alignment")  # find_pipelines() needs the package name
    pipelines = register_pipelines()
    expected = {
        "hh.pairs": "ultrafeedback",
        "hh.features": "embedding",
        "hh.nppl_mixed.reward_model": "reward_modelling",
        "base_policy": "dpo",
        "hh.nppl_mixed.policy": "dpo",
        "hht.nppl_mixed.policy": "dpo_all",  # `dpo` trains hh only
        "no.such.entry": None,
    }
    for name, pipeline in expected.items():
        assert producing_pipeline(name, pipelines) == pipeline, name
    message = missing_artifacts_message([("hh.features", "embedding")], "base")
    assert "hh.features: run `kedro run --pipeline embedding`" in message


def test_models_that_read_no_context_and_other_embedding_sizes_are_refused():
    from steerable_alignment.embedding import EmbeddingConfig
    from steerable_alignment.models.config import RewardModelConfig
    from steerable_alignment.models.reward_models import build_model
    from steerable_alignment.steering import Candidate, SteeringError
    from steerable_alignment.steering.core import check_reward_model, embed_candidates

    btl = build_model(RewardModelConfig(type="btl", input_dim=4, hidden_dim=8, num_heads=2))
    with pytest.raises(SteeringError, match="hh.btl_mixed.reward_model is a 'btl' model"):
        check_reward_model(btl, "hh.btl_mixed.reward_model")
    config = EmbeddingConfig.from_params(project_parameters()["embedding"]["hh"])
    candidate = Candidate("How do I boil an egg?", "Boil it for eight minutes.", line=1)
    with pytest.raises(SteeringError, match="gives vectors of size 384 but the trained models"):
        embed_candidates([candidate], config, dim=16, path="candidates.jsonl")


# -- end to end: scores ----------------------------------------------------------------------


def test_scores_are_the_reward_models_own_preferences_given_the_context(project, contexts):
    result = steer(
        project,
        "--context",
        str(contexts["helpful"]),
        "--candidates",
        str(EXAMPLES / "candidates.jsonl"),
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["mode"] == "score" and out["dataset"] == "hh"
    assert out["model"] == "hh.nppl_mixed.reward_model" and out["version"]
    assert out["context"]["pairs"] == TEST_MAX_CONTEXT
    assert out["max_context"] == trained_max_context()["reward_model"]
    scored = out["candidates"]
    candidates = read_rows(EXAMPLES / "candidates.jsonl")
    assert sorted(s["line"] for s in scored) == list(range(1, len(candidates) + 1))
    by_prompt: dict[str, list[dict]] = {}
    for s in scored:
        by_prompt.setdefault(s["prompt"], []).append(s)
    for rows in by_prompt.values():  # ranked best first within each prompt
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        assert [r["reward"] for r in rows] == sorted((r["reward"] for r in rows), reverse=True)

    # Every two candidates of a prompt, as a target pair of an episode with this context:
    # the model's P(b > a) equals sigma(reward_b - reward_a) of the command's rewards.
    from steerable_alignment.episodes.batch import EpisodeBatch

    model = load_reward_model(project)
    context_rows = read_rows(contexts["helpful"])
    context = pipeline_features(context_rows).unsqueeze(0)  # (1, N, 2, D)
    reward = {s["line"]: s for s in scored}
    pairs = [
        (a, b)
        for a in range(len(candidates))
        for b in range(a + 1, len(candidates))
        if candidates[a]["prompt"] == candidates[b]["prompt"]
    ]
    targets = pipeline_features(
        [
            {
                **candidates[a],
                "response_a": candidates[a]["response"],
                "response_b": candidates[b]["response"],
            }
            for a, b in pairs
        ]
    ).unsqueeze(0)  # (1, T, 2, D)
    for key, n in (("reward", len(context_rows)), ("reward_no_context", 0)):
        batch = EpisodeBatch(
            context_features=context[:, :n],
            context_choices=torch.tensor([[r["choice"] for r in context_rows]])[:, :n],
            context_mask=torch.ones(1, n, dtype=torch.bool),
            target_features=targets,
            target_choices=torch.zeros(1, len(pairs), dtype=torch.long),
            target_mask=torch.ones(1, len(pairs), dtype=torch.bool),
            objective=torch.zeros(1, dtype=torch.long),
        )
        with torch.no_grad():
            prob_b = model(batch)[0, :, 1].exp()  # (T,)
        for t, (a, b) in enumerate(pairs):
            difference = reward[b + 1][key] - reward[a + 1][key]
            assert math.isclose(float(prob_b[t]), 1 / (1 + math.exp(-difference)), abs_tol=1e-5)
    # the context changes the rewards
    assert any(s["reward"] != s["reward_no_context"] for s in scored)


def test_scores_print_a_table_per_prompt(project, contexts):
    result = steer(
        project,
        "--context",
        str(contexts["honest"]),
        "--candidates",
        str(EXAMPLES / "candidates.jsonl"),
        subprocess_run=True,  # as a user runs it: what each stream holds
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NP-BTL rewards: hh.nppl_mixed.reward_model (version ")
    assert f"conditioned on {TEST_MAX_CONTEXT} context pair(s)" in lines[0]
    assert sum(line.startswith("Prompt ") for line in lines) == 2
    assert sum("rank" in line and "no context" in line for line in lines) == 2
    assert "Running is a popular sport" in result.stdout
    assert "INFO" not in result.stdout  # logs never reach stdout


# -- end to end: answers ---------------------------------------------------------------------


def test_answers_come_from_the_policy_conditioned_on_the_context(project, contexts):
    from steerable_alignment.datasets import HFPretrainedDataset, PolicyCheckpointDataset
    from steerable_alignment.evaluation.generation import SamplingConfig, generate_answers
    from steerable_alignment.steering.core import ContextTensors, policy_latent

    prompts = read_rows(EXAMPLES / "prompts.jsonl")
    result = steer(
        project,
        "--context", str(contexts["helpful"]),
        "--prompts", str(EXAMPLES / "prompts.jsonl"),
        "--max-new-tokens", "8",
        "--seed", "3",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["mode"] == "generate" and out["model"] == "hh.nppl_mixed.policy"
    assert out["generation"] == {
        "max_new_tokens": 8,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 50,
        "repetition_penalty": 1.0,
        "seed": 3,
    }
    assert [a["prompt"] for a in out["answers"]] == [p["prompt"] for p in prompts]
    assert [a["line"] for a in out["answers"]] == [1, 2, 3]

    # The same answers from the policy conditioned on the pipeline's embeddings of the context.
    trained = PolicyCheckpointDataset(
        filepath=str(project / "data/06_models/hh/nppl_mixed/policy")
    ).load()
    base = HFPretrainedDataset(filepath=str(project / "data/06_models/base_policy")).load()
    policy = trained.build(base.model)
    rows = read_rows(contexts["helpful"])
    choices = torch.tensor([[r["choice"] for r in rows]])  # (1, N)
    context = ContextTensors(
        pipeline_features(rows).unsqueeze(0), choices, torch.ones_like(choices, dtype=torch.bool)
    )
    z = policy_latent(policy, context)  # (Z,)
    sampling = SamplingConfig(max_new_tokens=8, temperature=0.7, top_p=0.9, batch_size=8, seed=3)
    answers, _ = generate_answers(
        policy,
        base.tokenizer,
        [p["prompt"] for p in prompts],
        sampling,
        z=z.expand(len(prompts), -1),
        progress=False,
    )
    assert [a["response"] for a in out["answers"]] == answers
    # the latent is the user's: an empty context gives the population's
    assert not torch.allclose(policy_latent(policy, context.empty()), z)


def test_answers_print_a_block_per_prompt(project, contexts):
    result = steer(
        project,
        "--context", str(contexts["honest"]),
        "--prompts", str(EXAMPLES / "prompts.jsonl"),
        "--max-new-tokens", "4",
        "--temperature", "0",
        subprocess_run=True,  # as a user runs it: what each stream holds
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NP-DPO answers: hh.nppl_mixed.policy, conditioned on 3")
    assert lines[1] == "greedy, at most 4 new tokens, seed 0"
    assert [line.split(" prompt:")[0] for line in lines if " prompt: " in line] == [
        "[1]",
        "[2]",
        "[3]",
    ]
    assert sum(line.startswith("    answer: ") for line in lines) == 3


# -- bad input -------------------------------------------------------------------------------

GOOD_PAIR = {
    "prompt": "How do I boil an egg?",
    "response_a": "Boil it.",
    "response_b": "Hm.",
    "choice": 1,
}


NO_RESPONSE_B = {k: v for k, v in GOOD_PAIR.items() if k != "response_b"}
MALFORMED_LINES = {
    "invalid-json": (
        '{"prompt": "How do I boil an egg?", "response_a": "Boil it."',
        "not valid JSON",
    ),
    "not-an-object": ('["a", "list"]', "expected a JSON object, got list"),
    "missing-field": (json.dumps(NO_RESPONSE_B), "field 'response_b': missing"),
    "wrong-type": (json.dumps({**GOOD_PAIR, "prompt": 7}), "field 'prompt': must be a string"),
    "empty-text": (json.dumps({**GOOD_PAIR, "response_a": " "}), "'response_a': must not be empty"),
}


@pytest.mark.parametrize("case", MALFORMED_LINES)
def test_a_malformed_context_line_names_the_file_line_and_field(project, tmp_path, case):
    line, message = MALFORMED_LINES[case]
    path = tmp_path / "context.jsonl"
    path.write_text(json.dumps(GOOD_PAIR) + "\n" + line + "\n")
    result = steer(
        project, "--context", str(path), "--candidates", str(EXAMPLES / "candidates.jsonl")
    )
    assert_clean_failure(result, f"{path}, line 2", message)


@pytest.mark.parametrize("choice", [2, -1, "1", True, 0.5, None])
def test_a_choice_outside_0_and_1_is_refused(project, tmp_path, choice):
    path = write_jsonl(
        tmp_path / "context.jsonl", [GOOD_PAIR, GOOD_PAIR, {**GOOD_PAIR, "choice": choice}]
    )
    result = steer(project, "--context", str(path), "--prompts", str(EXAMPLES / "prompts.jsonl"))
    assert_clean_failure(
        result, f"{path}, line 3, field 'choice': must be 0 (response_a preferred) or 1 (response_b"
    )


def test_malformed_candidates_and_prompts_name_their_file_and_line(project, tmp_path, contexts):
    candidates = write_jsonl(tmp_path / "candidates.jsonl", [{"prompt": "Hi?", "reply": "Hello."}])
    result = steer(project, "--context", str(contexts["helpful"]), "--candidates", str(candidates))
    assert_clean_failure(result, f"{candidates}, line 1, field 'response': missing")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Hi?"}\n\n{"text": "Hello?"}\n')  # blank lines are skipped
    result = steer(project, "--context", str(contexts["helpful"]), "--prompts", str(prompts))
    assert_clean_failure(result, f"{prompts}, line 3, field 'prompt': missing")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = steer(project, "--context", str(contexts["helpful"]), "--prompts", str(empty))
    assert_clean_failure(result, f"{empty}: no prompts")


def test_bad_options_and_paths_are_refused(project, tmp_path, contexts):
    context, prompts = str(contexts["helpful"]), str(EXAMPLES / "prompts.jsonl")
    result = steer(
        project,
        "--context",
        str(tmp_path / "nope.jsonl"),
        "--prompts",
        prompts,
        subprocess_run=True,
    )
    assert_clean_failure(result, f"{tmp_path / 'nope.jsonl'}: no such file")
    result = steer(tmp_path, "--context", context, "--prompts", prompts)
    assert_clean_failure(result, f"{tmp_path} is not a Kedro project")
    usage_errors = {  # argparse: exit status 2 and the usage line
        ("--top-p", "0"): "argument --top-p: must be in (0, 1], got 0",
        ("--top-k", "-1"): "argument --top-k: must be an integer >= 0, got -1",
        ("--repetition-penalty", "0"): "argument --repetition-penalty: must be a number > 0",
        ("--max-new-tokens", "ten"): "argument --max-new-tokens: expected an integer, got 'ten'",
        ("--device", "gpu"): "argument --device: expected auto, cpu, cuda or cuda:N, got 'gpu'",
        ("--candidates", prompts): "argument --candidates: not allowed with argument --prompts",
    }
    for option, message in usage_errors.items():
        result = steer(project, "--context", context, "--prompts", prompts, *option)
        assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.fixture(scope="module")
def untrained_project(tmp_path_factory):
    """A project copy in which nothing has run yet."""
    return copy_project(tmp_path_factory.mktemp("untrained_project"))


def test_without_trained_artefacts_the_message_names_the_pipelines_to_run(
    untrained_project, contexts
):
    candidates = str(EXAMPLES / "candidates.jsonl")
    result = steer(
        untrained_project, "--context", str(contexts["helpful"]), "--candidates", candidates
    )
    assert_clean_failure(
        result,
        "No trained artefacts yet",
        "hh.features: run `kedro run --pipeline embedding --env test`",
        "hh.nppl_mixed.reward_model: run `kedro run --pipeline reward_modelling --env test`",
        "Run `ultrafeedback`, then `embedding`, then `reward_modelling` first",
    )
    prompts = str(EXAMPLES / "prompts.jsonl")
    result = steer(untrained_project, "--context", str(contexts["helpful"]), "--prompts", prompts)
    assert_clean_failure(
        result,
        "base_policy: run `kedro run --pipeline dpo --env test`",
        "hh.nppl_mixed.policy: run `kedro run --pipeline dpo --env test`",
    )


def test_a_context_longer_than_the_models_were_trained_for_is_refused(project, tmp_path):
    limits = trained_max_context()
    pairs = read_rows(EXAMPLES / "context_helpful.jsonl")
    size = max(limits.values()) + 1
    path = write_jsonl(tmp_path / "context.jsonl", (pairs * size)[:size])
    result = steer(
        project, "--context", str(path), "--candidates", str(EXAMPLES / "candidates.jsonl")
    )
    assert_clean_failure(
        result,
        f"{path} holds {size} context pairs but hh.nppl_mixed.reward_model was trained on "
        f"contexts of at most {limits['reward_model']} "
        "(parameter 'reward_modelling.hh.nppl_mixed.training.max_context' when it was trained)",
    )
    result = steer(project, "--context", str(path), "--prompts", str(EXAMPLES / "prompts.jsonl"))
    assert_clean_failure(
        result,
        f"hh.nppl_mixed.policy was trained on contexts of at most {limits['policy']} "
        "(parameter 'dpo.hh.nppl_mixed.training.max_context' when it was trained)",
    )


def test_a_text_too_long_for_the_embedding_model_is_cut_as_the_pipeline_cuts_it(
    project, tmp_path, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "400")  # rich logging: one line per message
    long_pair = {**GOOD_PAIR, "response_b": "word " * 400}  # MiniLM's max_length is 256 tokens
    path = write_jsonl(tmp_path / "context.jsonl", [GOOD_PAIR, long_pair])
    result = steer(
        project, "--context", str(path), "--candidates", str(EXAMPLES / "candidates.jsonl")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 text(s) longer than the embedding model's limit of 256 tokens were cut" in (
        result.stderr
    )


def test_with_overflow_drop_a_text_too_long_names_its_line(tmp_path):
    from steerable_alignment.embedding import EmbeddingConfig
    from steerable_alignment.steering.core import InputError, embed_texts

    config = EmbeddingConfig.from_params({"name": "hh", "overflow": "drop", "progress": False})
    with pytest.raises(InputError) as err:
        embed_texts(
            [GOOD_PAIR["prompt"]] * 2,
            [GOOD_PAIR["response_a"]] * 2,
            [GOOD_PAIR["response_b"], "word " * 400],
            [1, 2],
            config,
            384,
            tmp_path / "context.jsonl",
        )
    message = str(err.value)
    assert (
        f"{tmp_path / 'context.jsonl'}, line 2: a (prompt, response) text does not fit" in message
    )
    assert "'embedding.hh.max_length'" in message and "'embedding.hh.overflow': drop" in message


@contextlib.contextmanager
def edited(path: Path, old: str, new: str):
    """``path`` with ``old`` replaced by ``new`` for the duration of the block."""
    original = path.read_text()
    assert old in original, (path, old)
    path.write_text(original.replace(old, new))
    try:
        yield
    finally:
        path.write_text(original)


def test_the_models_recorded_context_size_wins_over_todays_parameters(project, tmp_path):
    limits = trained_max_context()
    pairs = read_rows(EXAMPLES / "context_helpful.jsonl")
    size = max(limits.values()) + 1
    path = write_jsonl(tmp_path / "context.jsonl", (pairs * size)[:size])
    conf = project / "conf" / "test"
    larger = f"max_context: {size + 2}"
    with (
        edited(conf / "parameters.yml", "max_context: 3", larger),
        edited(conf / "parameters_dpo.yml", "max_context: 3", larger),
    ):
        result = steer(
            project, "--context", str(path), "--candidates", str(EXAMPLES / "candidates.jsonl")
        )
        assert_clean_failure(
            result,
            f"hh.nppl_mixed.reward_model was trained on contexts of at most "
            f"{limits['reward_model']} (parameter 'reward_modelling.hh.nppl_mixed.training."
            "max_context' when it was trained)",
        )
        prompts = str(EXAMPLES / "prompts.jsonl")
        result = steer(project, "--context", str(path), "--prompts", prompts)
        assert_clean_failure(
            result, f"hh.nppl_mixed.policy was trained on contexts of at most {limits['policy']}"
        )


def test_a_context_embedded_otherwise_than_the_training_features_is_refused(project, tmp_path):
    context = head(EXAMPLES / "context_helpful.jsonl", TEST_MAX_CONTEXT, tmp_path / "c.jsonl")
    conf = project / "conf" / "test" / "parameters_embedding.yml"
    with edited(conf, "    num_threads: 1\n", "    num_threads: 1\n    max_length: 64\n"):
        result = steer(
            project, "--context", str(context), "--candidates", str(EXAMPLES / "candidates.jsonl")
        )
        assert_clean_failure(
            result,
            "'hh.nppl_mixed.reward_model' was trained on features embedded with other settings "
            "than today's parameters 'embedding.hh' (max_length: 256 vs 64; trained vs now)",
        )
        prompts = str(EXAMPLES / "prompts.jsonl")
        result = steer(project, "--context", str(context), "--prompts", prompts)
        assert_clean_failure(
            result, "'hh.nppl_mixed.policy' was trained on features embedded with other settings"
        )


# -- end to end: which pairs to ask next (--suggest) -----------------------------------------

POOL = EXAMPLES / "pool.jsonl"


def suggest(
    project: Path, context: Path, k: int, *args: str, pool: Path = POOL, **options: bool
) -> subprocess.CompletedProcess:
    return steer(
        project,
        "--context",
        str(context),
        "--suggest",
        str(k),
        "--pool",
        str(pool),
        *args,
        **options,
    )


@pytest.fixture(scope="module")
def short_context(tmp_path_factory):
    """A helpful user's context one pair short of the trained size, so one more can be asked."""
    folder = tmp_path_factory.mktemp("short_context")
    return head(EXAMPLES / "context_helpful.jsonl", TEST_MAX_CONTEXT - 1, folder / "c.jsonl")


def test_suggestions_are_the_pool_pairs_the_model_is_least_sure_of(project, short_context):
    pool = read_rows(POOL)
    result = suggest(project, short_context, len(pool), "--json", "--strategy", "uncertainty")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["mode"] == "suggest" and out["strategy"] == "uncertainty"
    assert out["model"] == "hh.nppl_mixed.reward_model"
    assert out["pool"] == {"file": str(POOL), "pairs": len(pool), "skipped": []}
    every = out["suggestions"]
    assert [s["rank"] for s in every] == list(range(1, len(pool) + 1))
    assert sorted(s["line"] for s in every) == list(range(1, len(pool) + 1))
    # the gain is the entropy of the predicted answer, so it falls with the rank
    for s in every:
        p = s["prob_b"]
        assert math.isclose(s["gain"], -(p * math.log(p) + (1 - p) * math.log(1 - p)), rel_tol=1e-5)
    gains = [s["gain"] for s in every]
    assert gains == sorted(gains, reverse=True)

    # P(b > a) is the model's own for that pair as a target of an episode with this context
    from steerable_alignment.episodes.batch import EpisodeBatch

    model = load_reward_model(project)
    rows = read_rows(short_context)
    context = pipeline_features(rows).unsqueeze(0)  # (1, N, 2, D)
    targets = pipeline_features([pool[s["line"] - 1] for s in every]).unsqueeze(0)  # (1, M, 2, D)
    batch = EpisodeBatch(
        context_features=context,
        context_choices=torch.tensor([[r["choice"] for r in rows]]),
        context_mask=torch.ones(1, len(rows), dtype=torch.bool),
        target_features=targets,
        target_choices=torch.zeros(1, len(pool), dtype=torch.long),
        target_mask=torch.ones(1, len(pool), dtype=torch.bool),
        objective=torch.zeros(1, dtype=torch.long),
    )
    with torch.no_grad():
        prob_b = model(batch)[0, :, 1].exp()  # (M,)
    for s, p in zip(every, prob_b.tolist(), strict=True):
        assert math.isclose(s["prob_b"], p, abs_tol=1e-5)

    # the first K of the ranking, and a table with one block per pair
    result = suggest(project, short_context, 2, "--strategy", "uncertainty")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Pairs worth asking next: hh.nppl_mixed.reward_model (version ")
    assert "strategy uncertainty; 2 of 8 pool pair(s)" in lines[1]
    for s in every[:2]:
        assert f"[{s['rank']}] pool line {s['line']}: gain {s['gain']:.3f} nats" in result.stdout
    assert "[3]" not in result.stdout


def test_by_default_a_one_z_model_asks_what_tells_the_training_users_apart(project, short_context):
    from steerable_alignment.contracts import dataset_tensors
    from steerable_alignment.evaluation.elicitation import PopulationView, population_bank
    from steerable_alignment.steering.commands import POPULATION_SIZE

    pool = read_rows(POOL)
    result = suggest(project, short_context, len(pool), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["strategy"] == "population"  # auto, for nppl_mixed (one z)
    gains = [s["gain"] for s in out["suggestions"]]
    assert gains == sorted(gains, reverse=True)
    # the gain is the information about which bank user this is, recomputed here
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    model = load_reward_model(project)
    with contextlib.chdir(project):
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="test") as session:
            context = session.load_context()
            pairs, features = (context.catalog.load(f"hh.{n}") for n in ("pairs", "features"))
            data = context.params["reward_modelling"]["hh"]["data"]
    split = dataset_tensors(pairs, features, data)
    bank = population_bank(
        model,
        split.data.features.float(),
        split.data.choices,
        split.splits["train"],
        POPULATION_SIZE,
        trained_max_context()["reward_model"],
        0,
    )
    view = PopulationView(model, bank)
    rows = read_rows(short_context)
    z = view.latents(
        pipeline_features(rows).unsqueeze(0),
        torch.tensor([[r["choice"] for r in rows]]),
        torch.ones(1, len(rows), dtype=torch.bool),
    )
    ordered = [pool[s["line"] - 1] for s in out["suggestions"]]
    expected = view.scores("population", z, pipeline_features(ordered), None)[0]
    for s, gain in zip(out["suggestions"], expected.tolist(), strict=True):
        assert math.isclose(s["gain"], max(gain, 0.0), abs_tol=1e-5)
    text = suggest(project, short_context, 1).stdout
    assert "strategy population; 1 of 8" in text
    assert "gain = information about which training user this is (nats)" in text


def test_a_pool_pair_already_answered_is_skipped_and_said_so(project, short_context, tmp_path):
    answered = read_rows(short_context)[0]
    swapped = {
        **answered,
        "response_a": answered["response_b"],
        "response_b": answered["response_a"],
    }
    pool = write_jsonl(tmp_path / "pool.jsonl", [*read_rows(POOL)[:3], swapped, read_rows(POOL)[0]])
    # as a user runs it: the warnings reach stderr as logged lines
    result = suggest(project, short_context, 3, "--json", pool=pool, subprocess_run=True)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["pool"]["pairs"] == 3
    assert out["pool"]["skipped"] == [
        {"line": 4, "reason": "already in the context (line 1)"},
        {"line": 5, "reason": "repeats pool line 1"},
    ]
    assert sorted(s["line"] for s in out["suggestions"]) == [1, 2, 3]
    assert f"{pool}, line 4: skipped, already in the context (line 1)" in result.stderr
    text = suggest(project, short_context, 1, pool=pool).stdout
    assert "Skipped 2 pool pair(s):" in text and "line 4: already in the context" in text


def test_bad_suggest_requests_are_refused(project, short_context, contexts, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert_clean_failure(
        suggest(project, short_context, 1, pool=empty), f"{empty}: the pool is empty"
    )
    assert_clean_failure(
        suggest(project, short_context, 9),
        f"--suggest 9: the pool {POOL} holds only 8 pair(s) that could be asked",
    )
    only_answered = write_jsonl(tmp_path / "answered.jsonl", read_rows(short_context))
    assert_clean_failure(
        suggest(project, short_context, 1, pool=only_answered),
        "holds only 0 pair(s) that could be asked (2 more skipped: already in the context",
    )
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Hi?", "response_a": "Hello."}])
    assert_clean_failure(
        suggest(project, short_context, 1, pool=bad), f"{bad}, line 1, field 'response_b': missing"
    )
    assert_clean_failure(
        suggest(project, short_context, 1, "--strategy", "information"),
        "the 'information' strategy needs a latent NP-BTL model",
    )
    assert_clean_failure(  # the context is already as large as the model was trained with
        suggest(project, contexts["helpful"], 1),
        f"already holds {TEST_MAX_CONTEXT} pairs, the most hh.nppl_mixed.reward_model was trained",
    )
    usage_errors = {  # argparse: exit status 2
        ("--suggest", "2"): "--suggest K and --pool FILE go together",
        ("--suggest", "0"): "argument --suggest: must be a positive integer, got 0",
        ("--suggest", "2", "--pool", str(POOL), "--strategy", "best"): "argument --strategy: "
        "invalid choice: 'best' (choose from ",
    }
    for option, message in usage_errors.items():
        result = steer(project, "--context", str(short_context), *option)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    result = steer(project, "--context", str(short_context), "--suggest", "1", "--pool", str(POOL),
                   "--strategy", "best")  # fmt: skip
    assert all(name in result.stderr for name in ("random", "uncertainty", "information"))
