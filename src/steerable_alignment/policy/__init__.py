"""DPO policies (DESIGN.md §2): BTL-DPO and NP-DPO with a FiLM-conditioned LoRA LLM.

Framework-free torch code; transformers and peft are imported only when a
policy is built or loaded.
"""

from steerable_alignment.policy.checkpoint import (
    BaseModelMismatchError,
    load_policy,
    load_trainable,
    read_checkpoint_config,
    save_trainable,
)
from steerable_alignment.policy.config import PolicyConfig, resolve_layers
from steerable_alignment.policy.dpo import DPOOutput, dpo_loss
from steerable_alignment.policy.film import FiLM, FiLMConditioner
from steerable_alignment.policy.logps import sequence_logps, sequence_logps_from_hidden
from steerable_alignment.policy.model import PolicyModel, base_model_fingerprint

__all__ = [
    "BaseModelMismatchError",
    "DPOOutput",
    "FiLM",
    "FiLMConditioner",
    "PolicyConfig",
    "PolicyModel",
    "base_model_fingerprint",
    "dpo_loss",
    "load_policy",
    "load_trainable",
    "read_checkpoint_config",
    "resolve_layers",
    "save_trainable",
    "sequence_logps",
    "sequence_logps_from_hidden",
]
