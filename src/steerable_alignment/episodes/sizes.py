"""Episode sizes that fit a split: the hint a too-small split's error gives.

Framework-free (no Kedro, no torch).
"""

from __future__ import annotations


def fitting_sizes(
    available: int, max_context: int, num_targets: int, *, context_in_targets: bool
) -> tuple[int, int] | None:
    """The largest ``(max_context, num_targets)``, each at most the given one, that fit.

    Args:
        available: distinct pairs in the split.
        max_context, num_targets: the configured sizes.
        context_in_targets: the context is drawn from the targets (training:
            ``num_targets`` pairs per episode, ``max_context < num_targets``);
            otherwise they are disjoint (validation and evaluation:
            ``max_context + num_targets`` pairs per episode).

    Returns:
        The sizes, keeping as much context as the split allows, or ``None``
        when fewer than 2 pairs are available (no episode of one context
        pair and one target fits).
    """
    if available < 2:
        return None
    if context_in_targets:
        targets = min(num_targets, available)
        return min(max_context, targets - 1), targets
    context = min(max_context, available - 1)
    return context, min(num_targets, available - context)


def too_small_hint(
    available: int, max_context: int, num_targets: int, *, context_in_targets: bool
) -> str:
    """One sentence for a too-small split's error: sizes that would fit, and where to read more."""
    sizes = fitting_sizes(
        available, max_context, num_targets, context_in_targets=context_in_targets
    )
    if sizes is None:
        return (
            f"; {available} pair(s) cannot make any episode (at least 2 are needed; "
            "docs/running.md, 'Your own data')"
        )
    context, targets = sizes
    return (
        f"; with {available} pairs, max_context {context} and num_targets {targets} (or smaller) "
        "would fit (docs/running.md, 'Your own data')"
    )


def check_evaluation_split(
    available: int,
    max_context: int,
    num_targets: int,
    *,
    parameters: str,
    split: str,
    unit: str = "",
) -> None:
    """Fail when a split cannot fill an evaluation episode (context and targets disjoint).

    Args:
        available: distinct pairs in the split.
        parameters: the parameter prefix the error names (``<prefix>.context_sizes``).
        split: how the error names the split (e.g. ``split 'test' of 'hh'``).
        unit: what ``available`` counts, when not plain pairs.

    Raises:
        ConfigError: fewer than ``max_context + num_targets`` pairs, with sizes that would fit.
    """
    from steerable_alignment.models.config import ConfigError

    needed = max_context + num_targets
    if available < needed:
        hint = too_small_hint(available, max_context, num_targets, context_in_targets=False)
        raise ConfigError(
            f"Parameter '{parameters}.context_sizes'/'num_targets': episodes need {needed} "
            f"distinct pairs but {split} has {available}{unit}{hint}"
        )
