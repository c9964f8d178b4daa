"""A temporary copy of the project to run pipelines in, and the test env's tiny base policy.

Runs in the copy write their data under its own ``data/``, never the repository's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import PROJECT_ROOT

DATASET_LAYERS = (
    "01_raw",
    "02_intermediate",
    "03_primary",
    "04_feature",
    "05_model_input",
    "06_models",
    "07_model_output",
    "08_reporting",
)


def copy_project(root: Path, folders: tuple[str, ...] = ("conf",)) -> Path:
    """Copy the project's configuration (no ``conf/local``), sources and metadata to ``root``.

    Args:
        root: an empty folder.
        folders: top-level folders to copy besides ``src`` (e.g. ``notebooks``).

    Returns:
        ``root``, a Kedro project with an empty ``data/`` tree.
    """
    for name in folders:
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir(exist_ok=True)
    shutil.copytree(
        PROJECT_ROOT / "src",
        root / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    for name in ("pyproject.toml", ".telemetry"):
        if (PROJECT_ROOT / name).is_file():
            shutil.copy(PROJECT_ROOT / name, root / name)
    for layer in DATASET_LAYERS:
        (root / "data" / layer).mkdir(parents=True, exist_ok=True)
    return root


def save_tiny_base_policy(root: Path) -> Path:
    """The test env's base policy (conf/test/parameters_dpo.yml): a tiny random model whose
    tokenizer is trained on the copy's HH texts, never SmolLM2."""
    import pandas as pd

    from tests.models.tiny_causal_lm import save_tiny_base_policy as save

    pairs = pd.read_parquet(root / "data/03_primary/hh/pairs.parquet")
    texts = pd.concat([pairs["prompt"], pairs["response_a"], pairs["response_b"]]).tolist()
    return save(root / "data/01_raw/tiny_base_policy", texts)
