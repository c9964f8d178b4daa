"""Read UltraFeedback-shaped raw data into the normalised raw table (DESIGN.md §4).

:func:`load_raw` reads one of three sources -- ``generated`` (this
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
skipped; a rating is NaN when it is missing or unusable
(:mod:`~steerable_alignment.ultrafeedback.ratings`). Everything skipped is
counted and logged (:class:`~steerable_alignment.ultrafeedback.counts.RawCounts`),
never fatal.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from steerable_alignment.ultrafeedback.counts import RawCounts, RawDataError
from steerable_alignment.ultrafeedback.generate import OBJECTIVES, generate_records
from steerable_alignment.ultrafeedback.ratings import parse_ratings

SOURCES = ("generated", "hub", "local")


DEFAULT_HUB_ID = "openbmb/UltraFeedback"


LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def raw_columns() -> list[str]:
    """The columns of the normalised raw table, in order."""
    return ["prompt_id", "prompt", "completion_idx", "response"] + [
        f"rating_{k}" for k in OBJECTIVES
    ]


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
        ratings, missing, invalid, examples = parse_ratings([values[i] for i in keep])
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
