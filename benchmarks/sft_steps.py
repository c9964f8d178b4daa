"""Does a longer (or wider) SFT warm start recall the topics' concrete steps? Validation only.

Issue 13 asks that ≥ 50 % of helpfulness users' steered answers contain one of
the prompt's concrete steps; the policies write the *scaffolding* of steps
("First, …") far more often than a real step of the topic (docs/steering.md),
which points at the SFT base's recall of the phrases, not at DPO. This
benchmark varies only the SFT (``dpo.sft`` overrides per ``--setting``), runs
it with the ``dpo`` pipeline's own node (``fine_tune_base_policy``: the same
prefix states, data and seed), and samples one answer per **validation**
prompt from each SFT base (no adapters, no context; the evaluation's
sampling settings, ``--max-new-tokens`` new tokens). It reports, per setting,
with the exact judge (``ultrafeedback.judge``):

- the kept SFT step and its validation NLL per chosen-response token;
- the share of answers with a real step of the topic (``concrete_steps``),
  with step scaffolding ("First," anywhere), and the share of scaffolded
  answers that hold a real step (the recall that limits steering);
- the shares of calibrated hedges and uncertainty admissions (the other
  style, which must stay reachable), distinct-2 and median answer tokens;
- ± is the bootstrap s.e. over prompts; every setting answers the same
  prompts with the same sampling seeds, so the differences are paired:
  ``--compare A B`` reads two settings' answer files (from this or earlier
  runs) and prints B − A per prompt, ± the bootstrap s.e. over prompts.

The test split is never read. Needs ``hh.pairs``, ``hh.features`` and
``hh.policy_pairs`` on disk (``kedro run --pipeline ultrafeedback``, ``kedro
run --pipeline embedding --namespaces hh``, ``kedro run --pipeline dpo
--nodes prepare_base_policy,hh.tokenise_policy_pairs``); nothing of the
project's is overwritten. Answers go to ``--out/sft_steps_<NAME>.parquet``.

    python benchmarks/sft_steps.py --setting s320='{}' \\
        --setting s640='{"training": {"max_steps": 640}}' [--prompts 128] [--max-new-tokens 80]
    python benchmarks/sft_steps.py --compare s320 s640
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks' helpers
from paired import MARKERS, SCORES  # noqa: E402
from paired import paired_differences as _paired_differences  # noqa: E402
from paired import share as _share  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCAFFOLD = "first,"


def _setting(text: str) -> tuple[str, dict]:
    name, _, value = text.partition("=")
    overrides = json.loads(value or "{}")
    if not name or not isinstance(overrides, dict) or set(overrides) - {"training", "policy"}:
        raise SystemExit(
            f"--setting {text!r}: expected NAME='{{json}}' with keys 'training' and/or 'policy'"
        )
    return name, overrides


def merged_sft(sft: dict, overrides: dict) -> dict:
    """``dpo.sft`` with a setting's ``training`` / ``policy`` overrides merged in (a copy)."""
    out = copy.deepcopy(sft)
    for key in ("training", "policy"):
        out[key] = {**out[key], **overrides.get(key, {})}
    return out


def summarise(table) -> dict:
    """The report's shares (mean, s.e.) of one setting's judged answers (one per prompt)."""
    steps = table["marker_concrete_steps"].astype(float)
    scaffolded = table.loc[table["scaffold"], "marker_concrete_steps"].astype(float)
    return {
        "steps": _share(steps),
        "scaffold": _share(table["scaffold"].astype(float)),
        "steps_given_scaffold": _share(scaffolded),
        "hedge": _share(table["marker_calibrated_hedge"].astype(float)),
        "admission": _share(table["marker_uncertainty_admission"].astype(float)),
        "distinct_2": float(table["distinct_2"].mean()),
        "tokens": float(table["tokens"].median()),
    }


# (column, label, scale) of the paired comparison: shares in points, judge scores as they are
COMPARED = (MARKERS[0], ("scaffold", "'First,' (points)", 100.0), *MARKERS[1:], *SCORES)


def paired_differences(first, second) -> list[dict]:
    """``second − first`` per prompt for each ``COMPARED`` column: mean and bootstrap s.e.

    Both tables hold one answer per prompt (``sft_steps_<NAME>.parquet``); the
    prompts must be the same set, else the comparison is not paired.
    """
    return _paired_differences(first, second, COMPARED, key="prompt")


