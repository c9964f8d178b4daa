"""Load UltraFeedback-shaped raw data and build the pairs table (DESIGN.md §4).

Two steps, both framework-free:

1. :func:`load_raw` reads one of three sources -- ``generated`` (this
   project's offline data set), ``hub`` (``openbmb/UltraFeedback`` through
   ``datasets``) or ``local`` (JSON Lines / Parquet files in UltraFeedback's
   raw schema) -- into the same *normalised raw table*, one row per completion:

   ============================  =======  ==========================================
   column                        dtype    meaning
   ============================  =======  ==========================================
   ``prompt_id``                 int64    position of the record in the source
   ``prompt``                    str      the record's ``instruction`` (as written)
   ``completion_idx``            int64    position in the record's ``completions``
   ``response``                  str      the completion's text
   ``rating_<k>``                float64  ``annotations.<k>.Rating``; NaN if unusable
   ============================  =======  ==========================================

   for ``k`` in :data:`OBJECTIVES`. Only ``instruction``, ``completions``,
   ``completions[].response`` and ``completions[].annotations.<k>.Rating`` are
   read: other fields (``Type``, which is a list or the string ``"None"``;
   ``overall_score``, 10 in older revisions; rationales ...) are never parsed,
   so their types do not matter. JSON Lines files are read record by record
   with :mod:`json` for that reason (Arrow's JSON reader infers one type per
   field across the file and fails on such mixtures). Records without an
   instruction or without completions and completions without a response are
   skipped; a rating is NaN when it is missing (the objective or its
   ``Rating`` absent) or unusable (``"N/A"``, other text, a number outside
   1-5). Everything skipped is counted and logged (:class:`RawCounts`), never
   fatal.

2. :func:`build_pairs` turns it into the pairs table: every unordered pair of
   completions of a record; pairs with identical responses, a missing rating
   or a tie on the configured objectives dropped; all conflicting pairs plus a
   fraction of the others kept; split by prompt, prompts compared after
   normalising whitespace and case. What each rule dropped is counted
   (:class:`PairCounts`) and logged, and a split the rules leave empty is an
   :class:`EmptySplitError`.
"""

from __future__ import annotations

import glob
import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from steerable_alignment.splits import SPLITS, check_split_fractions, normalise_prompt
from steerable_alignment.ultrafeedback.generate import OBJECTIVES, generate_records

logger = logging.getLogger(__name__)

SOURCES = ("generated", "hub", "local")
DEFAULT_HUB_ID = "openbmb/UltraFeedback"
LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
RATING_RANGE = (1.0, 5.0)  # UltraFeedback's scale; anything else is unusable
MAX_EXAMPLES = 5  # distinct unusable rating values quoted per objective


class RawDataError(ValueError):
    """Raw data that cannot be read as UltraFeedback (names the file and column)."""


class EmptySplitError(ValueError):
    """A split left without pairs by the rules of :func:`build_pairs`.

    The message names the data set, the split and the rule that emptied it.
    """


def raw_columns() -> list[str]:
    """The columns of the normalised raw table, in order."""
    return ["prompt_id", "prompt", "completion_idx", "response"] + [
        f"rating_{k}" for k in OBJECTIVES
    ]


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


def parse_rating(value: Any) -> float | None:
    """A rating as a float in 1-5, or None when it is not one.

    Numbers and numeric text (``"4"``, ``" 2 "``) are ratings; ``"N/A"``,
    other text, booleans, lists and numbers outside 1-5 are not.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    low, high = RATING_RANGE
    return number if math.isfinite(number) and low <= number <= high else None


class _NotARecord:
    """Marks an ``annotations.<k>`` entry that is not a record (an invalid rating)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"annotations entry {self.value!r}"


@dataclass
class _Flat:
    """The used fields of a raw source, flattened (one entry per record / completion)."""

    instruction: list[Any]  # (R,) per record
    n_completions: np.ndarray  # (R,) int64, 0 when missing
    parent: np.ndarray  # (C,) int64 record of each completion, non-decreasing
    response: list[Any]  # (C,)
    ratings: dict[str, list[Any]]  # k -> (C,) raw Rating values; None when missing


def _type_name(value: Any) -> str:
    return type(value).__name__


