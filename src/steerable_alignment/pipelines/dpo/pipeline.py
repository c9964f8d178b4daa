"""``dpo``: BTL-DPO and NP-DPO policies, one base pipeline per (dataset, variant).

Once: ``prepare_base_policy`` writes the pretrained LLM (``pretrained_policy``)
and ``fine_tune_base_policy`` fine-tunes it on the HH train responses (SFT,
``sft_history``) into ``base_policy``, every policy's start and reference. Per data
set (namespace ``<dataset>``): tokenise the pairs through the chat template
(``<dataset>.policy_pairs``), run the frozen lower blocks of the pretrained
model once per text (``<dataset>.prefix_states``: the SFT, the reference and
every policy start there), compute the reference log-probs once for every
policy (``<dataset>.reference_logps``) and draw the fixed test episodes. Per
variant (namespace ``<dataset>.<variant>``, one definition for all): train
the policy (``<dataset>.<variant>.policy`` + ``policy_history``) and predict
its implicit-reward preferences on the test episodes. Per data set the
predictions are scored together with the reward models' metric code (pool
bootstrap shared by all policies, paired comparisons); then one table, one
comparisons table and one chart for all data sets.

The pipeline needs ``<dataset>.pairs`` (``ultrafeedback``) and
``<dataset>.features`` (``embedding``: NP-DPO's context embeddings).
"""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from steerable_alignment.pipelines.dpo.nodes import (
    compute_prefix_states,
    fine_tune_base_policy,
    make_policy_evaluation_episodes,
    plot_dpo_accuracy,
    predict_policy,
    prepare_base_policy,
    reference_logps,
    tokenise_policy_pairs,
    train_policy,
)
from steerable_alignment.pipelines.evaluation.nodes import (
    collect_reward_metrics,
    concat_reward_comparisons,
    concat_reward_metrics,
)
from steerable_alignment.pipelines.namespaces import concat_across, dataset_node, per_variant
from steerable_alignment.pipelines.variants import DEFAULT_DPO_DATASETS, DPO_DATASETS

#: Variants whose context encoder may start from the data set's NP-BTL reward
#: model (``init_context_encoder``): they read it as the input ``encoder_init``.
ENCODER_INIT = {"nppl_mixed": "nppl_mixed"}

#: The data set whose train responses the base policy is fine-tuned on (SFT, every
#: policy's start and reference): HH and HHT share their prompts' splits and responses.
SFT_DATASET = "hh"


def variant_pipeline(encoder_init: bool = False) -> Pipeline:
    """Train one policy and predict with it: the template every variant instantiates.

    Args:
        encoder_init: the training node also reads ``encoder_init`` (an NP-BTL
            reward model to start the context encoder from).
    """
    shared = {
        "base_policy": "base_policy",
        "pairs": "pairs",
        "features": "features",
        "policy_pairs": "policy_pairs",
        "reference_logps": "reference_logps",
        "prefix_states": "prefix_states",
        "data": "params:data",
    }
    return Pipeline(
        [
            node(
                train_policy,
                inputs={
                    **shared,
                    "variant": "params:variant",
                    **({"encoder_init": "encoder_init"} if encoder_init else {}),
                },
                outputs=["policy", "policy_history"],
                name="train_policy",
                tags=["gpu"],
            ),
            node(
                predict_policy,
                inputs={
                    **shared,
                    "policy": "policy",
                    "episodes": "policy_evaluation_episodes",
                    "evaluation": "params:evaluation",
                },
                outputs="policy_predictions",
                name="predict_policy",
                tags=["gpu"],
            ),
        ]
    )