def compare(out: Path, first: str, second: str) -> str:
    """The report of ``--compare``: read both answer files under ``out``, paired differences."""
    import pandas as pd

    tables = []
    for name in (first, second):
        path = out / f"sft_steps_{name}.parquet"
        if not path.is_file():
            raise SystemExit(f"--compare: {path} does not exist (run --setting {name}=... first)")
        tables.append(pd.read_parquet(path))
    rows = paired_differences(*tables)
    lines = [
        f"{second} − {first}, the same {len(tables[0])} validation prompts, paired "
        "(± bootstrap s.e. over prompts):",
        "",
        "| measure | difference |",
        "|---|---|",
    ]
    for r in rows:
        digits = 1 if r["scale"] == 100.0 else 3
        lines.append(f"| {r['column']} | {r['diff']:+.{digits}f} ± {r['se']:.{digits}f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", action="append", type=_setting)
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="print B − A from two settings' answer files under --out; trains nothing",
    )
    parser.add_argument("--prompts", type=int, default=128, help="validation prompts")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "09_tuning")
    args = parser.parse_args()
    if args.compare:
        if args.setting:
            parser.error("--compare reads finished answer files: give it without --setting")
        print(compare(args.out, *args.compare))  # noqa: T201 - a benchmark's report
        return
    if not args.setting:
        parser.error("give at least one --setting NAME='{json}' (or --compare A B)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import pandas as pd
    import torch
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from steerable_alignment.evaluation.generation import (
        SamplingConfig,
        distinct_bigram_share,
        generate_answers,
    )
    from steerable_alignment.pipelines.dpo.nodes import fine_tune_base_policy, prepare_base_policy
    from steerable_alignment.policy.config import PolicyConfig
    from steerable_alignment.policy.model import PolicyModel
    from steerable_alignment.ultrafeedback.judge import judge_answers

    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT) as session:
        context = session.load_context()
        params, catalog = context.params, context.catalog
        pairs = catalog.load("hh.pairs")
        features = catalog.load("hh.features")
        policy_pairs = catalog.load("hh.policy_pairs")
    data = params["dpo"]["hh"]["data"]
    sampling_params = {
        **params["generation"]["hh"]["sampling"],
        "max_new_tokens": args.max_new_tokens,
    }
    sampling = SamplingConfig.from_params(sampling_params, prefix="generation.hh.sampling")
    prompts = sorted(set(pairs.loc[pairs["split"] == "validation", "prompt"]))
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(0)).tolist()
    prompts = [prompts[i] for i in order[: args.prompts]]
    pretrained = prepare_base_policy(params["dpo"]["base"])
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for name, overrides in args.setting:
        sft = merged_sft(params["dpo"]["sft"], overrides)
        started = time.perf_counter()
        base, history = fine_tune_base_policy(pretrained, pairs, features, policy_pairs, data, sft)
        sft_seconds = time.perf_counter() - started
        best = history.loc[history["best"]].iloc[-1]
        wrapper = {"type": "btl_dpo", "lora_r": 1, "lora_dropout": 0.0}
        config = PolicyConfig.from_params({**wrapper, "layers_to_transform": "top_1"})
        policy = PolicyModel(config, base.model, base_model_name="sft")  # LoRA B = 0: the base
        policy.eval()
        answers, lengths = generate_answers(
            policy, base.tokenizer, prompts, sampling, desc=f"answers {name}", progress=False
        )
        judged = judge_answers(prompts, answers)
        table = pd.DataFrame({"prompt": prompts, "response": answers, "tokens": lengths.numpy()})
        table = pd.concat([table, judged.reset_index(drop=True)], axis=1)
        table["scaffold"] = table["response"].str.lower().str.contains(SCAFFOLD, regex=False)
        table["distinct_2"] = [distinct_bigram_share(a) for a in answers]
        target = args.out / f"sft_steps_{name}.parquet"
        tmp = target.with_suffix(".tmp")
        table.to_parquet(tmp)
        tmp.replace(target)
        rows.append(
            {
                "setting": name,
                "overrides": json.dumps(overrides),
                "sft_s": sft_seconds,
                "best_step": int(best["step"]),
                "val_nll": float(best["val_chosen_nll"]),
                **summarise(table),
            }
        )
        logging.info("setting %s done: %s", name, rows[-1])

    def pct(pair: tuple[float, float]) -> str:
        return f"{100 * pair[0]:.1f} ± {100 * pair[1]:.1f}"

    lines = [
        f"SFT settings, validation split, {len(prompts)} prompts, one answer each "
        f"({args.max_new_tokens} new tokens), the SFT base alone (no DPO, no context):",
        "",
        "| setting | SFT s | kept step | val NLL/token | real steps % | 'First,' % | "
        "real step given 'First,' % | hedge % | admission % | distinct-2 | median tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} `{r['overrides']}` | {r['sft_s']:.0f} | {r['best_step']} | "
            f"{r['val_nll']:.4f} | {pct(r['steps'])} | {pct(r['scaffold'])} | "
            f"{pct(r['steps_given_scaffold'])} | {pct(r['hedge'])} | {pct(r['admission'])} | "
            f"{r['distinct_2']:.3f} | {r['tokens']:.0f} |"
        )
    print("\n".join(lines))  # noqa: T201 - a benchmark's report


if __name__ == "__main__":
    main()
