"""Paired per-prompt comparisons of answer files, shared by the steering benchmarks.

Two runs of a steering benchmark answer the same validation prompts with the
same sampling seeds, so their difference is paired by prompt. The s.e. is
the evaluation's own cluster bootstrap (``evaluation.metrics.PoolBootstrap``)
with each prompt one cluster: the test pool, here the prompts, is what is
resampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLICATES = 1000
SEED = 7
#: (column, label, scale) of the exact judge's style markers, compared in points
MARKERS = (
    ("marker_concrete_steps", "real steps (points)", 100.0),
    ("marker_calibrated_hedge", "hedge (points)", 100.0),
    ("marker_uncertainty_admission", "admission (points)", 100.0),
)
#: the exact judge's per-objective scores and distinct-2, compared as they are
SCORES = (
    ("judge_helpfulness", "judge helpfulness", 1.0),
    ("judge_honesty", "judge honesty", 1.0),
    ("distinct_2", "distinct-2", 1.0),
)


def prompt_se(per_prompt: Any, replicates: int = REPLICATES, seed: int = SEED) -> float:
    """Bootstrap s.e. of the mean of a (P,) tensor of per-prompt values (one cluster each)."""
    import torch

    from steerable_alignment.evaluation.metrics import PoolBootstrap

    clusters = torch.arange(len(per_prompt)).unsqueeze(1)  # (P, 1)
    bootstrap = PoolBootstrap.draw(clusters, replicates, seed)
    keep = torch.ones(len(per_prompt), dtype=torch.bool)
    return bootstrap.se(per_prompt.double().unsqueeze(1), keep)


def share(values: Any, replicates: int = REPLICATES, seed: int = SEED) -> tuple[float, float]:
    """Mean and bootstrap s.e. of per-prompt values (one answer per prompt); NaNs when empty."""
    import torch

    x = torch.tensor([float(v) for v in values], dtype=torch.float64)  # any index
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(x.mean()), prompt_se(x, replicates, seed)


def paired_differences(
    first: Any,
    second: Any,
    columns: Sequence[tuple[str, str, float]],
    key: str = "prompt",
    what: str = "--compare",
    replicates: int = REPLICATES,
    seed: int = SEED,
) -> list[dict]:
    """``second − first`` per ``key`` (a prompt) for each (column, label, scale): mean, s.e.

    Both tables hold one row per ``key`` and the same set of keys, else the
    comparison is not paired and a ``ValueError`` (starting with ``what``) says so.

    Returns:
        One dict per column: ``column`` (its label), ``first``, ``second`` (the
        two means, scaled), ``diff``, ``se`` and ``scale``.
    """
    import torch

    a, b = first.set_index(key), second.set_index(key)
    if a.index.has_duplicates or b.index.has_duplicates:
        raise ValueError(f"{what}: each answer file must hold one answer per {key}")
    if set(a.index) != set(b.index):
        raise ValueError(
            f"{what}: the two answer files hold different {key}s "
            f"({len(set(a.index) ^ set(b.index))} not in both): not a paired comparison"
        )
    b = b.loc[a.index]
    out = []
    for column, label, scale in columns:
        x = torch.tensor(a[column].astype(float).to_numpy(), dtype=torch.float64)  # (P,)
        y = torch.tensor(b[column].astype(float).to_numpy(), dtype=torch.float64)  # (P,)
        diff = scale * (y - x)
        se = prompt_se(diff, replicates, seed)
        out.append(
            {
                "column": label,
                "first": scale * float(x.mean()),
                "second": scale * float(y.mean()),
                "diff": float(diff.mean()),
                "se": se,
                "scale": scale,
            }
        )
    return out
