"""Training-recipe settings for steering: NP-DPO and BTL-DPO-mixed retrained, scored on validation.

For each ``--setting NAME='{json}'`` (training overrides, e.g.
``{"nll_weight": 1.0, "max_steps": 30}``: keys of ``PolicyTrainingConfig``,
merged over ``dpo.hh.<variant>.training``; and under the key ``"policy"``,
policy overrides merged over ``dpo.hh.<variant>.policy``, e.g.
``{"policy": {"target_modules": ["q_proj", "v_proj", "o_proj"]}}`` -- the
adapted blocks must stay within the cached ``reference.trained_blocks``;
and under the key ``"sampling"``, generation overrides merged over
``generation.hh.sampling``, e.g. ``{"sampling": {"max_new_tokens": 80}}``),
this trains the HH NP-DPO
(``nppl_mixed``) and BTL-DPO-mixed (``btl_mixed``) policies with the
``dpo`` pipeline's own training code (``pipelines/dpo/__main__.py``
``train_namespace``), then generates answers for simulated users drawn from
the *validation* split (the test split is never read) with the evaluation
pipeline's generation nodes, as ``benchmarks/steering_validation.py`` does.
Settings whose training and policy overrides are equal (e.g. differing only
in ``sampling``) share one training run. It prints, per setting:

- the training history at the kept step (``val_loss``, the DPO loss that
  selects it, and ``val_chosen_nll``, the chosen responses' NLL per token);
- the ``--context``-pair steering gap per objective k: NP-DPO's k-user minus
  its j-user answers, and NP-DPO's k-user minus BTL-DPO-mixed, on the
  learned reward of k (``reward_k``) and, when the exact judge
  (``steerable_alignment.ultrafeedback.judge``) is there, on its score
  (``judge_k``) — mean, s.e. over prompts, prompts;
- with the judge, the share of answers showing each style marker per
  (model, user) (calibrated hedges, admissions of uncertainty, concrete
  steps, ...);
- fluency per (model, user): the mean NLL per answer token under the frozen
  base model (``base_nll``) and distinct-2;
- the first ``--show`` answers of each user.

Every answer with its scores goes to ``--out/steering_recipe_<NAME>.parquet``
and each run's history to ``..._<NAME>_history.parquet``.

The project (``--project``, default this checkout) is only read: its
finished ``make run`` artefacts (base policy, tokenised pairs, reference
log-probs, cached block states, features, reward models) are loaded once
into an in-memory catalog, the trained policies and their histories are
saved into that catalog, and checkpoints go to a scratch folder (a
temporary one, removed at the end, unless ``--scratch``): the project's own
policies are never overwritten. Training values are validated for every
setting before anything is trained.

    python benchmarks/steering_recipe.py \\
        --setting dpo='{}' --setting nll1='{"nll_weight": 1.0}' \\
        [--prompts 64] [--context 10] [--show 2] [--max-new-tokens N] [--project .] \\
        [--out DIR] [--scratch DIR]
    python benchmarks/steering_recipe.py --compare A B [--context 10] [--out DIR]

``--compare A B`` reads two settings' answer files (of this or earlier runs,
e.g. with different SFT bases in two project copies) and prints B − A per
(model, user) and in NP-DPO's judge gaps, paired by prompt, ± the bootstrap
s.e. over prompts.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import re
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks' helpers
from paired import MARKERS, SCORES, paired_differences  # noqa: E402
from steering_validation import OBJECTIVES, _setting  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASET = "hh"
#: The policies retrained per setting; NP-DPO is the steered one.
MODELS = ("nppl_mixed", "btl_mixed")
STEERED, BASELINE = MODELS
#: Training keys the benchmark sets itself (each run trains into its own scratch folder).
RESERVED_KEYS = ("checkpoint_dir",)
#: The setting key that holds policy (not training) overrides.
POLICY_KEY = "policy"
#: The setting key that holds generation sampling overrides (``generation.hh.sampling``).
SAMPLING_KEY = "sampling"
#: Policy keys a setting may not change (the context encoder must match its warm start).
FIXED_POLICY_KEYS = ("type", "embedding_dim")
#: Markers shown first (the honest and the helpful style); the judge's others follow.
KEY_MARKERS = ("calibrated_hedge", "uncertainty_admission", "concrete_steps")
SETTING_NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: The project artefacts the runs read (a finished `make run` made them).
INPUTS = (
    "base_policy",
    f"{DATASET}.pairs",
    f"{DATASET}.features",
    f"{DATASET}.policy_pairs",
    f"{DATASET}.reference_logps",
    f"{DATASET}.prefix_states",
    f"{DATASET}.nppl_mixed.reward_model",
    *(f"{DATASET}.btl_{k}.reward_model" for k in OBJECTIVES),
)


def _training_setting(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=JSON`` (parsed by steering_validation's ``_setting``) of training overrides."""
    from steerable_alignment.models.config import check_known_keys
    from steerable_alignment.recipes.policies import PolicyTrainingConfig

    try:
        name, overrides = _setting(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(
            f"{err} (expected NAME='{{\"training_key\": value, ...}}')"
        ) from err
    if not SETTING_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"setting name {name!r}: use letters, digits, '_', '.' or '-' (it names files)"
        )
    reserved = sorted(set(overrides) & set(RESERVED_KEYS))
    if reserved:
        raise argparse.ArgumentTypeError(
            f"{name}: {reserved} are set by the benchmark (each run trains in its scratch folder)"
        )
    from steerable_alignment.evaluation.generation import SamplingConfig
    from steerable_alignment.policy.config import PolicyConfig

    training = {k: v for k, v in overrides.items() if k not in (POLICY_KEY, SAMPLING_KEY)}
    policy = overrides.get(POLICY_KEY, {})
    sampling = overrides.get(SAMPLING_KEY, {})
    for key, value in ((POLICY_KEY, policy), (SAMPLING_KEY, sampling)):
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(
                f"--setting {name}: {key!r} must be a JSON object of {key} keys, got {value!r}"
            )
    fixed = sorted(set(policy) & set(FIXED_POLICY_KEYS))
    if fixed:
        raise argparse.ArgumentTypeError(f"--setting {name}: policy keys {fixed} cannot be changed")
    try:
        check_known_keys(PolicyTrainingConfig, training, f"--setting {name}")
        check_known_keys(PolicyConfig, policy, f"--setting {name} {POLICY_KEY}")
        check_known_keys(SamplingConfig, sampling, f"--setting {name} {SAMPLING_KEY}")
    except ValueError as err:  # ConfigError
        raise argparse.ArgumentTypeError(str(err)) from err
    return name, overrides


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from err
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, checked before any Kedro or model work.

    Returns:
        The namespace, with ``settings`` as name -> training overrides (in order).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--setting",
        type=_training_setting,
        action="append",
        default=[],
        help="NAME='{json}' training overrides, e.g. nll1='{\"nll_weight\": 1.0}' (repeatable)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="print B - A, paired by prompt, from two settings' answer files under --out "
        "(of this or earlier runs, at --context pairs); trains nothing",
    )
    parser.add_argument("--prompts", type=_positive_int, default=64, help="validation prompts")
    parser.add_argument("--context", type=_positive_int, default=10, help="context pairs")
    parser.add_argument(
        "--show", type=_non_negative_int, default=2, help="answers printed per user"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=None,
        help="answer length (default: generation.hh.sampling.max_new_tokens)",
    )
    parser.add_argument("--project", type=Path, default=ROOT, help="a project after `make run`")
    parser.add_argument("--env", default=None, help="Kedro configuration environment")
    parser.add_argument("--out", type=Path, default=None, help="default: <project>/data/09_tuning")
    parser.add_argument("--scratch", type=Path, default=None, help="checkpoints (default: temp)")
    args = parser.parse_args(argv)
    if args.compare and args.setting:
        parser.error("--compare reads finished answer files: give it without --setting")
    if not args.compare and not args.setting:
        parser.error("give at least one --setting NAME='{json}' (or --compare A B)")
    names = [name for name, _ in args.setting]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        parser.error(f"--setting: the names {repeated} are given more than once")
    if not (args.project / "pyproject.toml").is_file():
        parser.error(f"--project {args.project}: not a Kedro project (no pyproject.toml)")
    args.project = args.project.resolve()
    args.settings = dict(args.setting)
    args.out = args.out or args.project / "data/09_tuning"
    return args