def _flatten_records(records: Iterable[tuple[str, Any]], name: str) -> _Flat:
    """The used fields of records (dicts in the raw schema), nothing else looked at.

    Args:
        records: ``(where, record)``: ``where`` locates the record for messages
            (``"line 12"``, ``"record 3"``).
        name: the source (a file, ``"generated"``), for messages.

    Raises:
        RawDataError: on a record that is not an object, an instruction or
            response that is not text, completions that are not a list of objects,
            or a column no record has (names the source, the record and the column).
    """
    instruction: list[Any] = []
    n_completions: list[int] = []
    parent: list[int] = []
    response: list[Any] = []
    ratings: dict[str, list[Any]] = {k: [] for k in OBJECTIVES}
    seen = {"instruction": False, "completions": False, "completions.response": False}
    for r, (where, record) in enumerate(records):
        if not isinstance(record, Mapping):
            raise RawDataError(
                f"Raw data '{name}', {where}: expected a record (a JSON object), "
                f"got {_type_name(record)}"
            )
        seen["instruction"] |= "instruction" in record
        seen["completions"] |= "completions" in record
        text = record.get("instruction")
        if text is not None and not isinstance(text, str):
            raise RawDataError(
                f"Raw data '{name}', {where}, column 'instruction': expected text, "
                f"got {_type_name(text)}"
            )
        instruction.append(text)
        completions = record.get("completions")
        if completions is None:
            completions = []
        elif not isinstance(completions, (list, tuple)):
            raise RawDataError(
                f"Raw data '{name}', {where}, column 'completions': expected a list of "
                f"completions, got {_type_name(completions)}"
            )
        n_completions.append(len(completions))
        for c, completion in enumerate(completions):
            if not isinstance(completion, Mapping):
                raise RawDataError(
                    f"Raw data '{name}', {where}, column 'completions' (item {c}): expected "
                    f"a record, got {_type_name(completion)}"
                )
            seen["completions.response"] |= "response" in completion
            value = completion.get("response")
            if value is not None and not isinstance(value, str):
                raise RawDataError(
                    f"Raw data '{name}', {where}, column 'completions.response' (item {c}): "
                    f"expected text, got {_type_name(value)}"
                )
            parent.append(r)
            response.append(value)
            annotations = completion.get("annotations")
            if not isinstance(annotations, Mapping):
                annotations = {}
            for k in OBJECTIVES:
                entry = annotations.get(k)
                if isinstance(entry, Mapping):
                    ratings[k].append(entry.get("Rating"))
                else:
                    ratings[k].append(None if entry is None else _NotARecord(entry))
    needed = ["instruction", "completions"] + (["completions.response"] if parent else [])
    if instruction:
        for column in needed:
            if not seen[column]:
                raise RawDataError(
                    f"Raw data '{name}': missing column '{column}' (no record has it)"
                )
    return _Flat(
        instruction=instruction,
        n_completions=np.asarray(n_completions, dtype=np.int64),
        parent=np.asarray(parent, dtype=np.int64),
        response=response,
        ratings=ratings,
    )


def _is_text(array: pa.Array) -> bool:
    return pa.types.is_string(array.type) or pa.types.is_large_string(array.type)


def _is_list(data_type: pa.DataType) -> bool:
    return pa.types.is_list(data_type) or pa.types.is_large_list(data_type)


def _struct_child(array: pa.Array | None, name: str) -> pa.Array | None:
    """``array.<name>`` (null where ``array`` is null), or None when the type has no such field."""
    if array is None or not pa.types.is_struct(array.type):
        return None
    if array.type.get_field_index(name) < 0:
        return None
    return pc.struct_field(array, [name])


