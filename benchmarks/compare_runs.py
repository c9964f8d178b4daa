"""Did two runs give the same results? Compare two checkouts' ``data/`` after ``make run``.

For a refactor that must leave behaviour unchanged: run ``make run`` in a
clone of the commit before and of the commit after (same machine, same
``OMP_NUM_THREADS``), then

    python benchmarks/compare_runs.py /path/to/before /path/to/after

Every file under ``data/08_reporting/`` (parquet as data frames, the rest
as bytes), every other parquet table under ``data/`` (pairs, training
histories, generated answers and their scores; wall-time columns, ``seconds``,
left out) and every tensor of every safetensors file under ``data/``
(features, reward models, policies, reference log-probs, predictions) are
compared; versioned folders are matched by their path without the version.
Safetensors metadata is compared separately: artefacts may record more about
what made them without their tensors changing. Prints one line per
difference and a summary; exits 1 when a table or a tensor differs.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

#: columns that hold wall time: they differ between any two runs
TIMING_COLUMNS = ("seconds",)
#: a Kedro dataset version folder (``2026-12-07T08.04.48.876Z``)
VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}\.\d{3}Z$")


@dataclass
class Comparison:
    """What differs between two runs' outputs."""

    tables_same: int = 0
    tables_differ: list[str] = field(default_factory=list)
    only_one_side: list[str] = field(default_factory=list)
    tensor_files_same: int = 0
    tensor_files_differ: list[str] = field(default_factory=list)
    metadata_differs: Counter = field(default_factory=Counter)  # (file name, key) -> files

    @property
    def same_results(self) -> bool:
        return not (self.tables_differ or self.only_one_side or self.tensor_files_differ)


def _unversioned(root: Path, suffix: str) -> dict[str, Path]:
    """Relative path without version folders -> the file (the newest version if several)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob(f"*{suffix}")):
        if path.is_file():
            parts = path.relative_to(root).parts
            out["/".join(p for p in parts if not VERSION.match(p))] = path
    return out


def _same_file(left: Path, right: Path, drop_timing: bool) -> bool:
    """Parquet as data frames (without wall-time columns if ``drop_timing``), else bytes."""
    if left.suffix != ".parquet":
        return left.read_bytes() == right.read_bytes()
    a, b = pd.read_parquet(left), pd.read_parquet(right)
    if drop_timing:
        a = a.drop(columns=list(TIMING_COLUMNS), errors="ignore")
        b = b.drop(columns=list(TIMING_COLUMNS), errors="ignore")
    return a.equals(b)


def _compare_files(
    a: dict[str, Path], b: dict[str, Path], result: Comparison, drop_timing: bool
) -> None:
    """Files matched by name: a name on one side only, then each pair compared."""
    result.only_one_side += sorted(set(a) ^ set(b))
    for name in sorted(set(a) & set(b)):
        if _same_file(a[name], b[name], drop_timing):
            result.tables_same += 1
        else:
            result.tables_differ.append(name)


def compare_tables(before: Path, after: Path, result: Comparison) -> None:
    """Every file under ``08_reporting``, timing columns included."""
    a = {str(p.relative_to(before)): p for p in before.rglob("*") if p.is_file()}
    b = {str(p.relative_to(after)): p for p in after.rglob("*") if p.is_file()}
    _compare_files(a, b, result, drop_timing=False)


def compare_frames(before: Path, after: Path, result: Comparison) -> None:
    """Parquet tables outside ``08_reporting`` as data frames, without timing columns."""
    a, b = _unversioned(before, ".parquet"), _unversioned(after, ".parquet")
    skip = {k for k in set(a) | set(b) if k.startswith("08_reporting/")}
    a = {k: v for k, v in a.items() if k not in skip}
    b = {k: v for k, v in b.items() if k not in skip}
    _compare_files(a, b, result, drop_timing=True)


def compare_tensors(before: Path, after: Path, result: Comparison) -> None:
    from safetensors import safe_open

    a, b = _unversioned(before, ".safetensors"), _unversioned(after, ".safetensors")
    result.only_one_side += sorted(set(a) ^ set(b))
    for name in sorted(set(a) & set(b)):
        with safe_open(a[name], "pt") as left, safe_open(b[name], "pt") as right:
            keys = set(left.keys())
            same = keys == set(right.keys()) and all(
                left.get_tensor(k).equal(right.get_tensor(k)) for k in keys
            )
            meta_a, meta_b = left.metadata() or {}, right.metadata() or {}
        if same:
            result.tensor_files_same += 1
        else:
            result.tensor_files_differ.append(name)
        for key in sorted(set(meta_a) | set(meta_b)):
            if meta_a.get(key) != meta_b.get(key):
                change = "added" if key not in meta_a else "removed" if key not in meta_b else ""
                result.metadata_differs[(Path(name).name, key, change or "changed")] += 1


def compare(before: Path, after: Path) -> Comparison:
    """Compare ``<before>/data`` with ``<after>/data`` (module docstring).

    Raises:
        FileNotFoundError: a side has no ``data/08_reporting`` folder.
    """
    result = Comparison()
    for root in (before, after):
        if not (root / "data" / "08_reporting").is_dir():
            raise FileNotFoundError(f"{root}: no data/08_reporting (run `make run` there first)")
    compare_tables(before / "data" / "08_reporting", after / "data" / "08_reporting", result)
    compare_frames(before / "data", after / "data", result)
    compare_tensors(before / "data", after / "data", result)
    return result


def report(result: Comparison) -> str:
    lines = [f"only in one run: {name}" for name in result.only_one_side]
    lines += [f"table differs: {name}" for name in result.tables_differ]
    lines += [f"tensors differ: {name}" for name in result.tensor_files_differ]
    lines += [
        f"metadata {change}: {key} in {count} x {file}"
        for (file, key, change), count in sorted(result.metadata_differs.items())
    ]
    lines.append(
        f"tables and reporting files: {result.tables_same} identical, "
        f"{len(result.tables_differ)} differ; "
        f"safetensors files: {result.tensor_files_same} with identical tensors, "
        f"{len(result.tensor_files_differ)} differ; "
        + ("SAME RESULTS" if result.same_results else "RESULTS DIFFER")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path, help="checkout of the commit before")
    parser.add_argument("after", type=Path, help="checkout of the commit after")
    args = parser.parse_args(argv)
    try:
        result = compare(args.before, args.after)
    except FileNotFoundError as error:
        parser.error(str(error))
    print(report(result))
    return 0 if result.same_results else 1


if __name__ == "__main__":
    sys.exit(main())