def training_params(
    params: dict[str, Any], overrides: dict[str, Any], name: str, scratch: Path
) -> dict[str, Any]:
    """The project's parameters with one setting's training overrides on every retrained model.

    Each model's checkpoints go to ``scratch/<name>/<model>``; every merged
    training config is validated here (nothing is trained yet).

    Raises:
        ConfigError: naming the setting and the parameter.
    """
    from steerable_alignment.models.config import ConfigError
    from steerable_alignment.policy.config import PolicyConfig
    from steerable_alignment.recipes.policies import PolicyTrainingConfig

    overrides = dict(overrides)
    policy_overrides = overrides.pop(POLICY_KEY, {})
    overrides.pop(SAMPLING_KEY, None)  # generation, not training: see generation_params
    out = copy.deepcopy(params)
    for model in MODELS:
        out["dpo"][DATASET][model]["policy"].update(copy.deepcopy(policy_overrides))
        training = out["dpo"][DATASET][model]["training"]
        training.update(overrides, checkpoint_dir=str(scratch / name / model))
        try:
            PolicyConfig.from_params(out["dpo"][DATASET][model]["policy"], embedding_dim=1)
            PolicyTrainingConfig.from_params(training, prefix="training")
        except (ConfigError, TypeError) as err:  # TypeError: a value of the wrong type
            raise ConfigError(f"--setting {name} ({DATASET}.{model}): {err}") from err
    return out


