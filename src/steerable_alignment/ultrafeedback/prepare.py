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
   ``prompt``                    str      the record's ``instruction``
   ``completion_idx``            int64    position in the record's ``completions``
   ``response``                  str      the completion's text
   ``rating_<k>``                float64  ``annotations.<k>.Rating``; NaN if unusable
   ============================  =======  ==========================================

   for ``k`` in :data:`OBJECTIVES`. Records without an instruction or without
   completions and completions without a response are skipped; ratings that
   are missing or unparsable (``"N/A"``) become NaN. Everything skipped is
   counted and logged (:class:`RawCounts`), never fatal.

2. :func:`build_pairs` turns it into the pairs table: every unordered pair of
   completions of a prompt, ties and missing ratings on the configured
   objectives dropped, all conflicting pairs plus a fraction of the others
   kept, split by prompt.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from steerable_alignment.splits import SPLITS, check_split_fractions
from steerable_alignment.ultrafeedback.generate import OBJECTIVES, generate_records

logger = logging.getLogger(__name__)

SOURCES = ("generated", "hub", "local")
DEFAULT_HUB_ID = "openbmb/UltraFeedback"
LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class RawDataError(ValueError):
    """Raw data that cannot be read as UltraFeedback (names the file and column)."""


def raw_columns() -> list[str]:
    """The columns of the normalised raw table, in order."""
    return ["prompt_id", "prompt", "completion_idx", "response"] + [
        f"rating_{k}" for k in OBJECTIVES
    ]


@dataclass
class RawCounts:
    """What :func:`normalise_table` read and what it skipped.

    Attributes:
        records: records (prompts) read.
        records_without_instruction: records skipped: instruction missing or empty.
        records_without_completions: records skipped: ``completions`` missing or empty.
        completions: completions of the records kept.
        completions_without_response: completions skipped: response missing or empty.
        unusable_ratings: objective -> ratings kept as NaN (missing or unparsable,
            e.g. ``"N/A"``), among the completions kept.
    """

    records: int = 0
    records_without_instruction: int = 0
    records_without_completions: int = 0
    completions: int = 0
    completions_without_response: int = 0
    unusable_ratings: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OBJECTIVES, 0))

    def __add__(self, other: RawCounts) -> RawCounts:
        return RawCounts(
            self.records + other.records,
            self.records_without_instruction + other.records_without_instruction,
            self.records_without_completions + other.records_without_completions,
            self.completions + other.completions,
            self.completions_without_response + other.completions_without_response,
            {k: self.unusable_ratings[k] + other.unusable_ratings[k] for k in OBJECTIVES},
        )

    def log(self, name: str) -> None:
        """Log the counts (one line; skipped data is expected, not an error)."""
        logger.info(
            "Raw data '%s': %d records, %d skipped without instruction, %d skipped without "
            "completions; %d completions, %d skipped without response; unusable ratings "
            "(missing or unparsable, kept as NaN): %s",
            name,
            self.records,
            self.records_without_instruction,
            self.records_without_completions,
            self.completions,
            self.completions_without_response,
            self.unusable_ratings,
        )


def _field_path(array: pa.Array, path: Sequence[str]) -> pa.Array | None:
    """``array.<path>`` through nested structs, or None when the schema lacks it."""
    current_type = array.type
    for name in path:
        if not pa.types.is_struct(current_type) or current_type.get_field_index(name) < 0:
            return None
        current_type = current_type.field(name).type
    return pc.struct_field(array, list(path))


def _parse_ratings(values: pa.Array | None, n: int) -> np.ndarray:
    """Ratings as float64: strings ("4", "N/A") or numbers; NaN where unusable."""
    if values is None or pa.types.is_null(values.type):
        return np.full(n, np.nan)
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        parsed = values.to_numpy(zero_copy_only=False).astype(np.float64)
    else:
        text = pd.Series(pc.cast(values, pa.string()).to_numpy(zero_copy_only=False))
        parsed = pd.to_numeric(text.str.strip(), errors="coerce").to_numpy(
            dtype=np.float64, copy=True
        )
    parsed[~np.isfinite(parsed)] = np.nan
    return parsed


