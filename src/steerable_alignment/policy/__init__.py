"""DPO policies (DESIGN.md §2): BTL-DPO and NP-DPO with a FiLM-conditioned LoRA LLM.

Framework-free torch code, in two floors (docs/architecture.md):

- the data side, below the models: :mod:`.base_model` (find the packaged
  SmolLM2 GGUF, convert it once into a ``save_pretrained`` directory, load a
  base policy from a folder or hub id), :mod:`.tokenise` ((prompt, response)
  pairs through the chat template into padded tensors with response spans)
  and :mod:`.pairs` (the DPO data contract handed to training and
  evaluation);
- the model side: :mod:`.config`, :mod:`.model` (LoRA + FiLM), :mod:`.film`,
  :mod:`.logps`, :mod:`.prefix`, :mod:`.blocks`, :mod:`.dpo` (the loss),
  :mod:`.scoring`, :mod:`.checkpoint`.

The names below are loaded on first use (PEP 562), so importing the data side
(as the Kedro datasets do when the catalog is built) does not import torch,
transformers or peft.
"""

from __future__ import annotations

import importlib
from typing import Any

#: exported name -> the submodule that defines it
_EXPORTS = {
    # data side
    "DTYPES": "base_model",
    "MissingPackageError": "base_model",
    "PretrainedPolicy": "base_model",
    "atomic_directory": "base_model",
    "convert_gguf_to_pretrained": "base_model",
    "convert_smollm2": "base_model",
    "load_base_policy": "base_model",
    "locate_smollm2_gguf": "base_model",
    "resolve_dtype": "base_model",
    "save_pretrained_atomically": "base_model",
    "write_pretrained": "base_model",
    "PAIR_COLUMNS": "tokenise",
    "PolicyPairs": "tokenise",
    "TokenisationReport": "tokenise",
    "fit_max_length": "tokenise",
    "pair_lengths": "tokenise",
    "tokenise_pairs": "tokenise",
    "tokenise_pairs_table": "tokenise",
    # model side
    "BaseModelMismatchError": "checkpoint",
    "load_policy": "checkpoint",
    "load_trainable": "checkpoint",
    "read_checkpoint_config": "checkpoint",
    "save_trainable": "checkpoint",
    "PolicyConfig": "config",
    "resolve_layers": "config",
    "DPOOutput": "dpo",
    "dpo_loss": "dpo",
    "FiLM": "film",
    "FiLMConditioner": "film",
    "sequence_logps": "logps",
    "sequence_logps_from_hidden": "logps",
    "PolicyModel": "model",
    "base_model_fingerprint": "model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