def _flatten_table(table: pa.Table, name: str) -> _Flat:
    """The used fields of an Arrow table in the raw schema (hub, Parquet); other columns unread.

    Raises:
        RawDataError: when a required column is missing or has the wrong type.
    """
    for column in ("instruction", "completions"):
        if column not in table.column_names:
            raise RawDataError(
                f"Raw data '{name}': missing column '{column}'; found {table.column_names}"
            )
    n_records = table.num_rows
    instruction = table.column("instruction").combine_chunks()
    completions = table.column("completions").combine_chunks()
    if pa.types.is_null(instruction.type):
        instruction = pa.nulls(n_records, pa.string())
    elif not _is_text(instruction):
        raise RawDataError(
            f"Raw data '{name}', column 'instruction': expected text, got {instruction.type}"
        )
    if pa.types.is_null(completions.type) or (
        _is_list(completions.type) and pa.types.is_null(completions.type.value_type)
    ):
        completions = pa.nulls(n_records, pa.list_(pa.struct([("response", pa.string())])))
    elif not (_is_list(completions.type) and pa.types.is_struct(completions.type.value_type)):
        raise RawDataError(
            f"Raw data '{name}', column 'completions': expected a list of records, "
            f"got {completions.type}"
        )
    if completions.type.value_type.get_field_index("response") < 0:
        raise RawDataError(
            f"Raw data '{name}': missing column 'completions.response'; completions have "
            f"{[f.name for f in completions.type.value_type]}"
        )
    flat = pc.list_flatten(completions)  # (C,) one struct per completion
    response = pc.struct_field(flat, ["response"])
    if pa.types.is_null(response.type):
        response = pa.nulls(len(flat), pa.string())
    elif not _is_text(response):
        raise RawDataError(
            f"Raw data '{name}', column 'completions.response': expected text, got {response.type}"
        )
    annotations = _struct_child(flat, "annotations")
    ratings: dict[str, list[Any]] = {}
    for k in OBJECTIVES:
        entry = _struct_child(annotations, k)
        if entry is not None and not (
            pa.types.is_struct(entry.type) or pa.types.is_null(entry.type)
        ):  # present but not a record: invalid where not null
            ratings[k] = [None if v is None else _NotARecord(v) for v in entry.to_pylist()]
            continue
        rating = _struct_child(entry, "Rating")
        ratings[k] = [None] * len(flat) if rating is None else rating.to_pylist()
    return _Flat(
        instruction=instruction.to_pylist(),
        n_completions=pc.fill_null(pc.list_value_length(completions), 0)
        .to_numpy(zero_copy_only=False)
        .astype(np.int64),
        parent=pc.list_parent_indices(completions).to_numpy().astype(np.int64),
        response=response.to_pylist(),
        ratings=ratings,
    )


def _parse_ratings(values: list[Any]) -> tuple[np.ndarray, int, int, list[str]]:
    """Raw rating values -> (float64 ratings with NaN, n missing, n invalid, invalid examples)."""
    parsed = np.full(len(values), np.nan)
    cache: dict[str, float | None] = {}
    missing = invalid = 0
    examples: list[str] = []
    for i, value in enumerate(values):
        if value is None:
            missing += 1
            continue
        if isinstance(value, str):  # the common case: "1".."5", "N/A"
            if value not in cache:
                cache[value] = parse_rating(value)
            rating = cache[value]
        else:
            rating = parse_rating(value)
        if rating is None:
            invalid += 1
            if len(examples) < MAX_EXAMPLES and repr(value) not in examples:
                examples.append(repr(value))
        else:
            parsed[i] = rating
    return parsed, missing, invalid, examples


def _normalise_flat(
    flat: _Flat, name: str, first_prompt_id: int = 0
) -> tuple[pd.DataFrame, RawCounts]:
    """The normalised raw table (module docstring) and counts of flattened raw fields."""
    has_instruction = np.array(
        [isinstance(t, str) and bool(t.strip()) for t in flat.instruction], dtype=bool
    )  # (R,)
    record_ok = has_instruction & (flat.n_completions > 0)  # (R,)
    parent = flat.parent  # (C,)
    position = np.arange(parent.size) - np.searchsorted(parent, parent, side="left")  # (C,)
    has_response = np.array(
        [isinstance(v, str) and bool(v.strip()) for v in flat.response], dtype=bool
    )  # (C,)
    in_kept_record = record_ok[parent]
    keep = np.flatnonzero(in_kept_record & has_response)  # (C_kept,)
    instruction = np.empty(len(flat.instruction), dtype=object)
    instruction[:] = flat.instruction
    response = np.empty(len(flat.response), dtype=object)
    response[:] = flat.response
    frame = pd.DataFrame(
        {
            "prompt_id": (parent[keep] + first_prompt_id).astype(np.int64),
            "prompt": pd.Series(instruction[parent[keep]], dtype=object).astype("str"),
            "completion_idx": position[keep].astype(np.int64),
            "response": pd.Series(response[keep], dtype=object).astype("str"),
        }
    )
    counts = RawCounts(
        records=len(flat.instruction),
        records_without_instruction=int((~has_instruction).sum()),
        records_without_completions=int((has_instruction & (flat.n_completions == 0)).sum()),
        completions_per_record={
            int(n): int(c) for n, c in zip(*np.unique(flat.n_completions, return_counts=True))
        },
        completions=int(in_kept_record.sum()),
        completions_without_response=int((in_kept_record & ~has_response).sum()),
    )
    for k in OBJECTIVES:
        values = flat.ratings[k]
        ratings, missing, invalid, examples = _parse_ratings([values[i] for i in keep])
        frame[f"rating_{k}"] = ratings
        counts.missing_ratings[k] = missing
        counts.invalid_ratings[k] = invalid
        counts.invalid_examples[k] = examples
    return frame, counts


