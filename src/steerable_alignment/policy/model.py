"""The DPO policy: a frozen causal LM with LoRA, and for NP-DPO FiLM + a context encoder.

DESIGN.md §2: ``π_θ(y | prompt, z)`` is the base LLM with LoRA adapters (peft)
whose conditioned decoder blocks are modulated by FiLM of the user latent
``z``; ``z`` comes from the NP-BTL :class:`ContextEncoder` reading the user's
context pairs as embeddings. The reference policy is the same model with
adapters and FiLM switched off under ``torch.no_grad()`` — one copy of the
base weights. BTL-DPO is the same without FiLM and context.

transformers and peft are imported inside functions: importing this module
costs only torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from steerable_alignment.models.config import ConfigError
from steerable_alignment.models.reward_models import ContextEncoder
from steerable_alignment.policy.blocks import decoder_blocks
from steerable_alignment.policy.config import PolicyConfig, resolve_layers
from steerable_alignment.policy.film import FiLMConditioner
from steerable_alignment.policy.logps import causal_lm_logps
from steerable_alignment.policy.pairs import SequenceBatch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

FINGERPRINT_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "vocab_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
)
# Config attributes that make logits differ from ``lm_head(hidden)``.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale")


def tensors_digest(tensors: Mapping[str, torch.Tensor], max_values: int = 65_536) -> str:
    """A short hash of named tensors: names, dtypes, shapes and (up to) ``max_values`` evenly
    spaced values of each, exactly (so another model, dtype or warm start changes it)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        flat = tensor.reshape(-1)
        step = max(1, flat.numel() // max_values)
        digest.update(flat[::step].float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def base_weights_digest(policy_model: nn.Module) -> str:
    """:func:`tensors_digest` of every frozen parameter (the base model's weights)."""
    return tensors_digest({n: p for n, p in policy_model.named_parameters() if not p.requires_grad})


def base_model_fingerprint(model: PreTrainedModel) -> dict[str, Any]:
    """The architecture facts a checkpoint of trainable weights depends on."""
    return {key: getattr(model.config, key, None) for key in FINGERPRINT_KEYS}


class PolicyModel(nn.Module):
    """BTL-DPO or NP-DPO policy around a base causal LM.

    The base model is wrapped in place by peft (its weights frozen); build it
    once per policy. Trainable: LoRA, and for ``np_dpo`` the FiLM MLPs and the
    context encoder.

    Args:
        config: the policy's hyper-parameters.
        base_model: a Hugging Face causal LM (``AutoModelForCausalLM``).
        base_model_name: the name or path recorded in checkpoints (default:
            the model's ``name_or_path``).

    Raises:
        ConfigError: the model or its blocks do not fit the config.
    """

    def __init__(
        self,
        config: PolicyConfig,
        base_model: PreTrainedModel,
        base_model_name: str | None = None,
    ) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model

        config.validate()
        self.config = config
        self.base_model_name = base_model_name or base_model.name_or_path or "<unnamed>"
        self.base_fingerprint = base_model_fingerprint(base_model)
        if config.logits_at_response_only:
            for key in _LOGIT_POSTPROCESSING:
                if getattr(base_model.config, key, None) not in (None, 1, 1.0):
                    raise ConfigError(
                        f"Parameter 'policy.logits_at_response_only': {self.base_model_name} "
                        f"post-processes its logits ({key}); set it to false"
                    )
        blocks = decoder_blocks(base_model)
        num_layers = len(blocks)
        lora_layers = resolve_layers(
            config.layers_to_transform, num_layers, "policy.layers_to_transform"
        )
        for param in base_model.parameters():
            param.requires_grad_(False)
        all_layers = len(lora_layers) == num_layers
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            layers_to_transform=None if all_layers else lora_layers,
            layers_pattern=None if all_layers else "layers",
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            self.lm = get_peft_model(base_model, lora)
        except ValueError as error:
            raise ConfigError(f"Parameter 'policy.target_modules': {error}") from error
        #: The lowest block with adapters or FiLM: cached states may stand for the blocks below.
        self.lowest_adapted_block = min(lora_layers)
        self._in_reference_mode = False
        #: Digest of the weights the context encoder started from (None: a random start).
        self.warm_start_digest: str | None = None
        device = next(base_model.parameters()).device
        self.film: FiLMConditioner | None = None
        self.context_encoder: ContextEncoder | None = None
        if config.uses_context:
            film_layers = resolve_layers(config.film_layers, num_layers, "policy.film_layers")
            self.lowest_adapted_block = min(self.lowest_adapted_block, min(film_layers))
            self.film = FiLMConditioner(
                blocks,
                film_layers,
                config.latent_dim,
                base_model.config.hidden_size,
                config.film_hidden_dim,
            ).to(device)
            self.context_encoder = ContextEncoder(config.encoder_config(), config.latent_dim).to(
                device
            )
        logger.info(
            "%s policy on %s: %d trainable of %d parameters",
            config.type,
            self.base_model_name,
            sum(p.numel() for p in self.trainable_parameters().values()),
            sum(p.numel() for p in self.parameters()),
        )

    # -- parameters -------------------------------------------------------------------------

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Name -> parameter of every trainable weight (LoRA, FiLM, encoder)."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    # -- context ----------------------------------------------------------------------------

    def check_context_embeddings(self, embeddings: torch.Tensor) -> None:
        """Raise :class:`ConfigError` if context embeddings do not fit the encoder.

        Args:
            embeddings: (B, N, 2, D_emb), or any tensor whose last dimension is D_emb.
        """
        if not self.config.uses_context:
            raise ConfigError(f"a {self.config.type} policy reads no context")
        size = embeddings.shape[-1]
        if size != self.config.embedding_dim:
            raise ConfigError(
                f"Context embeddings have size {size} but the policy's context encoder "
                f"expects embedding_dim={self.config.embedding_dim} (parameter "
                "'policy.embedding_dim'; it must match the embedding model's output size)"
            )

    def encode_context(
        self, embeddings: torch.Tensor, choices: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The user latent from context pairs given as embeddings.

        Args:
            embeddings: (B, N, 2, D_emb) embeddings of options a and b of each context pair.
            choices: (B, N) long, 1 = option b preferred.
            mask: (B, N) bool, the real pairs (N may be 0: the population latent).

        Returns:
            (B, Z) latents.
        """
        self.check_context_embeddings(embeddings)
        if embeddings.dim() != 4 or embeddings.shape[2] != 2:
            raise ValueError(
                f"context embeddings must have shape (B, N, 2, D), got {tuple(embeddings.shape)}"
            )
        return self.context_encoder(embeddings, choices, mask)  # (B, Z)

    def init_context_encoder(self, reward_model: nn.Module, name: str = "reward model") -> None:
        """Start the context encoder from a trained NP-BTL reward model's encoder (a warm start).

        The NP-BTL encoder already maps a user's context pairs to a latent that
        tells users apart; with it NP-DPO only has to learn what each latent
        asks of the policy (FiLM and LoRA), instead of breaking the symmetry
        between users through FiLM layers that start as the identity.

        Args:
            reward_model: an ``NPBTLRewardModel`` with a deterministic latent whose
                encoder has this policy's sizes.
            name: the reward model's name, for messages.

        Raises:
            ConfigError: the policy reads no context, or the two encoders differ in
                size (both configurations are named).
        """
        if self.context_encoder is None:
            raise ConfigError(f"a {self.config.type} policy has no context encoder to initialise")
        source = getattr(reward_model, "context_encoder", None)
        reward_config = getattr(reward_model, "config", None)
        if source is None or reward_config is None:
            raise ConfigError(f"{name} has no context encoder (an NP-BTL model is needed)")
        ours = self.config.encoder_config()
        keys = ("input_dim", "hidden_dim", "num_layers", "num_heads", "pair_encoder", "aggregation")
        differ = {
            key: (getattr(reward_config, key), getattr(ours, key))
            for key in keys
            if getattr(reward_config, key) != getattr(ours, key)
        }
        ours_state = self.context_encoder.state_dict()
        theirs = source.state_dict()
        shapes = {
            k: (tuple(v.shape), tuple(ours_state[k].shape))
            for k, v in theirs.items()
            if k in ours_state and v.shape != ours_state[k].shape
        }
        if differ or shapes or theirs.keys() != ours_state.keys():
            detail = ", ".join(f"{k}: {a} vs {b}" for k, (a, b) in {**differ, **shapes}.items())
            raise ConfigError(
                f"Cannot start the policy's context encoder from {name}: sizes differ "
                f"({name} vs policy: {detail or 'other layers'}); set 'policy.encoder_*' and "
                "'policy.latent_dim' to the reward model's sizes (a deterministic NP-BTL model)"
            )
        self.context_encoder.load_state_dict(theirs)
        self.warm_start_digest = tensors_digest(theirs)

    def conditioned(self, z: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        """Hold ``z`` (S, Z), one row per sequence, for every forward and ``generate()``."""
        if self.film is None:
            raise ValueError(f"a {self.config.type} policy has no FiLM layers to condition")
        return self.film.conditioned(z)

    def film_disabled(self) -> contextlib.AbstractContextManager[None]:
        """Switch FiLM off within the block (a no-op for BTL-DPO)."""
        return self.film.disabled() if self.film is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def reference_mode(self) -> Iterator[None]:
        """The reference policy: adapters and FiLM off, no gradients, eval mode."""
        was_training = self.training
        self.eval()
        self._in_reference_mode = True
        try:
            with torch.no_grad(), self.lm.disable_adapter(), self.film_disabled():
                yield
        finally:
            self._in_reference_mode = False
            self.train(was_training)

    # -- log-probabilities ------------------------------------------------------------------

    def sequence_logps(
        self, sequences: SequenceBatch, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Summed response log-probs under the policy (see :func:`sequence_logps`).

        Args:
            sequences: S tokenised sequences.
            z: (S, Z) one latent per sequence (np_dpo). May be left out inside
                :meth:`conditioned` or :meth:`reference_mode`.

        Returns:
            (S,) float32.
        """
        if z is not None:
            with self.conditioned(z):
                return self._logps(sequences)
        self._require_latent()
        return self._logps(sequences)

    forward = sequence_logps

    def reference_logps(self, sequences: SequenceBatch) -> torch.Tensor:
        """(S,) summed response log-probs under the reference policy (no gradients)."""
        with self.reference_mode():
            return self._logps(sequences)

    def pair_logps(
        self, chosen: SequenceBatch, rejected: SequenceBatch, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of P chosen and P rejected responses in one forward pass.

        Args:
            chosen, rejected: P sequences each.
            z: (P, Z) the latent of each pair (np_dpo).

        Returns:
            (P,) chosen and (P,) rejected log-probs.
        """
        both = SequenceBatch.cat([chosen, rejected], pad_token_id=0)  # (2P, L)
        z_both = None if z is None else torch.cat([z, z])  # (2P, Z)
        logps = self.sequence_logps(both, z_both)  # (2P,)
        return logps[: len(chosen)], logps[len(chosen) :]

    def _require_latent(self) -> None:
        """NP-DPO runs with a latent, or with FiLM off (reference mode, :meth:`film_disabled`)."""
        if self.film is not None and self.film.enabled and self.film.latent is None:
            raise ValueError(
                "an np_dpo policy needs a latent: pass z (one row per sequence; for the "
                "population policy encode an empty context), or switch FiLM off"
            )

    def _logps(self, sequences: SequenceBatch) -> torch.Tensor:
        if sequences.prefix_blocks > self.lowest_adapted_block and not self._in_reference_mode:
            raise ConfigError(
                f"The sequences carry cached states of the lowest {sequences.prefix_blocks} "
                f"blocks but this policy adapts block {self.lowest_adapted_block} (parameters "
                "'policy.layers_to_transform'/'policy.film_layers'); cache fewer blocks "
                "(the data set's 'reference.trained_blocks') or adapt higher blocks only"
            )
        return causal_lm_logps(
            self.lm.get_base_model(),
            sequences,
            self.config.logits_at_response_only,
            full_forward=self.lm,
        )

    # -- generation -------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """``generate()`` of the policy (eval mode), conditioned on ``z`` (B, Z) if given.

        One return sequence per prompt and no beam search when ``z`` is given.

        Returns:
            (B, L + new) token ids, prompts included.
        """
        if z is not None:
            for key in ("num_return_sequences", "num_beams"):
                if generate_kwargs.get(key, 1) != 1:
                    raise ValueError(f"{key} > 1 is not supported with a latent z")
        else:
            self._require_latent()
        was_training = self.training
        self.eval()
        try:
            context = self.conditioned(z) if z is not None else contextlib.nullcontext()
            with context:
                return self.lm.generate(
                    input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs
                )
        finally:
            self.train(was_training)
