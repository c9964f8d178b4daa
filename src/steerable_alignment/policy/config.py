"""Configuration of the DPO policies (DESIGN.md §2: BTL-DPO and NP-DPO).

A frozen dataclass built from the node's ``params:<variant>.policy`` sub-tree.
Unknown keys and bad values fail loudly with the parameter's name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from steerable_alignment.models.config import ConfigError, RewardModelConfig, check_known_keys

POLICY_TYPES = ("btl_dpo", "np_dpo")
PAIR_ENCODERS = ("linear", "mlp")
AGGREGATIONS = ("sum", "mean")
_TOP_K = re.compile(r"^top_(\d+)$")

LayerSpec = str | tuple[int, ...]


def _fail(prefix: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"Parameter '{prefix}.{key}': {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_layer_spec(value: Any) -> Any:
    """YAML lists become tuples (hashable, comparable); strings stay strings."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(value)
    return value


def _check_layer_spec(prefix: str, key: str, spec: Any) -> None:
    expected = "expected 'all', 'top_<k>' (k >= 1) or a non-empty list of block indices"
    if isinstance(spec, str):
        match = _TOP_K.match(spec)
        if spec != "all" and (match is None or int(match.group(1)) < 1):
            raise _fail(prefix, key, f"got {spec!r}; {expected}")
        return
    if not isinstance(spec, tuple) or not spec or not all(_is_int(i) for i in spec):
        raise _fail(prefix, key, f"got {spec!r}; {expected}")
    if len(set(spec)) != len(spec):
        raise _fail(prefix, key, f"repeats a block index: {list(spec)}")


def resolve_layers(spec: LayerSpec, num_layers: int, name: str = "layers") -> list[int]:
    """Turn a block selection into sorted block indices.

    Args:
        spec: ``all``, ``top_<k>`` (the last k blocks) or block indices
            (negative indices count from the top, as in Python).
        num_layers: blocks in the model.
        name: the parameter path used in error messages.

    Raises:
        ConfigError: when the selection does not fit the model.
    """
    if spec == "all":
        return list(range(num_layers))
    if isinstance(spec, str):
        k = int(_TOP_K.match(spec).group(1))
        if k > num_layers:
            raise ConfigError(
                f"Parameter '{name}': {spec!r} asks for {k} blocks but the model has {num_layers}"
            )
        return list(range(num_layers - k, num_layers))
    bad = [i for i in spec if not -num_layers <= i < num_layers]
    if bad:
        raise ConfigError(
            f"Parameter '{name}': block indices {bad} are out of range for a model "
            f"with {num_layers} blocks"
        )
    indices = sorted({i % num_layers for i in spec})
    if len(indices) != len(spec):
        raise ConfigError(f"Parameter '{name}': {list(spec)} names a block twice")
    return indices


