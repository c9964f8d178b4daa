"""A Kedro dataset for Hugging Face ``save_pretrained`` directories (model + tokenizer).

Kedro ships no dataset for these folders (``huggingface.HFDataset`` needs the
hub; ``pytorch.PyTorchDataset`` saves a bare state dict). This one saves a
causal LM and its tokenizer (chat template included) as safetensors through
``save_pretrained``, atomically (a temporary sibling folder renamed into
place), and loads them back with ``trust_remote_code=False``. transformers is
imported inside ``load``/``save`` so building the catalog stays fast.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

from steerable_alignment.policy.base_model import (
    DTYPES,
    PretrainedPolicy,
    save_pretrained_atomically,
)

_DEFAULT_LOAD_DTYPE = "float32"


class HFPretrainedDataset(AbstractVersionedDataset):
    """A causal LM and its tokenizer in one ``save_pretrained`` directory.

    ``save`` takes a ``(model, tokenizer)`` pair (a tuple, a
    :class:`~steerable_alignment.policy.PretrainedPolicy`, or any object
    with ``model`` and ``tokenizer`` attributes, such as a small dataclass);
    ``load`` returns a :class:`~steerable_alignment.policy.PretrainedPolicy`,
    which unpacks as ``model, tokenizer``. The model is not modified by ``save``.

    Example catalog entry::

        dpo.base_policy:
          type: steerable_alignment.datasets.HFPretrainedDataset
          filepath: data/06_models/dpo/base_policy
          load_args:
            dtype: float32        # float32 (default), bfloat16, float16, or auto
          save_args:
            dtype: bfloat16       # the stored weights' dtype; default: the model's own

    ``load_args`` other than ``dtype`` go to ``AutoModelForCausalLM.from_pretrained``
    (e.g. ``attn_implementation``); ``trust_remote_code`` must stay false.
    """

    def __init__(
        self,
        *,
        filepath: str,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._load_args = dict(load_args or {})
        self._save_args = dict(save_args or {})
        self.metadata = metadata
        if self._load_args.get("trust_remote_code", False):
            raise DatasetError(
                f"{filepath}: load_args.trust_remote_code must be false; this dataset only "
                "loads model classes that ship with transformers"
            )
        self._load_args.pop("trust_remote_code", None)
        load_dtype = self._load_args.get("dtype", _DEFAULT_LOAD_DTYPE)
        if load_dtype not in (*DTYPES, "auto"):
            raise DatasetError(
                f"{filepath}: load_args.dtype must be one of {(*DTYPES, 'auto')}, "
                f"got {load_dtype!r}"
            )
        unknown_save = set(self._save_args) - {"dtype"}
        if unknown_save:
            raise DatasetError(f"{filepath}: unknown save_args {sorted(unknown_save)}; only dtype")
        save_dtype = self._save_args.get("dtype")
        if save_dtype is not None and save_dtype not in DTYPES:
            raise DatasetError(
                f"{filepath}: save_args.dtype must be one of {DTYPES}, got {save_dtype!r}"
            )
        super().__init__(filepath=PurePosixPath(filepath), version=version)

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": str(self._filepath),
            "version": self._version,
            "load_args": self._load_args,
            "save_args": self._save_args,
        }

    def _exists(self) -> bool:
        try:
            path = self._get_load_path()
        except DatasetError:
            return False
        return (Path(path) / "config.json").is_file()

    def load(self) -> PretrainedPolicy:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(self._get_load_path())
        if not (path / "config.json").is_file():
            raise DatasetError(f"{path}: not a save_pretrained directory (no config.json)")
        args = dict(self._load_args)
        dtype = args.pop("dtype", _DEFAULT_LOAD_DTYPE)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype, trust_remote_code=False, **args
            )
        except (OSError, ValueError) as err:
            raise DatasetError(f"{path}: cannot load the model and tokenizer: {err}") from err
        return PretrainedPolicy(model.eval(), tokenizer)

    def save(self, data: Any) -> None:
        model, tokenizer = _unpack(data, self._filepath)
        path = Path(self._get_save_path())
        save_pretrained_atomically(model, tokenizer, path, dtype=self._save_args.get("dtype"))


def _unpack(data: Any, filepath: PurePosixPath) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a pair or an object with those attributes."""
    if isinstance(data, tuple | list) and len(data) == 2:
        model, tokenizer = data
    elif hasattr(data, "model") and hasattr(data, "tokenizer"):
        model, tokenizer = data.model, data.tokenizer
    else:
        raise DatasetError(
            f"{filepath}: expected a (model, tokenizer) pair or an object with 'model' and "
            f"'tokenizer' attributes, got {type(data).__name__}"
        )
    if not hasattr(model, "save_pretrained") or not hasattr(tokenizer, "save_pretrained"):
        raise DatasetError(
            f"{filepath}: expected a transformers model and tokenizer, got "
            f"{type(model).__name__} and {type(tokenizer).__name__}"
        )
    return model, tokenizer