def generation_params(
    params: dict[str, Any],
    prompts: int,
    context: int,
    max_new_tokens: int | None = None,
    sampling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``generation.hh`` on the validation split, one context size, no continuum users.

    ``sampling`` (a setting's overrides) is merged over the sampling
    parameters after ``max_new_tokens`` (the command line's), and checked.

    Raises:
        ConfigError: a sampling value out of range, naming the parameter.
    """
    from steerable_alignment.evaluation.generation import SamplingConfig

    generation = copy.deepcopy(params["generation"][DATASET])
    generation.update(
        split="validation", num_prompts=prompts, context_sizes=[context], progress=False
    )
    if max_new_tokens is not None:
        generation["sampling"]["max_new_tokens"] = max_new_tokens
    generation["sampling"].update(copy.deepcopy(sampling or {}))
    SamplingConfig.from_params(generation["sampling"], prefix=f"generation.{DATASET}.sampling")
    generation.pop("continuum", None)  # the pure users only
    return generation


def training_key(overrides: dict[str, Any]) -> str:
    """What identifies a setting's training run: its overrides without the sampling ones."""
    return json.dumps(
        {k: v for k, v in overrides.items() if k != SAMPLING_KEY}, sort_keys=True, default=str
    )


def exact_judge(scores: Any) -> Any:
    """The answers with the exact judge's columns, or None (the reason is printed).

    EXACT-JUDGE HOOK: ``steerable_alignment.ultrafeedback.judge.judge_answers(prompts,
    answers)`` -> one row per answer with ``judge_<objective>`` and boolean
    ``marker_<style>`` columns. The evaluation's ``score_answers`` adds them
    itself where it calls the judge; this scores the answers here otherwise.
    """
    import pandas as pd

    if any(c.startswith("judge_") for c in scores):
        return scores
    try:
        from steerable_alignment.ultrafeedback.judge import judge_answers
    except ImportError as err:
        print(f"exact judge: skipped ({err}); the gaps below are on the learned rewards only")
        return None
    try:
        judged = judge_answers(scores["prompt"].tolist(), scores["response"].tolist())
    except ValueError as err:  # JudgeUnavailable: prompts the generator did not write
        print(f"exact judge: skipped ({err})")
        return None
    new = [c for c in judged if c not in scores]
    return pd.concat([scores.reset_index(drop=True), judged[new].reset_index(drop=True)], axis=1)


def _row(title: str, diff: Any) -> str:
    n = len(diff)
    se = float(diff.std()) / math.sqrt(n) if n > 1 else float("nan")
    return f"{title:<58}{float(diff.mean()):8.2f}{se:8.2f}{n:5d}"


def report(label: str, scores: Any, histories: dict[str, Any], context: int, show: int) -> None:
    """Print one setting's kept steps, steering gaps, marker shares and a few answers."""
    from steerable_alignment.evaluation.generation import _paired_diff

    print(f"\n[{label}]")
    for model, history in histories.items():
        best = history[history["best"]].iloc[0]
        last = history.iloc[-1]
        print(
            f"  {model}: kept step {int(best['step'])} of {int(last['step'])}: val_loss "
            f"{best['val_loss']:.4f}, val_chosen_nll {best.get('val_chosen_nll', math.nan):.4f}"
            f" (last {last.get('val_chosen_nll', math.nan):.4f})"
        )
    columns = [p for p in ("reward", "judge") if f"{p}_{OBJECTIVES[0]}" in scores]
    print(f"  {'gap at ' + str(context) + ' pairs':<56}{'mean':>8}{'s.e.':>8}{'n':>5}")
    for k, j in (OBJECTIVES, OBJECTIVES[::-1]):
        k_user = {"model": STEERED, "user": k, "num_context": context}
        for prefix in columns:
            column = f"{prefix}_{k}"
            j_user = {"model": STEERED, "user": j, "num_context": context}
            baseline = {"model": BASELINE, "user": k, "num_context": context}
            steering = _paired_diff(scores, k_user, j_user, column)  # (P,)
            over_baseline = _paired_diff(scores, k_user, baseline, column)  # (P,)
            print(_row(f"  NP-DPO {column}: {k} user - {j} user", steering))
            print(_row(f"  NP-DPO {k} user - BTL-DPO-mixed, {column}", over_baseline))
    at = scores[scores["num_context"] == context]
    markers = [c for c in scores if c.startswith("marker_")]
    if markers:
        first = [f"marker_{m}" for m in KEY_MARKERS if f"marker_{m}" in markers]
        ordered = first + [m for m in markers if m not in first]
        shares = at.groupby(["model", "user"])[ordered].mean()
        shares.columns = [c.removeprefix("marker_") for c in shares.columns]
        print(f"  marker shares at {context} pairs (per model and user):")
        print(textwrap.indent(shares.round(3).to_string(), "    "))
    fluency = [c for c in ("base_nll", "distinct_2") if c in at]
    if fluency:
        print(f"  fluency at {context} pairs (mean per model and user):")
        print(
            textwrap.indent(
                at.groupby(["model", "user"])[fluency].mean().round(3).to_string(), "    "
            )
        )
    for (model, user), rows in at.groupby(["model", "user"]):
        for _, row in rows.sort_values("prompt_id").head(show).iterrows():
            print(f"  {model} / {user} user / prompt {row['prompt_id']}: {row['prompt']!r}")
            print(f"    -> {row['response']!r}")


# (column, label, scale) that --compare pairs per (model, user); shares in points
COMPARED = (*MARKERS, *SCORES, ("base_nll", "base NLL per token (each file's own base)", 1.0))


def steering_gaps(scores: Any, context: int) -> Any:
    """Per prompt, NP-DPO's judge gap ``gap_<k>``: its k-user minus its j-user on ``judge_k``."""
    at = scores[(scores["model"] == STEERED) & (scores["num_context"] == context)]
    out = None
    for k, j in (OBJECTIVES, OBJECTIVES[::-1]):
        wide = at.pivot(index="prompt_id", columns="user", values=f"judge_{k}")  # (P, users)
        gap = (wide[k] - wide[j]).rename(f"gap_{k}")
        out = gap.to_frame() if out is None else out.join(gap)
    return out.reset_index()


def compare(out: Path, first: str, second: str, context: int) -> str:
    """``--compare``: ``second − first`` per (model, user) and in NP-DPO's judge gaps.

    Both answer files (``steering_recipe_<NAME>.parquet``) must hold the same
    validation prompts for every (model, user) at ``context`` pairs: the
    benchmark draws its users and prompts from the seeds, so two runs are
    paired by prompt. ± is the bootstrap s.e. over prompts. The base NLL is
    under each file's own base policy: comparable across files only when the
    two share their base (not when the SFT differs).
    """
    import pandas as pd

    tables = []
    for name in (first, second):
        path = out / f"steering_recipe_{name}.parquet"
        if not path.is_file():
            raise SystemExit(f"--compare: {path} does not exist (run --setting {name}=... first)")
        table = pd.read_parquet(path)
        if not (table["num_context"] == context).any():
            raise SystemExit(f"--compare: {path} has no answers at {context} context pairs")
        missing = [f"judge_{k}" for k in OBJECTIVES if f"judge_{k}" not in table]
        if missing:
            raise SystemExit(f"--compare: {path} lacks the exact judge's columns {missing}")
        tables.append(table[table["num_context"] == context])
    a, b = tables
    lines = [
        f"{second} − {first}, validation, {context} context pairs, paired by prompt "
        "(± bootstrap s.e. over prompts):",
        "",
        f"| model | user | measure | {first} | {second} | difference |",
        "|---|---|---|---|---|---|",
    ]

    def add(model: str, user: str, rows: list[dict]) -> None:
        for r in rows:
            digits = 1 if r["scale"] == 100.0 else 3
            lines.append(
                f"| {model} | {user} | {r['column']} | {r['first']:.{digits}f} | "
                f"{r['second']:.{digits}f} | {r['diff']:+.{digits}f} ± {r['se']:.{digits}f} |"
            )

    gaps = [
        (f"gap_{k}", f"judge gap {k} ({k} − {j} user)", 1.0)
        for k, j in (OBJECTIVES, OBJECTIVES[::-1])
    ]
    what = f"--compare {first} {second}"
    add(
        STEERED,
        "both",
        paired_differences(
            steering_gaps(a, context), steering_gaps(b, context), gaps, "prompt_id", what
        ),
    )
    for (model, user), rows in a.groupby(["model", "user"]):
        other = b[(b["model"] == model) & (b["user"] == user)]
        columns = [c for c in COMPARED if c[0] in rows and c[0] in other]
        add(
            model,
            user,
            paired_differences(rows, other, columns, "prompt_id", f"{what} ({model}, {user} user)"),
        )
    return "\n".join(lines)


def _train(loaded: dict[str, Any], run_params: dict[str, Any], train_namespace: Any) -> tuple:
    """Train every retrained model on an in-memory catalog of the project's artefacts.

    Returns:
        (model -> trained policy, model -> its history).
    """
    from kedro.io import DataCatalog, MemoryDataset

    catalog = DataCatalog(
        datasets={
            **{n: MemoryDataset(v, copy_mode="assign") for n, v in loaded.items()},
            **{
                f"{DATASET}.{m}.{output}": MemoryDataset(copy_mode="assign")
                for m in MODELS
                for output in ("policy", "policy_history")
            },
        }
    )
    policies, histories = {}, {}
    for model in MODELS:
        namespace = f"{DATASET}.{model}"
        policies[model] = train_namespace(catalog, run_params, namespace, save=True)
        histories[model] = catalog.load(f"{namespace}.policy_history")
    return policies, histories


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.compare:
        print(compare(args.out, *args.compare, args.context))
        return
    logging.basicConfig(level=logging.WARNING)

    import pandas as pd
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from steerable_alignment.models.config import ConfigError
    from steerable_alignment.pipelines.dpo.__main__ import train_namespace
    from steerable_alignment.pipelines.evaluation.generation_nodes import (
        generate_answers_for_users,
        make_generation_users,
        score_answers,
    )

    bootstrap_project(args.project)
    with KedroSession.create(project_path=args.project, env=args.env) as session:
        context = session.load_context()
        params, project_catalog = context.params, context.catalog
        with tempfile.TemporaryDirectory(prefix="steering_recipe_") as temporary:
            scratch = args.scratch or Path(temporary)
            try:  # every setting's values, before any loading or training
                runs = {
                    label: training_params(params, overrides, label, scratch)
                    for label, overrides in args.settings.items()
                }
                generations = {
                    label: generation_params(
                        params,
                        args.prompts,
                        args.context,
                        args.max_new_tokens,
                        overrides.get(SAMPLING_KEY),
                    )
                    for label, overrides in args.settings.items()
                }
            except ConfigError as err:
                sys.exit(f"steering_recipe.py: error: {err}")
            missing = [name for name in INPUTS if not project_catalog.exists(name)]
            if missing:
                sys.exit(
                    f"steering_recipe.py: error: {args.project} lacks {missing}; run `make run` "
                    "there first"
                )
            # the project's artefacts, loaded once, read-only; the outputs stay in memory
            loaded = {name: project_catalog.load(name) for name in INPUTS}
            generation = next(iter(generations.values()))  # the users: sampling plays no part
            data = params["dpo"][DATASET]["data"]
            pairs, features = loaded[f"{DATASET}.pairs"], loaded[f"{DATASET}.features"]
            users = make_generation_users(pairs, features, data, generation)
            reward_models = {
                f"reward_model_{k}": loaded[f"{DATASET}.btl_{k}.reward_model"] for k in OBJECTIVES
            }
            args.out.mkdir(parents=True, exist_ok=True)
            print(
                f"{DATASET}, validation split, {len(users['prompt_rows'])} prompts, "
                f"{args.context} context pairs; settings {list(args.settings)}"
            )
            trained: dict[str, tuple[dict, dict]] = {}  # training_key -> (policies, histories)
            for label, run_params in runs.items():
                started = time.perf_counter()
                generation = generations[label]
                key = training_key(args.settings[label])
                if key in trained:
                    policies, histories = trained[key]
                    print(f"\n{label}: reuses the policies trained for an equal setting")
                else:
                    policies, histories = _train(loaded, run_params, train_namespace)
                    trained[key] = policies, histories
                answers = {
                    m: generate_answers_for_users(
                        loaded["base_policy"], p, pairs, features, users, data, generation
                    )
                    for m, p in policies.items()
                }
                scores = score_answers(
                    pairs,
                    features,
                    users,
                    data,
                    params["embedding"][DATASET],
                    generation,
                    base_policy=loaded["base_policy"],
                    **answers,
                    **reward_models,
                )
                judged = exact_judge(scores)  # None: no judge, the learned rewards only
                scores = scores if judged is None else judged
                scores.to_parquet(args.out / f"steering_recipe_{label}.parquet")
                pd.concat(
                    [h.assign(model=m) for m, h in histories.items()], ignore_index=True
                ).to_parquet(args.out / f"steering_recipe_{label}_history.parquet")
                print(
                    f"\n{label}: overrides {args.settings[label]} "
                    f"({time.perf_counter() - started:.0f} s)"
                )
                report(label, scores, histories, args.context, args.show)
    print(f"\nanswers and histories: {args.out}/steering_recipe_<setting>*.parquet")


if __name__ == "__main__":
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    main()
