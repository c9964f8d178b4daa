"""Reading the ``steer`` command's JSON Lines files, with errors naming file, line and field.

Three record kinds, one JSON object per line (blank lines are skipped; other
fields are ignored):

- context pair: ``prompt``, ``response_a``, ``response_b`` (strings) and
  ``choice`` (the integer 0 or 1; 1 = ``response_b`` preferred, the pairs
  tables' ``choice_<k>`` convention, DESIGN.md §1);
- candidate: ``prompt``, ``response`` (strings);
- prompt: ``prompt`` (a string);
- pool pair (``--suggest``): ``prompt``, ``response_a``, ``response_b``
  (a ``choice``, if present, is ignored: it is what the user will be asked).

Nothing here imports torch: the files are checked before any model loads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from steerable_alignment.steering.errors import ContextTooLongError, InputError

CHOICES = (0, 1)

T = TypeVar("T")


@dataclass(frozen=True)
class ContextPair:
    """One of the user's choices.

    Attributes:
        prompt: the prompt both responses answer.
        response_a, response_b: the two responses shown.
        choice: 1 if ``response_b`` was preferred, 0 if ``response_a`` was.
        line: the 1-based line of the file it came from.
    """

    prompt: str
    response_a: str
    response_b: str
    choice: int
    line: int


@dataclass(frozen=True)
class Candidate:
    """A response to score.

    Attributes:
        prompt: the prompt it answers.
        response: the response.
        line: the 1-based line of the file it came from.
    """

    prompt: str
    response: str
    line: int


@dataclass(frozen=True)
class PromptRecord:
    """A prompt to answer.

    Attributes:
        prompt: the user message.
        line: the 1-based line of the file it came from.
    """

    prompt: str
    line: int


@dataclass(frozen=True)
class PoolPair:
    """A pair the user could be asked about next.

    Attributes:
        prompt: the prompt both responses answer.
        response_a, response_b: the two responses to show.
        line: the 1-based line of the file it came from.
    """

    prompt: str
    response_a: str
    response_b: str
    line: int

    def key(self) -> tuple[str, frozenset[str]]:
        """What makes two pairs the same question: the prompt and the two responses, any order."""
        return self.prompt, frozenset((self.response_a, self.response_b))


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) of every non-blank line of ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a JSON Lines file") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(
                f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno}); "
                "each line must be one JSON object"
            ) from None
        if not isinstance(record, dict):
            raise InputError(
                f"{path}, line {number}: expected a JSON object, got {type(record).__name__}"
            )
        yield number, record


def _text(record: dict[str, Any], field: str, path: Path, line: int) -> str:
    """The non-empty string ``record[field]``."""
    if field not in record:
        raise InputError(
            f"{path}, line {line}, field '{field}': missing (the line has {sorted(record)})"
        )
    value = record[field]
    if not isinstance(value, str):
        raise InputError(
            f"{path}, line {line}, field '{field}': must be a string, got "
            f"{json.dumps(value)} ({type(value).__name__})"
        )
    if not value.strip():
        raise InputError(f"{path}, line {line}, field '{field}': must not be empty")
    return value


def _choice(record: dict[str, Any], path: Path, line: int) -> int:
    """``record["choice"]``: the integer 0 or 1."""
    if "choice" not in record:
        raise InputError(
            f"{path}, line {line}, field 'choice': missing (0 = response_a preferred, "
            "1 = response_b preferred)"
        )
    value = record["choice"]
    if isinstance(value, bool) or not isinstance(value, int) or value not in CHOICES:
        raise InputError(
            f"{path}, line {line}, field 'choice': must be 0 (response_a preferred) or 1 "
            f"(response_b preferred), got {json.dumps(value)}"
        )
    return value


def _read(
    path: Path, parse: Callable[[dict[str, Any], Path, int], T], empty: str | None = None
) -> list[T]:
    """Every record of ``path``, parsed; with ``empty`` (the message), no record is an error."""
    records = [parse(record, path, line) for line, record in _records(Path(path))]
    if not records and empty is not None:
        raise InputError(f"{path}: {empty}")
    return records


def _context_pair(record: dict[str, Any], path: Path, line: int) -> ContextPair:
    return ContextPair(
        prompt=_text(record, "prompt", path, line),
        response_a=_text(record, "response_a", path, line),
        response_b=_text(record, "response_b", path, line),
        choice=_choice(record, path, line),
        line=line,
    )


def _candidate(record: dict[str, Any], path: Path, line: int) -> Candidate:
    return Candidate(
        prompt=_text(record, "prompt", path, line),
        response=_text(record, "response", path, line),
        line=line,
    )


def _pool_pair(record: dict[str, Any], path: Path, line: int) -> PoolPair:
    return PoolPair(
        prompt=_text(record, "prompt", path, line),
        response_a=_text(record, "response_a", path, line),
        response_b=_text(record, "response_b", path, line),
        line=line,
    )


def _prompt(record: dict[str, Any], path: Path, line: int) -> PromptRecord:
    return PromptRecord(prompt=_text(record, "prompt", path, line), line=line)


def read_context(path: str | Path) -> list[ContextPair]:
    """The user's context pairs (possibly none: the population-level model).

    Raises:
        InputError: naming the file, line and field at fault.
    """
    return _read(Path(path), _context_pair)


def read_candidates(path: str | Path) -> list[Candidate]:
    """Candidate responses to score (at least one).

    Raises:
        InputError: naming the file, line and field at fault, or an empty file.
    """
    expected = "no candidates (expected lines with 'prompt' and 'response')"
    return _read(Path(path), _candidate, expected)


def read_prompts(path: str | Path) -> list[PromptRecord]:
    """Prompts to answer (at least one).

    Raises:
        InputError: naming the file, line and field at fault, or an empty file.
    """
    return _read(Path(path), _prompt, "no prompts (expected lines with a 'prompt' field)")


def read_pool(path: str | Path) -> list[PoolPair]:
    """Candidate pairs to ask about (at least one).

    Raises:
        InputError: naming the file, line and field at fault, or an empty pool.
    """
    expected = "the pool is empty (expected lines with 'prompt', 'response_a' and 'response_b')"
    return _read(Path(path), _pool_pair, expected)


@dataclass(frozen=True)
class Skipped:
    """A pool pair left out of the suggestions, and why.

    Attributes:
        line: its line in the pool file.
        reason: e.g. "already in the context (line 2)".
    """

    line: int
    reason: str


def usable_pool(
    pool: list[PoolPair], context: list[ContextPair]
) -> tuple[list[PoolPair], list[Skipped]]:
    """The pool pairs worth scoring: not already answered in the context, each asked once.

    A pair counts as the context's when its prompt and its two responses (in
    either order) are those of a context pair; a repeat of an earlier pool
    line is skipped too.

    Returns:
        The kept pairs in file order, and the skipped ones with the reason.
    """
    answered = {}
    for pair in context:
        answered.setdefault((pair.prompt, frozenset((pair.response_a, pair.response_b))), pair)
    seen: dict[tuple[str, frozenset[str]], int] = {}
    kept, skipped = [], []
    for pair in pool:
        key = pair.key()
        if key in answered:
            skipped.append(
                Skipped(pair.line, f"already in the context (line {answered[key].line})")
            )
        elif key in seen:
            skipped.append(Skipped(pair.line, f"repeats pool line {seen[key]}"))
        else:
            seen[key] = pair.line
            kept.append(pair)
    return kept, skipped


def check_suggest_size(k: int, kept: int, skipped: int, path: str | Path) -> None:
    """Refuse ``--suggest K`` when the pool holds fewer than K pairs to ask.

    Raises:
        InputError: ``k > kept``, naming the pool and how many pairs were skipped.
    """
    if k > kept:
        also = f" ({skipped} more skipped: already in the context or repeated)" if skipped else ""
        raise InputError(
            f"--suggest {k}: the pool {path} holds only {kept} pair(s) that could be asked"
            f"{also}; ask for at most {kept}, or add pairs to the pool"
        )


def check_context_size(
    num_pairs: int, max_context: int, model: str, source: str, path: str | Path
) -> None:
    """Refuse a context larger than the model was trained with.

    The models were trained on contexts of at most ``max_context`` pairs; a
    larger set is outside what they have seen (the context encoder sums over
    the pairs), so it is an error rather than a silent truncation.

    Args:
        num_pairs: pairs in the context file.
        max_context: the largest context of the model's training episodes.
        model: the model's catalog name, for the message.
        source: where ``max_context`` comes from (e.g. "parameter 'x.max_context' when it
            was trained"), for the message.
        path: the context file, for the message.

    Raises:
        ContextTooLongError: ``num_pairs > max_context``.
    """
    if num_pairs > max_context:
        raise ContextTooLongError(
            f"{path} holds {num_pairs} context pairs but {model} was trained on contexts of "
            f"at most {max_context} ({source}). Keep the {max_context} most "
            "telling pairs, or retrain with a larger max_context."
        )
