"""What reading and pairing UltraFeedback-shaped data skipped or dropped, and their errors.

:class:`RawCounts` counts what :mod:`~steerable_alignment.ultrafeedback.reading` skipped
(records, completions, unusable ratings with examples); :class:`PairCounts` what each
pairing rule of :mod:`~steerable_alignment.ultrafeedback.pairing` dropped, per split.
Both are logged, never fatal; a split the rules leave empty is an :class:`EmptySplitError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from steerable_alignment.ultrafeedback.generate import OBJECTIVES

logger = logging.getLogger(__name__)


MAX_EXAMPLES = 5  # distinct unusable rating values quoted per objective


class RawDataError(ValueError):
    """Raw data that cannot be read as UltraFeedback (names the file and column)."""


class EmptySplitError(ValueError):
    """A split left without pairs by the rules of :func:`build_pairs`.

    The message names the data set, the split and the rule that emptied it.
    """


def _per_objective() -> dict[str, int]:
    return dict.fromkeys(OBJECTIVES, 0)


def _no_examples() -> dict[str, list[str]]:
    return {k: [] for k in OBJECTIVES}


@dataclass
class RawCounts:
    """What the raw reader read and what it skipped.

    Attributes:
        records: records (prompts) read.
        records_without_instruction: records skipped: instruction missing or empty.
        records_without_completions: records with an instruction skipped:
            ``completions`` missing or empty.
        completions_per_record: number of completions -> records with that many
            (every record read; UltraFeedback has 0-4).
        completions: completions of the records kept.
        completions_without_response: completions skipped: response missing or empty.
        missing_ratings: objective -> ratings kept as NaN because the completion
            has no ``annotations.<k>.Rating`` (among the completions kept).
        invalid_ratings: objective -> ratings kept as NaN because the value is
            not a number in 1-5 (``"N/A"``, other text), among the completions kept.
        invalid_examples: objective -> up to :data:`MAX_EXAMPLES` distinct
            invalid values (their ``repr``), for the log.
    """

    records: int = 0
    records_without_instruction: int = 0
    records_without_completions: int = 0
    completions_per_record: dict[int, int] = field(default_factory=dict)
    completions: int = 0
    completions_without_response: int = 0
    missing_ratings: dict[str, int] = field(default_factory=_per_objective)
    invalid_ratings: dict[str, int] = field(default_factory=_per_objective)
    invalid_examples: dict[str, list[str]] = field(default_factory=_no_examples)

    @property
    def unusable_ratings(self) -> dict[str, int]:
        """Objective -> ratings kept as NaN (missing or invalid)."""
        return {k: self.missing_ratings[k] + self.invalid_ratings[k] for k in OBJECTIVES}

    def __add__(self, other: RawCounts) -> RawCounts:
        histogram = dict(self.completions_per_record)
        for n, records in other.completions_per_record.items():
            histogram[n] = histogram.get(n, 0) + records
        examples = {
            k: list(dict.fromkeys(self.invalid_examples[k] + other.invalid_examples[k]))[
                :MAX_EXAMPLES
            ]
            for k in OBJECTIVES
        }
        return RawCounts(
            records=self.records + other.records,
            records_without_instruction=self.records_without_instruction
            + other.records_without_instruction,
            records_without_completions=self.records_without_completions
            + other.records_without_completions,
            completions_per_record=dict(sorted(histogram.items())),
            completions=self.completions + other.completions,
            completions_without_response=self.completions_without_response
            + other.completions_without_response,
            missing_ratings={
                k: self.missing_ratings[k] + other.missing_ratings[k] for k in OBJECTIVES
            },
            invalid_ratings={
                k: self.invalid_ratings[k] + other.invalid_ratings[k] for k in OBJECTIVES
            },
            invalid_examples=examples,
        )

    def log(self, name: str) -> None:
        """Log the counts at INFO (skipped data is expected, not an error)."""
        logger.info(
            "Raw data '%s': %d records (by number of completions: %s); skipped %d without "
            "instruction and %d without completions; %d completions, %d skipped without "
            "response; ratings kept as NaN -- missing: %s; invalid (not a number in 1-5): %s, "
            "e.g. %s",
            name,
            self.records,
            self.completions_per_record,
            self.records_without_instruction,
            self.records_without_completions,
            self.completions,
            self.completions_without_response,
            self.missing_ratings,
            self.invalid_ratings,
            {k: v for k, v in self.invalid_examples.items() if v},
        )


# The rules of build_pairs, in the order they apply; a pair counts under the first that drops it.
RULES = ("identical_responses", "missing_ratings", "ties", "non_conflicting_dropped")


RULE_LABELS = {
    "identical_responses": "identical responses",
    "missing_ratings": "missing rating",
    "ties": "tie",
    "non_conflicting_dropped": "non-conflicting (non_conflicting_fraction)",
}


KEPT_CODE = len(RULES)  # reason code of a kept pair; codes 0..3 index RULES


@dataclass
class PairCounts:
    """What :func:`build_pairs` built and what each of its rules dropped.

    Every candidate pair is either kept or counted under the first rule that
    drops it, in the order of :data:`RULES`: identical responses, a missing
    rating, a tie, then the fraction rule for non-conflicting pairs. The
    per-objective counts say, among the pairs a rule dropped, how many miss
    (or tie on) each objective; a pair can count under several objectives.

    Attributes:
        name: the data set (e.g. ``hh``), for messages.
        objectives: the configured objectives.
        non_conflicting_fraction: share of the non-conflicting pairs kept.
        records: records (``prompt_id``) in the raw table.
        records_without_pairs: records with fewer than two completions (no pair possible).
        prompts: distinct prompts with a candidate pair, after normalising
            whitespace and case: the units the split assigns.
        prompt_texts_merged: distinct prompt texts that normalising merged into
            another one (same prompt up to whitespace and case).
        candidates: every unordered pair of completions of a record.
        identical_responses: dropped: the two responses are the same text after
            stripping surrounding whitespace.
        missing_ratings: dropped: a configured rating missing (NaN) on either side.
        missing_by_objective: objective -> pairs dropped as missing that miss it.
        ties: dropped: equal ratings on a configured objective.
        ties_by_objective: objective -> pairs dropped as ties tied on it.
        conflicting: pairs kept because the configured objectives disagree.
        non_conflicting: untied pairs on which the configured objectives agree.
        non_conflicting_dropped: of those, dropped by ``non_conflicting_fraction``.
        kept: pairs in the table.
        by_split: split -> ``prompts``, ``candidates``, one count per rule
            (:data:`RULES`) and ``kept``.
    """

    name: str
    objectives: list[str]
    non_conflicting_fraction: float
    records: int
    records_without_pairs: int
    prompts: int
    prompt_texts_merged: int
    candidates: int
    identical_responses: int
    missing_ratings: int
    missing_by_objective: dict[str, int]
    ties: int
    ties_by_objective: dict[str, int]
    conflicting: int
    non_conflicting: int
    non_conflicting_dropped: int
    kept: int
    by_split: dict[str, dict[str, int]]

    def dropped(self) -> dict[str, int]:
        """Rule -> pairs it dropped (:data:`RULES`)."""
        return {rule: getattr(self, rule) for rule in RULES}

    def log(self) -> None:
        """Log the counts at INFO: one line for the whole data set."""

        def share(n: int) -> str:
            return f"{n} ({100 * n / self.candidates:.1f}%)" if self.candidates else str(n)

        logger.info(
            "Pairs '%s' over %s: %d records (%d with fewer than 2 completions: no pair), "
            "%d prompts after normalising whitespace/case (%d texts merged); %d candidate "
            "pairs; dropped: identical responses %s, missing rating %s %s, ties %s %s, "
            "non-conflicting %s of %d (non_conflicting_fraction %g); kept %s (%d conflicting); "
            "kept by split %s",
            self.name,
            self.objectives,
            self.records,
            self.records_without_pairs,
            self.prompts,
            self.prompt_texts_merged,
            self.candidates,
            share(self.identical_responses),
            share(self.missing_ratings),
            self.missing_by_objective,
            share(self.ties),
            self.ties_by_objective,
            share(self.non_conflicting_dropped),
            self.non_conflicting,
            self.non_conflicting_fraction,
            share(self.kept),
            self.conflicting,
            {s: counts["kept"] for s, counts in self.by_split.items()},
        )
