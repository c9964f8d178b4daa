"""Which reward-model and DPO policy variants run on which data set.

One base pipeline (``reward_modelling``) and one evaluation pipeline are
instantiated per ``(dataset, variant)`` under the namespace
``<dataset>.<variant>``. Adding a variant is a line here plus its parameters
in ``conf/base/parameters_reward_modelling.yml``; every catalog entry comes
from the dataset factories in ``conf/base/catalog.yml``.

A data set needs ``<dataset>.pairs`` and ``<dataset>.features`` (DESIGN.md
§4) from its data pipelines (``synthetic_data``; ``ultrafeedback`` then
``embedding`` for ``hh`` and ``hht``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    """Variants trained on one data set.

    Attributes:
        variants: namespaces of the reward models trained on it.
        oracle: whether a Bayes-optimal oracle exists (synthetic task only).
    """

    variants: tuple[str, ...]
    oracle: bool = False


REWARD_DATASETS: dict[str, DatasetSpec] = {
    "synthetic": DatasetSpec(variants=("btl", "dpl", "nppl", "nppl_latent"), oracle=True),
    "hh": DatasetSpec(variants=("btl_helpfulness", "btl_honesty", "btl_mixed", "nppl_mixed")),
    "hht": DatasetSpec(
        variants=("btl_helpfulness", "btl_honesty", "btl_truthfulness", "btl_mixed", "nppl_mixed")
    ),
}

#: DPO policy variants per data set: ``btl_<objective>`` (plain DPO + LoRA on
#: one objective's users), ``btl_mixed`` (all users) and ``nppl_mixed``
#: (NP-DPO). Each has a block in conf/base/parameters_dpo.yml.
DPO_DATASETS: dict[str, tuple[str, ...]] = {
    "hh": ("btl_helpfulness", "btl_honesty", "btl_mixed", "nppl_mixed"),
    "hht": ("btl_helpfulness", "btl_honesty", "btl_truthfulness", "btl_mixed", "nppl_mixed"),
}
#: The data sets of ``kedro run --pipeline dpo`` and of the default run's
#: generation (CPU-sized); ``dpo_all`` runs every one.
DEFAULT_DPO_DATASETS = ("hh",)
#: The data sets whose reward models the ``evaluation`` pipeline also scores
#: on users on a continuum between two objectives (``mixed_users.<dataset>``
#: in conf/base/parameters_evaluation.yml; docs/evaluation.md).
MIXED_USER_DATASETS = ("hh",)
#: The NP-BTL models asked to choose a new user's next pairs (active elicitation,
#: ``active_elicitation.<dataset>`` in conf/base/parameters_evaluation.yml).
ACTIVE_ELICITATION_MODELS: dict[str, tuple[str, ...]] = {
    "synthetic": ("nppl", "nppl_latent"),
    "hh": ("nppl_mixed",),
    "hht": ("nppl_mixed",),
}