def normalise_table(
    table: pa.Table, name: str, first_prompt_id: int = 0
) -> tuple[pd.DataFrame, RawCounts]:
    """Normalise a table in UltraFeedback's raw schema (vectorised with Arrow).

    Args:
        table: one row per record, with ``instruction`` and ``completions``
            (a list of ``{"response", "annotations": {<k>: {"Rating"}}}``).
        name: where the table comes from (a file, a hub id), for messages.
        first_prompt_id: ``prompt_id`` of the table's first record.

    Returns:
        The normalised raw table (module docstring) and the counts.

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
    elif not (pa.types.is_string(instruction.type) or pa.types.is_large_string(instruction.type)):
        raise RawDataError(
            f"Raw data '{name}', column 'instruction': expected text, got {instruction.type}"
        )
    if pa.types.is_null(completions.type) or (
        (pa.types.is_list(completions.type) or pa.types.is_large_list(completions.type))
        and pa.types.is_null(completions.type.value_type)
    ):
        completions = pa.nulls(n_records, pa.list_(pa.struct([("response", pa.string())])))
    elif not (
        (pa.types.is_list(completions.type) or pa.types.is_large_list(completions.type))
        and pa.types.is_struct(completions.type.value_type)
    ):
        raise RawDataError(
            f"Raw data '{name}', column 'completions': expected a list of records, "
            f"got {completions.type}"
        )
    if completions.type.value_type.get_field_index("response") < 0:
        raise RawDataError(
            f"Raw data '{name}': missing column 'completions.response'; completions have "
            f"{[f.name for f in completions.type.value_type]}"
        )

    has_instruction = pc.fill_null(
        pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(instruction)), 0), False
    ).to_numpy(zero_copy_only=False)  # (R,)
    n_completions = pc.fill_null(pc.list_value_length(completions), 0).to_numpy()  # (R,)
    record_ok = has_instruction & (n_completions > 0)

    flat = pc.list_flatten(completions)  # (C,) one struct per completion
    parent = pc.list_parent_indices(completions).to_numpy()  # (C,) record of each completion
    position = np.arange(parent.size) - np.searchsorted(parent, parent, side="left")  # (C,)
    response = pc.struct_field(flat, ["response"])
    if not (pa.types.is_string(response.type) or pa.types.is_large_string(response.type)):
        response = pc.cast(response, pa.string())
    has_response = pc.fill_null(
        pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(response)), 0), False
    ).to_numpy(zero_copy_only=False)  # (C,)
    in_kept_record = record_ok[parent]
    keep = in_kept_record & has_response  # (C,)

    frame = pd.DataFrame(
        {
            "prompt_id": (parent[keep] + first_prompt_id).astype(np.int64),
            "prompt": instruction.to_numpy(zero_copy_only=False)[parent[keep]],
            "completion_idx": position[keep].astype(np.int64),
            "response": response.to_numpy(zero_copy_only=False)[keep],
        }
    )
    unusable = {}
    for k in OBJECTIVES:
        ratings = _parse_ratings(_field_path(flat, ["annotations", k, "Rating"]), len(flat))
        frame[f"rating_{k}"] = ratings[keep]
        unusable[k] = int(np.isnan(ratings[keep]).sum())
    frame["prompt"] = frame["prompt"].astype("str")
    frame["response"] = frame["response"].astype("str")
    counts = RawCounts(
        records=n_records,
        records_without_instruction=int((~has_instruction).sum()),
        records_without_completions=int((has_instruction & (n_completions == 0)).sum()),
        completions=int(in_kept_record.sum()),
        completions_without_response=int((in_kept_record & ~has_response).sum()),
        unusable_ratings=unusable,
    )
    return frame, counts


def normalise_records(
    records: Sequence[Mapping[str, Any]], name: str = "records"
) -> tuple[pd.DataFrame, RawCounts]:
    """:func:`normalise_table` for in-memory records (dicts in the raw schema).

    Raises:
        RawDataError: when the records cannot form a table (e.g. mixed types).
    """
    columns = {}
    for column in ("instruction", "completions"):
        values = [record.get(column) for record in records]
        try:
            columns[column] = pa.array(values) if values else pa.nulls(0)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise RawDataError(f"Raw data '{name}', column '{column}': {error}") from error
    return normalise_table(pa.table(columns), name)


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


def read_local_file(path: Path) -> pa.Table:
    """One JSON Lines or Parquet file as an Arrow table (records in the raw schema)."""
    if LOCAL_SUFFIXES[path.suffix] == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    import pyarrow.json as pj

    try:
        return pj.read_json(path)
    except pa.ArrowInvalid as error:
        raise RawDataError(f"Raw file '{path}': not valid JSON Lines ({error})") from error


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
    """Read a source into the normalised raw table (module docstring).

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
    if source == "generated":
        records = generate_records(n_prompts, completions_per_prompt, seed, na_fraction)
        frame, counts = normalise_records(records, name="generated")
        counts.log("generated")
        return frame
    if source == "hub":
        import datasets

        dataset = datasets.load_dataset(hub_id, split="train")
        frame, counts = normalise_table(dataset.data.table, name=hub_id)
        counts.log(hub_id)
        return frame
    if source == "local":
        if local_path is None:
            raise ValueError("source 'local' needs local_path")
        frames, total, next_id = [], RawCounts(), 0
        for path in local_files(local_path):
            table = read_local_file(path)
            frame, counts = normalise_table(table, name=str(path), first_prompt_id=next_id)
            frames.append(frame)
            total, next_id = total + counts, next_id + table.num_rows
        total.log(str(local_path))
        return pd.concat(frames, ignore_index=True)
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