@dataclass(frozen=True)
class PolicyConfig:
    """Hyper-parameters of one DPO policy (the base LLM is given separately).

    Attributes:
        type: ``btl_dpo`` (LoRA only) or ``np_dpo`` (LoRA + FiLM + context encoder).
        lora_r, lora_alpha, lora_dropout: LoRA rank, scale and dropout.
        target_modules: names of the linear layers that get adapters.
        layers_to_transform: blocks that get adapters: ``all``, ``top_<k>`` or indices.
        film_layers: blocks followed by FiLM (np_dpo): ``all``, ``top_<k>`` or indices.
        film_hidden_dim: width of the MLP that maps z to γ and β of one block.
        latent_dim: Z, size of the user latent.
        embedding_dim: D_emb, size of one option's context embedding (np_dpo;
            set from the embedding data).
        encoder_hidden_dim, encoder_num_layers, encoder_num_heads,
        encoder_pair_encoder, encoder_aggregation: the context encoder
            (the NP-BTL ``ContextEncoder``, DESIGN.md §2).
        logits_at_response_only: apply the output layer only at response
            positions (same log-probs, far cheaper with a large vocabulary).
    """

    type: str = "np_dpo"
    lora_r: int = 128
    lora_alpha: float = 256.0
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    layers_to_transform: LayerSpec = "all"
    film_layers: LayerSpec = "all"
    film_hidden_dim: int = 128
    latent_dim: int = 64
    embedding_dim: int | None = None
    encoder_hidden_dim: int = 256
    encoder_num_layers: int = 2
    encoder_num_heads: int = 4
    encoder_pair_encoder: str = "linear"
    encoder_aggregation: str = "sum"
    logits_at_response_only: bool = True

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], prefix: str = "policy", **overrides: Any
    ) -> PolicyConfig:
        """Build and validate a config from a parameters mapping.

        Args:
            params: the ``policy`` parameters sub-tree.
            prefix: the parameter path used in error messages.
            **overrides: values taken from the data (e.g. ``embedding_dim``).

        Raises:
            ConfigError: on an unknown key or an invalid value.
        """
        values = {**dict(params), **overrides}
        check_known_keys(cls, values, prefix)
        for key in ("target_modules", "layers_to_transform", "film_layers"):
            if key in values:
                values[key] = _as_layer_spec(values[key])
        config = cls(**values)
        config.validate(prefix)
        return config

    @property
    def uses_context(self) -> bool:
        """Whether the policy reads the user's context (FiLM + encoder)."""
        return self.type == "np_dpo"

    def validate(self, prefix: str = "policy") -> None:
        """Raise :class:`ConfigError` naming the first invalid parameter."""
        if self.type not in POLICY_TYPES:
            raise _fail(prefix, "type", f"got {self.type!r}; expected one of {list(POLICY_TYPES)}")
        ints = ["lora_r", "film_hidden_dim", "latent_dim"]
        ints += ["encoder_hidden_dim", "encoder_num_layers", "encoder_num_heads"]
        for key in ints:
            value = getattr(self, key)
            if not _is_int(value) or value <= 0:
                raise _fail(prefix, key, f"must be a positive integer, got {value!r}")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, int | float):
            raise _fail(prefix, "lora_alpha", f"must be a number, got {self.lora_alpha!r}")
        if self.lora_alpha <= 0:
            raise _fail(prefix, "lora_alpha", f"must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise _fail(prefix, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        modules = self.target_modules
        if (
            not isinstance(modules, tuple)
            or not modules
            or not all(isinstance(m, str) and m for m in modules)
        ):
            raise _fail(
                prefix,
                "target_modules",
                f"must be a non-empty list of module names (e.g. [q_proj, v_proj]), "
                f"got {modules!r}",
            )
        _check_layer_spec(prefix, "layers_to_transform", self.layers_to_transform)
        _check_layer_spec(prefix, "film_layers", self.film_layers)
        if self.encoder_hidden_dim % self.encoder_num_heads:
            raise _fail(
                prefix,
                "encoder_num_heads",
                f"must divide encoder_hidden_dim ({self.encoder_hidden_dim}), "
                f"got {self.encoder_num_heads}",
            )
        if self.encoder_pair_encoder not in PAIR_ENCODERS:
            raise _fail(prefix, "encoder_pair_encoder", f"expected one of {list(PAIR_ENCODERS)}")
        if self.encoder_aggregation not in AGGREGATIONS:
            raise _fail(prefix, "encoder_aggregation", f"expected one of {list(AGGREGATIONS)}")
        if self.uses_context and (not _is_int(self.embedding_dim) or self.embedding_dim <= 0):
            raise _fail(
                prefix,
                "embedding_dim",
                f"np_dpo needs the size of the context embeddings (a positive integer, "
                f"usually set from the embedding data), got {self.embedding_dim!r}",
            )
        if not isinstance(self.logits_at_response_only, bool):
            raise _fail(
                prefix,
                "logits_at_response_only",
                f"must be true or false, got {self.logits_at_response_only!r}",
            )

    def encoder_config(self) -> RewardModelConfig:
        """The NP-BTL config that builds the shared ``ContextEncoder``."""
        return RewardModelConfig(
            type="nppl",
            input_dim=self.embedding_dim,
            hidden_dim=self.encoder_hidden_dim,
            num_layers=self.encoder_num_layers,
            latent_dim=self.latent_dim,
            pair_encoder=self.encoder_pair_encoder,
            num_heads=self.encoder_num_heads,
            aggregation=self.encoder_aggregation,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (stored beside the trainable weights)."""
        values = dataclasses.asdict(self)
        for key in ("target_modules", "layers_to_transform", "film_layers"):
            if isinstance(values[key], tuple):
                values[key] = list(values[key])
        return values
