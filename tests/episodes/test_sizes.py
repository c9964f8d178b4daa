"""The episode sizes a too-small split's error suggests."""

import pytest

from steerable_alignment.episodes.sizes import fitting_sizes, too_small_hint


@pytest.mark.parametrize(
    ("available", "context_in_targets", "expected"),
    [
        (100, False, (10, 20)),  # fits as configured
        (25, False, (10, 15)),  # disjoint: the context is kept, the targets shrink
        (5, False, (4, 1)),
        (100, True, (10, 20)),
        (15, True, (10, 15)),  # inside the targets: the targets shrink first
        (5, True, (4, 5)),
        (1, False, None),
        (0, True, None),
    ],
)
def test_fitting_sizes(available, context_in_targets, expected):
    got = fitting_sizes(available, 10, 20, context_in_targets=context_in_targets)
    assert got == expected
    if got is not None:
        context, targets = got
        needed = targets if context_in_targets else context + targets
        assert needed <= available and context <= 10 and targets <= 20
        assert context < targets or not context_in_targets


def test_the_hint_names_sizes_that_fit_or_says_none_can():
    assert "with 5 pairs, max_context 4 and num_targets 1" in too_small_hint(
        5, 10, 20, context_in_targets=False
    )
    assert "cannot make any episode" in too_small_hint(1, 10, 20, context_in_targets=True)


def test_check_evaluation_split_passes_a_split_that_fits_and_names_the_parameters():
    from steerable_alignment.episodes.sizes import check_evaluation_split
    from steerable_alignment.models.config import ConfigError

    check_evaluation_split(14, 4, 10, parameters="evaluation", split="split 'test'")
    with pytest.raises(ConfigError) as err:
        check_evaluation_split(
            12, 4, 10, parameters="dpo.hh.evaluation", split="split 'test'",
            unit=" tokenised pairs",
        )  # fmt: skip
    assert str(err.value).startswith(
        "Parameter 'dpo.hh.evaluation.context_sizes'/'num_targets': episodes need 14 distinct "
        "pairs but split 'test' has 12 tokenised pairs; with 12 pairs, max_context 4 and "
        "num_targets 8 (or smaller) would fit"
    )
