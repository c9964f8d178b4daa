"""Configuration of the preference (reward) models.

A frozen dataclass built from the node's ``params:<variant>.model`` sub-tree.
Unknown keys and bad values fail loudly with the parameter's name, before any
training starts (DESIGN.md §2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODEL_TYPES = ("btl", "dpl", "nppl", "nppl_latent")
PAIR_ENCODERS = ("linear", "mlp")
AGGREGATIONS = ("sum", "mean")
LATENT_OBJECTIVES = ("elbo", "ml")


class ConfigError(ValueError):
    """A parameter has a value the code cannot work with."""


def check_known_keys(cls: type, params: Mapping[str, Any], prefix: str) -> None:
    """Raise :class:`ConfigError` if ``params`` has a key that is not a field of ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"Parameter '{prefix}' has unknown key(s) {unknown}; valid keys: {sorted(known)}"
        )


def config_from_params(
    cls: type, params: Mapping[str, Any], prefix: str, tuple_keys: tuple[str, ...] = ()
) -> Any:
    """A validated config dataclass from a parameters mapping.

    Unknown keys fail with the parameter path; list values of ``tuple_keys``
    become tuples (the dataclasses are frozen and hashable); then
    ``cls.validate(prefix)`` runs.

    Raises:
        ConfigError: naming the offending parameter.
    """
    check_known_keys(cls, params, prefix)
    values = dict(params)
    for key in tuple_keys:
        if values.get(key) is not None:
            values[key] = tuple(values[key])
    config = cls(**values)
    config.validate(prefix)
    return config


def _fail(prefix: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"Parameter '{prefix}.{key}': {message}")


@dataclass(frozen=True)
class RewardModelConfig:
    """Hyper-parameters of one reward model.

    Attributes:
        type: ``btl``, ``dpl``, ``nppl`` (deterministic z) or ``nppl_latent``.
        input_dim: D, the size of one option's feature vector (set from data).
        hidden_dim: width of every hidden layer.
        num_layers: hidden layers in the option encoder / reward MLPs.
        latent_dim: Z, size of the user latent (NP models).
        pair_encoder: ``linear`` or ``mlp`` map of ``[x_chosen, x_rejected]``.
        num_heads: heads of the context self-attention.
        aggregation: ``sum`` or ``mean`` over the context set.
        kl_weight: β of the latent-z ELBO.
        min_std: floor of the latent and DPL standard deviations.
        predictive_samples: S, draws of z from q(z|C) averaged by the latent
            model's posterior predictive (0: plug in the mean of q(z|C)).
        objective: training objective of the latent model: ``elbo`` (the
            neural-process ELBO) or ``ml`` (a Monte Carlo estimate of the
            targets' marginal likelihood under q(z|C), the posterior
            predictive that evaluation scores).
        train_samples: draws of z per episode in the ``ml`` objective.
        deterministic_path: give the latent model's decoder a deterministic
            encoding of the context beside the sampled z.
    """

    type: str
    input_dim: int = 1
    hidden_dim: int = 256
    num_layers: int = 2
    latent_dim: int = 64
    pair_encoder: str = "linear"
    num_heads: int = 4
    aggregation: str = "sum"
    kl_weight: float = 1.0
    min_std: float = 1e-3
    predictive_samples: int = 32
    objective: str = "elbo"
    train_samples: int = 16
    deterministic_path: bool = False

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], prefix: str = "model", **overrides: Any
    ) -> RewardModelConfig:
        """Build and validate a config from a parameters mapping.

        Args:
            params: the ``model`` parameters sub-tree.
            prefix: the parameter path used in error messages.
            **overrides: values taken from the data (e.g. ``input_dim``).

        Raises:
            ConfigError: on an unknown key or an invalid value.
        """
        check_known_keys(cls, params, prefix)
        if "type" not in params:
            raise _fail(prefix, "type", f"missing; expected one of {list(MODEL_TYPES)}")
        config = cls(**{**dict(params), **overrides})
        config.validate(prefix)
        return config

    def validate(self, prefix: str = "model") -> None:
        """Raise :class:`ConfigError` naming the first invalid parameter."""
        if self.type not in MODEL_TYPES:
            raise _fail(
                prefix,
                "type",
                f"unknown model type {self.type!r}; expected one of {list(MODEL_TYPES)}",
            )
        for key in ("input_dim", "hidden_dim", "num_layers", "latent_dim", "num_heads"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise _fail(prefix, key, f"must be a positive integer, got {value!r}")
        if self.hidden_dim % self.num_heads:
            raise _fail(
                prefix,
                "num_heads",
                f"must divide hidden_dim ({self.hidden_dim}), got {self.num_heads}",
            )
        if self.pair_encoder not in PAIR_ENCODERS:
            raise _fail(prefix, "pair_encoder", f"expected one of {list(PAIR_ENCODERS)}")
        if self.aggregation not in AGGREGATIONS:
            raise _fail(prefix, "aggregation", f"expected one of {list(AGGREGATIONS)}")
        if self.kl_weight < 0:
            raise _fail(prefix, "kl_weight", f"must be >= 0, got {self.kl_weight}")
        samples = self.predictive_samples
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
            raise _fail(prefix, "predictive_samples", f"must be an integer >= 0, got {samples!r}")
        if self.objective not in LATENT_OBJECTIVES:
            raise _fail(prefix, "objective", f"expected one of {list(LATENT_OBJECTIVES)}")
        if not isinstance(self.train_samples, int) or self.train_samples <= 0:
            raise _fail(
                prefix, "train_samples", f"must be a positive integer, got {self.train_samples!r}"
            )
        if self.min_std <= 0:
            raise _fail(prefix, "min_std", f"must be > 0, got {self.min_std}")

    @property
    def uses_context(self) -> bool:
        """Whether the model reads the user's context pairs."""
        return self.type in ("nppl", "nppl_latent")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (stored beside the weights)."""
        return dataclasses.asdict(self)
