"""The data side of the DPO policy: the base LLM and policy tokenisation (framework-free).

- :mod:`.base_model`: find the packaged SmolLM2 GGUF, convert it once into a
  ``save_pretrained`` directory, load a base policy from a folder or hub id.
- :mod:`.tokenise`: (prompt, response_a, response_b) through the chat
  template into padded tensors with per-sequence response spans.

Neither imports torch or transformers at module level.
"""

from steerable_alignment.policy_data.base_model import (
    DTYPES,
    MissingPackageError,
    PretrainedPolicy,
    atomic_directory,
    convert_gguf_to_pretrained,
    convert_smollm2,
    load_base_policy,
    locate_smollm2_gguf,
    resolve_dtype,
    save_pretrained_atomically,
    write_pretrained,
)
from steerable_alignment.policy_data.tokenise import (
    PAIR_COLUMNS,
    PolicyPairs,
    TokenisationReport,
    fit_max_length,
    pair_lengths,
    tokenise_pairs,
    tokenise_pairs_table,
)

__all__ = [
    "DTYPES",
    "PAIR_COLUMNS",
    "MissingPackageError",
    "PolicyPairs",
    "PretrainedPolicy",
    "TokenisationReport",
    "atomic_directory",
    "convert_gguf_to_pretrained",
    "convert_smollm2",
    "fit_max_length",
    "load_base_policy",
    "locate_smollm2_gguf",
    "pair_lengths",
    "resolve_dtype",
    "save_pretrained_atomically",
    "tokenise_pairs",
    "tokenise_pairs_table",
    "write_pretrained",
]