def normalise_table(
    table: pa.Table, name: str, first_prompt_id: int = 0
) -> tuple[pd.DataFrame, RawCounts]:
    """Normalise an Arrow table in UltraFeedback's raw schema (the hub, Parquet files).

    Args:
        table: one row per record, with ``instruction`` and ``completions``
            (a list of ``{"response", "annotations": {<k>: {"Rating"}}}``);
            other columns and fields are not read.
        name: where the table comes from (a file, a hub id), for messages.
        first_prompt_id: ``prompt_id`` of the table's first record.

    Returns:
        The normalised raw table (module docstring) and the counts.

    Raises:
        RawDataError: when a required column is missing or has the wrong type.
    """
    return _normalise_flat(_flatten_table(table, name), name, first_prompt_id)


def normalise_records(
    records: Iterable[Mapping[str, Any]], name: str = "records", first_prompt_id: int = 0
) -> tuple[pd.DataFrame, RawCounts]:
    """Normalise records (dicts in UltraFeedback's raw schema), one at a time.

    Only the used fields are looked at, so any other field may hold any type.

    Args:
        records: the records, in order.
        name: where they come from, for messages.
        first_prompt_id: ``prompt_id`` of the first record.

    Returns:
        The normalised raw table (module docstring) and the counts.

    Raises:
        RawDataError: on a record that is not an object, a used field of the
            wrong type, or a column no record has (names the record and column).
    """
    located = ((f"record {i}", record) for i, record in enumerate(records))
    return _normalise_flat(_flatten_records(located, name), name, first_prompt_id)