def build_pairs(
    raw: pd.DataFrame,
    objectives: Sequence[str],
    non_conflicting_fraction: float = 0.0,
    split_fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Build the pairs table of DESIGN.md §4 from the normalised raw table.

    Every unordered pair of completions of a prompt; which one is ``a`` is
    random (from ``seed``). A pair is dropped when a configured objective's
    rating is missing on either side or equal on both (a tie). ``choice_<k>``
    is 1 when ``b`` has the higher rating for ``k``; a pair is conflicting
    when the configured objectives do not all choose the same side. All
    conflicting pairs are kept, and ``non_conflicting_fraction`` of the others
    (drawn at random). Prompts (by text, so a prompt repeated in the source
    never straddles two splits) are assigned to train/validation/test.

    Args:
        raw: the normalised raw table (:func:`raw_columns`).
        objectives: configured objectives, a subset of :data:`OBJECTIVES`.
        non_conflicting_fraction: share of the non-conflicting pairs kept, in [0, 1].
        split_fractions: ``{"train", "validation", "test"}`` fractions of the
            prompts; default 0.8 / 0.1 / 0.1.
        seed: seed of the side, subsample and split draws.

    Returns:
        One row per pair: ``pair_id`` (int64, 0..N-1), ``prompt_id``,
        ``prompt``, ``response_a``, ``response_b``, ``completion_idx_a``,
        ``completion_idx_b``, per objective ``reward_a_<k>``, ``reward_b_<k>``
        (float64 ratings) and ``choice_<k>`` (int64), ``split`` and
        ``is_conflicting`` (bool).

    Raises:
        ValueError: on an unknown objective (listing the valid ones) or a bad
            fraction.
        RawDataError: when ``raw`` lacks a column.
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
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise RawDataError(f"Raw table: missing column(s) {missing}; expected {needed}")
    rng = np.random.default_rng(seed)

    prompt_id = raw["prompt_id"].to_numpy(dtype=np.int64)
    rows = np.lexsort((raw["completion_idx"].to_numpy(), prompt_id))  # (C,) sorted row order
    first, second = _prompt_pairs(prompt_id[rows])
    first, second = rows[first], rows[second]  # (P0,) rows of raw
    swap = rng.random(first.size) < 0.5
    row_a, row_b = np.where(swap, second, first), np.where(swap, first, second)  # (P0,)

    ratings = raw[rating_columns].to_numpy(dtype=np.float64)  # (C, K)
    reward_a, reward_b = ratings[row_a], ratings[row_b]  # (P0, K)
    has_missing = np.isnan(reward_a).any(axis=1) | np.isnan(reward_b).any(axis=1)
    tied = ~has_missing & (reward_a == reward_b).any(axis=1)
    usable = ~(has_missing | tied)
    choices = (reward_b > reward_a).astype(np.int64)  # (P0, K)
    conflicting = choices.min(axis=1) != choices.max(axis=1)
    candidates = np.flatnonzero(usable & ~conflicting)
    n_kept = int(np.floor(non_conflicting_fraction * candidates.size + 0.5))
    keep = usable & conflicting
    keep[rng.choice(candidates, size=n_kept, replace=False)] = True
    kept = np.flatnonzero(keep)  # (N,)
    row_a, row_b = row_a[kept], row_b[kept]

    prompt_codes, _ = pd.factorize(raw["prompt"])  # by text
    used_prompts, pair_prompt = np.unique(prompt_codes[row_a], return_inverse=True)
    split_names = np.asarray(SPLITS, dtype=object)
    split = split_names[_split_codes(used_prompts.size, fractions, rng)[pair_prompt]]

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
    columns["split"] = split
    columns["is_conflicting"] = conflicting[kept]
    pairs = pd.DataFrame(columns)
    text_columns = ["prompt", "response_a", "response_b", "split"]
    pairs[text_columns] = pairs[text_columns].astype("str")  # also when there are no pairs
    logger.info(
        "Pairs over %s: %d candidate pairs from %d prompts; dropped %d with a missing rating "
        "and %d ties; kept %d conflicting and %d of %d non-conflicting pairs -> %d pairs "
        "(%s by split)",
        objectives,
        first.size,
        int(np.unique(prompt_id).size),
        int(has_missing.sum()),
        int(tied.sum()),
        int((usable & conflicting).sum()),
        n_kept,
        candidates.size,
        len(pairs),
        pairs["split"].value_counts().reindex(SPLITS, fill_value=0).to_dict(),
    )
    return pairs