def dataset_pipeline(dataset: str) -> Pipeline:
    """Everything DPO does on one data set, under the namespace ``<dataset>``."""
    data = f"params:dpo.{dataset}.data"
    evaluation = f"params:dpo.{dataset}.evaluation"
    pairs, features = f"{dataset}.pairs", f"{dataset}.features"
    policy_pairs, reference = f"{dataset}.policy_pairs", f"{dataset}.reference_logps"
    prefix = f"{dataset}.prefix_states"
    episodes = f"{dataset}.policy_evaluation_episodes"
    given = {"pairs": pairs, "features": features, "data": data, "evaluation": evaluation}
    # the prefix states and the reference log-probs: the same pairs and settings
    lower = {
        "policy_pairs": policy_pairs,
        "data": data,
        "reference": f"params:dpo.{dataset}.reference",
    }
    nodes = Pipeline(
        [
            dataset_node(
                tokenise_policy_pairs,
                dataset,
                inputs={
                    "base_policy": "pretrained_policy",  # its tokenizer: SFT keeps it
                    "pairs": pairs,
                    "data": data,
                    "tokenise": f"params:dpo.{dataset}.tokenise",
                },
                outputs=policy_pairs,
                name="tokenise_policy_pairs",
            ),
            dataset_node(
                compute_prefix_states,
                dataset,
                inputs={"pretrained_policy": "pretrained_policy", **lower},  # SFT keeps them
                outputs=prefix,
                name="compute_prefix_states",
                tags=["gpu"],
            ),
            dataset_node(
                reference_logps,
                dataset,
                inputs={"base_policy": "base_policy", "prefix_states": prefix, **lower},
                outputs=reference,
                name="compute_reference_logps",
                tags=["gpu"],
            ),
            dataset_node(
                make_policy_evaluation_episodes,
                dataset,
                inputs={**given, "policy_pairs": policy_pairs},
                outputs=episodes,
                name="make_policy_evaluation_episodes",
            ),
            dataset_node(
                collect_reward_metrics,
                dataset,
                inputs={
                    **given,
                    "episodes": episodes,
                    **{v: f"{dataset}.{v}.policy_predictions" for v in DPO_DATASETS[dataset]},
                },
                outputs=[f"{dataset}_dpo_metrics", f"{dataset}_dpo_comparisons"],
                name="collect_dpo_metrics",
            ),
        ]
    )
    variants = per_variant(
        dataset,
        DPO_DATASETS[dataset],
        lambda variant: variant_pipeline(encoder_init=variant in ENCODER_INIT),
        inputs=lambda variant: {
            **(
                {"encoder_init": f"{dataset}.{ENCODER_INIT[variant]}.reward_model"}
                if variant in ENCODER_INIT
                else {}
            ),
            "base_policy": "base_policy",
            "pairs": pairs,
            "features": features,
            "policy_pairs": policy_pairs,
            "reference_logps": reference,
            "prefix_states": prefix,
            "policy_evaluation_episodes": episodes,
        },
        parameters={
            "params:data": data,
            "params:evaluation": evaluation,
            "params:variant": f"params:dpo.{dataset}.{{variant}}",
        },
    )
    return Pipeline(nodes + variants, tags=[dataset])


def report_pipeline(datasets: tuple[str, ...]) -> Pipeline:
    """All data sets' DPO metrics and comparisons in one table each, and the chart."""
    return Pipeline(
        [
            node(
                prepare_base_policy,
                inputs={"base": "params:dpo.base"},
                outputs="pretrained_policy",
                name="prepare_base_policy",
            ),
            node(
                fine_tune_base_policy,
                inputs={
                    "pretrained_policy": "pretrained_policy",
                    "pairs": f"{SFT_DATASET}.pairs",
                    "features": f"{SFT_DATASET}.features",
                    "policy_pairs": f"{SFT_DATASET}.policy_pairs",
                    "data": f"params:dpo.{SFT_DATASET}.data",
                    "sft": "params:dpo.sft",
                    "prefix_states": f"{SFT_DATASET}.prefix_states",
                    "reference": f"params:dpo.{SFT_DATASET}.reference",
                },
                outputs=["base_policy", "sft_history"],
                name="fine_tune_base_policy",
                tags=["gpu"],
            ),
            *concat_across(
                datasets,
                {
                    "dpo_metrics": concat_reward_metrics,
                    "dpo_comparisons": concat_reward_comparisons,
                },
            ),
            node(
                plot_dpo_accuracy,
                inputs={"dpo_metrics": "dpo_metrics"},
                outputs="dpo_accuracy_chart",
                name="plot_dpo_accuracy",
            ),
        ]
    )


def create_pipeline(datasets: tuple[str, ...] = DEFAULT_DPO_DATASETS, **kwargs) -> Pipeline:
    """The DPO pipeline over ``datasets`` (default: ``hh`` only, the CPU-sized run)."""
    if SFT_DATASET not in datasets:
        raise ValueError(
            f"The DPO pipeline fine-tunes the base policy on '{SFT_DATASET}' (SFT): include it in "
            f"the data sets, got {list(datasets)}"
        )
    unknown = [d for d in datasets if d not in DPO_DATASETS]
    if unknown:
        raise ValueError(f"No DPO variants for data set(s) {unknown}; known: {list(DPO_DATASETS)}")
    per_dataset = [dataset_pipeline(d) for d in datasets]
    return sum(per_dataset, report_pipeline(tuple(datasets)))