def iter_json_records(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` of a JSON Lines file (or a ``.json`` file holding one array).

    Each line is parsed on its own with :mod:`json`, so a field may change type
    from one record to the next; blank lines are skipped.

    Raises:
        RawDataError: on text that is not JSON (names the file and line).
    """
    with path.open(encoding="utf-8") as handle:
        head = handle.read(4096).lstrip()
        handle.seek(0)
        if path.suffix == ".json" and head.startswith("["):
            try:
                records = json.load(handle)
            except json.JSONDecodeError as error:
                raise RawDataError(f"Raw file '{path}': not valid JSON ({error})") from error
            for i, record in enumerate(records):
                yield f"record {i}", record
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RawDataError(
                    f"Raw file '{path}', line {number}: not valid JSON Lines ({error})"
                ) from error
            yield f"line {number}", record


def local_files(path: str | Path) -> list[Path]:
    """The raw files under ``path``: a file, a folder or a glob, sorted by name.

    Raises:
        RawDataError: when nothing matches or a file has an unsupported suffix.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in LOCAL_SUFFIXES)
    else:
        files = sorted(Path(p) for p in glob.glob(str(path)))
    if not files:
        raise RawDataError(
            f"No raw UltraFeedback files at '{path}' (expected {sorted(LOCAL_SUFFIXES)} files)"
        )
    bad = [str(p) for p in files if p.suffix not in LOCAL_SUFFIXES]
    if bad:
        raise RawDataError(
            f"Raw files {bad}: unsupported format; expected one of {sorted(LOCAL_SUFFIXES)}"
        )
    return files


def read_local_file(path: Path, first_prompt_id: int = 0) -> tuple[pd.DataFrame, RawCounts]:
    """One JSON Lines or Parquet file as the normalised raw table and its counts.

    Raises:
        RawDataError: on a file that is not JSON / Parquet or lacks a required
            column (names the file, the line where known, and the column).
    """
    if LOCAL_SUFFIXES[path.suffix] == "parquet":
        import pyarrow.parquet as pq

        try:  # only the used columns; normalise_table names a missing one
            names = pq.read_schema(path).names
            table = pq.read_table(
                path, columns=[c for c in ("instruction", "completions") if c in names]
            )
        except (pa.ArrowInvalid, OSError) as error:
            raise RawDataError(
                f"Raw file '{path}': not a readable Parquet file ({error})"
            ) from error
        return normalise_table(table, name=str(path), first_prompt_id=first_prompt_id)
    flat = _flatten_records(iter_json_records(path), name=str(path))
    return _normalise_flat(flat, str(path), first_prompt_id)


def load_raw(
    source: str,
    *,
    hub_id: str = DEFAULT_HUB_ID,
    local_path: str | Path | None = None,
    n_prompts: int = 1200,
    completions_per_prompt: int = 4,
    seed: int = 0,
    na_fraction: float = 0.0,
) -> pd.DataFrame:
    """Read a source into the normalised raw table (module docstring); log the counts.

    Args:
        source: ``generated``, ``hub`` or ``local``.
        hub_id: the Hugging Face data set id (``hub``).
        local_path: a file, folder or glob of ``.jsonl``/``.json``/``.parquet``
            files (``local``); files are read in name order and ``prompt_id``
            runs on across them.
        n_prompts: prompts to generate (``generated``).
        completions_per_prompt: completions per generated prompt.
        seed: seed of the generator.
        na_fraction: share of generated ratings set to ``"N/A"``.

    Returns:
        One row per completion: :func:`raw_columns`.

    Raises:
        ValueError: on an unknown source.
        RawDataError: on a file without a required column (names file and column).
    """
    frame, _ = load_raw_with_counts(
        source,
        hub_id=hub_id,
        local_path=local_path,
        n_prompts=n_prompts,
        completions_per_prompt=completions_per_prompt,
        seed=seed,
        na_fraction=na_fraction,
    )
    return frame


def load_raw_with_counts(
    source: str,
    *,
    hub_id: str = DEFAULT_HUB_ID,
    local_path: str | Path | None = None,
    n_prompts: int = 1200,
    completions_per_prompt: int = 4,
    seed: int = 0,
    na_fraction: float = 0.0,
) -> tuple[pd.DataFrame, RawCounts]:
    """:func:`load_raw`, also returning what was read and skipped (:class:`RawCounts`)."""
    if source == "generated":
        records = generate_records(n_prompts, completions_per_prompt, seed, na_fraction)
        frame, counts = normalise_records(records, name="generated")
        counts.log("generated")
        return frame, counts
    if source == "hub":
        import datasets

        dataset = datasets.load_dataset(hub_id, split="train")
        frame, counts = normalise_table(dataset.data.table, name=hub_id)
        counts.log(hub_id)
        return frame, counts
    if source == "local":
        if local_path is None:
            raise ValueError("source 'local' needs local_path")
        frames, total = [], RawCounts()
        for path in local_files(local_path):
            frame, counts = read_local_file(path, first_prompt_id=total.records)
            frames.append(frame)
            total = total + counts
        total.log(str(local_path))
        return pd.concat(frames, ignore_index=True), total
    raise ValueError(f"Unknown raw source {source!r}; expected one of {list(SOURCES)}")


def check_objectives(objectives: Sequence[str]) -> list[str]:
    """Validate objective names.

    Raises:
        ValueError: on an empty list, a duplicate, or an unknown objective
            (the message lists the valid ones).
    """
    objectives = list(objectives)
    unknown = [k for k in objectives if k not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}; valid objectives: {list(OBJECTIVES)}")
    if not objectives:
        raise ValueError(f"at least one objective is needed; valid objectives: {list(OBJECTIVES)}")
    if len(set(objectives)) != len(objectives):
        raise ValueError(f"objectives must be distinct, got {objectives}")
    return objectives


def _prompt_pairs(prompt_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair of rows sharing a prompt, by index arithmetic.

    Args:
        prompt_id: (C,) prompt of each row, sorted (rows of a prompt adjacent).

    Returns:
        ``(first, second)`` (P,) row indices, ``first < second``, in row order.
    """
    starts = np.flatnonzero(np.r_[True, prompt_id[1:] != prompt_id[:-1]])  # (G,)
    sizes = np.diff(np.r_[starts, prompt_id.size])  # (G,)
    firsts, seconds = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for m in np.unique(sizes[sizes >= 2]):  # one block per group size, not per prompt
        group_starts = starts[sizes == m]  # (G_m,)
        i, j = np.triu_indices(m, k=1)  # (m(m-1)/2,)
        firsts.append((group_starts[:, None] + i[None, :]).ravel())  # (G_m * m(m-1)/2,)
        seconds.append((group_starts[:, None] + j[None, :]).ravel())
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    order = np.lexsort((second, first))
    return first[order], second[order]


def _split_codes(n: int, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """(n,) split code (index into SPLITS) of n items, in random order, sizes by rounding."""
    bounds = np.floor(np.cumsum(fractions) * n + 0.5).astype(np.int64)
    bounds[-1] = n
    codes = np.empty(n, dtype=np.int64)
    codes[rng.permutation(n)] = np.searchsorted(bounds, np.arange(n), side="right")
    return codes


# The rules of build_pairs, in the order they apply; a pair counts under the first that drops it.
RULES = ("identical_responses", "missing_ratings", "ties", "non_conflicting_dropped")
RULE_LABELS = {
    "identical_responses": "identical responses",
    "missing_ratings": "missing rating",
    "ties": "tie",
    "non_conflicting_dropped": "non-conflicting (non_conflicting_fraction)",
}
_KEPT = len(RULES)  # reason code of a kept pair; codes 0..3 index RULES


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


def _empty_split_message(
    counts: PairCounts, split: str, fractions: Mapping[str, float], ties_in_split: dict[str, int]
) -> str:
    """Why ``split`` has no pairs: the rule that emptied it, with counts and a remedy."""
    row = counts.by_split[split]
    where = f"UltraFeedback data set '{counts.name}' (objectives {counts.objectives})"
    if row["candidates"] == 0:
        return (
            f"{where}: split '{split}' has no pairs: no prompt with two or more completions "
            f"was assigned to it ({counts.prompts} such prompts in all, split_fractions "
            f"{dict(fractions)}). Nothing was written; use more raw data."
        )
    dropped = {rule: row[rule] for rule in RULES if row[rule]}
    rule = max(dropped, key=dropped.__getitem__)
    detail = {
        "identical_responses": "the two responses are the same text",
        "missing_ratings": f"a rating is missing or unusable on one side "
        f"(pairs missing each objective, all splits: {counts.missing_by_objective}; the raw "
        f"data's log lists the unusable values)",
        "ties": f"equal ratings on a configured objective (pairs tied on each: {ties_in_split}); "
        f"use fewer objectives or more data",
        "non_conflicting_dropped": f"the objectives agree and non_conflicting_fraction is "
        f"{counts.non_conflicting_fraction:g}; raise it or use more data",
    }[rule]
    others = ", ".join(f"{RULE_LABELS[r]} {n}" for r, n in dropped.items() if r != rule)
    return (
        f"{where}: split '{split}' has no pairs left: the rules dropped all "
        f"{row['candidates']} candidate pairs of its {row['prompts']} prompts; emptied by the "
        f"rule '{RULE_LABELS[rule]}' ({dropped[rule]} pairs: {detail})"
        + (f"; other rules: {others}" if others else "")
        + ". Nothing was written."
    )


def build_pairs(
    raw: pd.DataFrame,
    objectives: Sequence[str],
    non_conflicting_fraction: float = 0.0,
    split_fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    name: str = "pairs",
) -> pd.DataFrame:
    """Build the pairs table of DESIGN.md §4 (:func:`build_pairs_with_counts` without the counts).

    Raises:
        ValueError: on an unknown objective (listing the valid ones) or a bad fraction.
        RawDataError: when ``raw`` lacks a column.
        EmptySplitError: when the rules leave a split (with a fraction > 0) without pairs.
    """
    pairs, _ = build_pairs_with_counts(
        raw, objectives, non_conflicting_fraction, split_fractions, seed, name
    )
    return pairs


def build_pairs_with_counts(
    raw: pd.DataFrame,
    objectives: Sequence[str],
    non_conflicting_fraction: float = 0.0,
    split_fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    name: str = "pairs",
) -> tuple[pd.DataFrame, PairCounts]:
    """Build the pairs table of DESIGN.md §4 from the normalised raw table.

    Candidates are every unordered pair of completions of a record; which one
    is ``a`` is random. Rules, in order (:data:`RULES`), drop a pair when:

    1. its two responses are the same text after stripping surrounding
       whitespace (the label between them is noise);
    2. a configured objective's rating is missing (NaN) on either side;
    3. a configured objective's ratings are equal (a tie);
    4. the configured objectives agree (non-conflicting) and it is not among
       the ``non_conflicting_fraction`` of those drawn at random.

    ``choice_<k>`` is 1 when ``b`` has the higher rating for ``k``; a pair is
    conflicting when the configured objectives do not all choose the same side.
    Prompts are grouped after normalising whitespace and case
    (:func:`normalise_prompt`; the table keeps the original text), and every
    prompt with a candidate pair is assigned to train/validation/test *before*
    the rules, from its own random stream: so a prompt repeated in the source
    never straddles two splits, the same ``seed`` puts a prompt in the same
    split for every choice of objectives, and what each rule dropped is
    counted per split. The counts are logged at INFO.

    Args:
        raw: the normalised raw table (:func:`raw_columns`).
        objectives: configured objectives, a subset of :data:`OBJECTIVES`.
        non_conflicting_fraction: share of the non-conflicting pairs kept, in [0, 1].
        split_fractions: ``{"train", "validation", "test"}`` fractions of the
            prompts; default 0.8 / 0.1 / 0.1.
        seed: seed of the split, side and subsample draws.
        name: the data set's name (e.g. ``hh``), for the log and errors.

    Returns:
        The pairs table: one row per pair: ``pair_id`` (int64, 0..N-1),
        ``prompt_id``, ``prompt``, ``response_a``, ``response_b``,
        ``completion_idx_a``, ``completion_idx_b``, per objective
        ``reward_a_<k>``, ``reward_b_<k>`` (float64 ratings) and ``choice_<k>``
        (int64), ``split`` and ``is_conflicting`` (bool); and the counts.

    Raises:
        ValueError: on an unknown objective (listing the valid ones) or a bad
            fraction.
        RawDataError: when ``raw`` lacks a column.
        EmptySplitError: when the rules leave a split whose fraction is > 0
            without pairs (names the data set, the split and the rule); raised
            after logging the counts and before building the table.
    """
    objectives = check_objectives(objectives)
    fractions = check_split_fractions(
        split_fractions or {"train": 0.8, "validation": 0.1, "test": 0.1}
    )
    if not 0.0 <= non_conflicting_fraction <= 1.0:
        raise ValueError(
            f"non_conflicting_fraction must be in [0, 1], got {non_conflicting_fraction}"
        )
    rating_columns = [f"rating_{k}" for k in objectives]
    needed = ["prompt_id", "prompt", "completion_idx", "response", *rating_columns]
    missing_columns = [c for c in needed if c not in raw.columns]
    if missing_columns:
        raise RawDataError(f"Raw table: missing column(s) {missing_columns}; expected {needed}")
    split_rng, side_rng, sample_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )

    prompt_id = raw["prompt_id"].to_numpy(dtype=np.int64)
    rows = np.lexsort((raw["completion_idx"].to_numpy(), prompt_id))  # (C,) sorted row order
    sorted_first, sorted_second = _prompt_pairs(prompt_id[rows])  # (P0,) positions in rows
    first, second = rows[sorted_first], rows[sorted_second]  # (P0,) rows of raw

    # Prompt groups (normalised text) and their splits, drawn before any rule. Groups
    # are taken in the order of their first candidate pair (by prompt_id), so the
    # split does not depend on the order of the raw table's rows.
    text_code, texts = pd.factorize(raw["prompt"].astype("str"))  # (C,) per raw row
    normalised = np.asarray([normalise_prompt(t) for t in texts.tolist()], dtype=object)
    group_code, groups = pd.factorize(normalised)  # per distinct text
    pair_group = group_code[text_code[first]]  # (P0,)
    used_groups, first_pair = np.unique(pair_group, return_index=True)  # (G,)
    group_split = np.zeros(len(groups), dtype=np.int64)
    group_split[used_groups[np.argsort(first_pair)]] = _split_codes(
        used_groups.size, fractions, split_rng
    )
    pair_split = group_split[pair_group]  # (P0,) split code of each candidate

    swap = side_rng.random(first.size) < 0.5
    row_a, row_b = np.where(swap, second, first), np.where(swap, first, second)  # (P0,)

    # Rules, in order; reason = index into RULES of the rule that drops a pair, or _KEPT.
    response_code, _ = pd.factorize(raw["response"].astype("str").str.strip())  # (C,)
    identical = response_code[first] == response_code[second]  # (P0,)
    ratings = raw[rating_columns].to_numpy(dtype=np.float64)  # (C, K)
    reward_a, reward_b = ratings[row_a], ratings[row_b]  # (P0, K)
    missing_k = np.isnan(reward_a) | np.isnan(reward_b)  # (P0, K)
    has_missing = ~identical & missing_k.any(axis=1)
    tied_k = reward_a == reward_b  # (P0, K), False where NaN
    tied = ~identical & ~has_missing & tied_k.any(axis=1)
    usable = ~(identical | has_missing | tied)
    choices = (reward_b > reward_a).astype(np.int64)  # (P0, K)
    conflicting = choices.min(axis=1) != choices.max(axis=1)
    candidates = np.flatnonzero(usable & ~conflicting)
    n_sampled = int(np.floor(non_conflicting_fraction * candidates.size + 0.5))
    keep = usable & conflicting
    keep[sample_rng.choice(candidates, size=n_sampled, replace=False)] = True
    reason = np.select(
        [identical, has_missing, tied, ~keep], np.arange(len(RULES)), default=_KEPT
    )  # (P0,)

    per_split = np.bincount(
        pair_split * (_KEPT + 1) + reason, minlength=len(SPLITS) * (_KEPT + 1)
    ).reshape(len(SPLITS), _KEPT + 1)  # (3, rules + kept)
    prompts_per_split = np.bincount(group_split[used_groups], minlength=len(SPLITS))
    by_split = {
        split: {
            "prompts": int(prompts_per_split[s]),
            "candidates": int(per_split[s].sum()),
            **{rule: int(per_split[s, r]) for r, rule in enumerate(RULES)},
            "kept": int(per_split[s, _KEPT]),
        }
        for s, split in enumerate(SPLITS)
    }
    sizes = np.bincount(np.unique(prompt_id, return_inverse=True)[1])
    counts = PairCounts(
        name=name,
        objectives=objectives,
        non_conflicting_fraction=float(non_conflicting_fraction),
        records=int(sizes.size),
        records_without_pairs=int((sizes < 2).sum()),
        prompts=int(used_groups.size),
        prompt_texts_merged=int(len(texts) - len(groups)),
        candidates=int(first.size),
        identical_responses=int(identical.sum()),
        missing_ratings=int(has_missing.sum()),
        missing_by_objective={
            k: int(n) for k, n in zip(objectives, missing_k[has_missing].sum(axis=0))
        },
        ties=int(tied.sum()),
        ties_by_objective={k: int(n) for k, n in zip(objectives, tied_k[tied].sum(axis=0))},
        conflicting=int((usable & conflicting).sum()),
        non_conflicting=int(candidates.size),
        non_conflicting_dropped=int(candidates.size - n_sampled),
        kept=int(keep.sum()),
        by_split=by_split,
    )
    counts.log()
    for s, split in enumerate(SPLITS):
        if fractions[s] > 0 and by_split[split]["kept"] == 0:
            in_split = tied & (pair_split == s)
            ties_in_split = {k: int(n) for k, n in zip(objectives, tied_k[in_split].sum(axis=0))}
            raise EmptySplitError(
                _empty_split_message(counts, split, dict(zip(SPLITS, fractions)), ties_in_split)
            )

    kept = np.flatnonzero(keep)  # (N,)
    row_a, row_b = row_a[kept], row_b[kept]
    prompts = raw["prompt"].to_numpy(dtype=object)
    responses = raw["response"].to_numpy(dtype=object)
    completion_idx = raw["completion_idx"].to_numpy(dtype=np.int64)
    columns: dict[str, Any] = {
        "pair_id": np.arange(kept.size, dtype=np.int64),
        "prompt_id": prompt_id[row_a],
        "prompt": prompts[row_a],
        "response_a": responses[row_a],
        "response_b": responses[row_b],
        "completion_idx_a": completion_idx[row_a],
        "completion_idx_b": completion_idx[row_b],
    }
    for o, k in enumerate(objectives):
        columns[f"reward_a_{k}"] = reward_a[kept, o]
        columns[f"reward_b_{k}"] = reward_b[kept, o]
        columns[f"choice_{k}"] = choices[kept, o]
    columns["split"] = np.asarray(SPLITS, dtype=object)[pair_split[kept]]
    columns["is_conflicting"] = conflicting[kept]
    pairs = pd.DataFrame(columns)
    text_columns = ["prompt", "response_a", "response_b", "split"]
    pairs[text_columns] = pairs[text_columns].astype("str")  # also when there are no pairs
    return pairs, counts
