"""What the ``steer`` command prints: a plain-text table, or one JSON document.

Plain text (no terminal codes) so the output reads the same in a terminal, a
file or a pipe; ``--json`` gives the same content for programs.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steerable_alignment.evaluation.generation import SamplingConfig
from steerable_alignment.steering.core import ScoredCandidate, Suggestion
from steerable_alignment.steering.inputs import PromptRecord, Skipped

WIDTH = 100  # characters per line of the text report


@dataclass(frozen=True)
class RunInfo:
    """Where the answers come from, printed above them.

    Attributes:
        dataset: the data set the models were trained on (``hh``, ``hht``).
        model: the catalog name of the model used.
        version: its catalog version (versioned data sets), or ``None``.
        context_file: the user's context file.
        context_pairs: N, its number of pairs.
        max_context: the largest context the model was trained with.
    """

    dataset: str
    model: str
    version: str | None
    context_file: str
    context_pairs: int
    max_context: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "version": self.version,
            "context": {"file": self.context_file, "pairs": self.context_pairs},
            "max_context": self.max_context,
        }

    def header(self) -> str:
        version = f" (version {self.version})" if self.version else ""
        return (
            f"{self.model}{version}, conditioned on {self.context_pairs} context pair(s) "
            f"from {self.context_file} (trained with up to {self.max_context})"
        )


def _indent(text: str, prefix: str) -> str:
    return textwrap.fill(
        " ".join(text.split()), WIDTH, initial_indent=prefix, subsequent_indent=" " * len(prefix)
    )


def _json(document: dict[str, Any]) -> str:
    """One indented JSON document, non-ASCII kept, with a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def scores_json(info: RunInfo, scored: Sequence[ScoredCandidate]) -> str:
    """The scores as JSON: run facts and one object per candidate (ranked within prompts)."""
    return _json(
        {
            "mode": "score",
            **info.to_dict(),
            "candidates": [
                {
                    "line": s.candidate.line,
                    "prompt": s.candidate.prompt,
                    "response": s.candidate.response,
                    "reward": s.reward,
                    "reward_no_context": s.reward_no_context,
                    "rank": s.rank,
                }
                for s in scored
            ],
        }
    )


def scores_text(info: RunInfo, scored: Sequence[ScoredCandidate]) -> str:
    """The scores as a table per prompt: rank, reward, reward without context, response."""
    lines = [f"NP-BTL rewards: {info.header()}", ""]
    prompt = None
    number = 0
    for s in scored:
        if s.candidate.prompt != prompt:
            prompt = s.candidate.prompt
            number += 1
            if number > 1:
                lines.append("")
            lines.append(_indent(prompt, f"Prompt {number}: "))
            lines.append(f"  {'rank':>4}  {'reward':>8}  {'no context':>10}  response (line)")
        row = f"  {s.rank:>4}  {s.reward:>8.3f}  {s.reward_no_context:>10.3f}  "
        lines.append(_indent(f"{s.candidate.response} ({s.candidate.line})", row))
    return "\n".join(lines) + "\n"


def answers_json(
    info: RunInfo, options: SamplingConfig, prompts: Sequence[PromptRecord], answers: list[str]
) -> str:
    """The answers as JSON: run facts, sampling settings, one object per prompt."""
    return _json(
        {
            "mode": "generate",
            **info.to_dict(),
            "generation": {
                "max_new_tokens": options.max_new_tokens,
                "temperature": options.temperature,
                "top_p": options.top_p,
                "top_k": options.top_k,
                "repetition_penalty": options.repetition_penalty,
                "seed": options.seed,
            },
            "answers": [
                {"line": p.line, "prompt": p.prompt, "response": a}
                for p, a in zip(prompts, answers, strict=True)
            ],
        }
    )


def answers_text(
    info: RunInfo, options: SamplingConfig, prompts: Sequence[PromptRecord], answers: list[str]
) -> str:
    """The answers, one block per prompt."""
    sampling = (
        "greedy"
        if options.temperature == 0
        else f"temperature {options.temperature}, top_p {options.top_p}, top_k {options.top_k}"
    )
    if options.repetition_penalty != 1.0:
        sampling += f", repetition penalty {options.repetition_penalty}"
    lines = [
        f"NP-DPO answers: {info.header()}",
        f"{sampling}, at most {options.max_new_tokens} new tokens, seed {options.seed}",
    ]
    for number, (p, answer) in enumerate(zip(prompts, answers, strict=True), start=1):
        lines += [
            "",
            _indent(p.prompt, f"[{number}] prompt: "),
            _indent(answer or "(empty answer)", "    answer: "),
        ]
    return "\n".join(lines) + "\n"


def suggestions_json(
    info: RunInfo,
    strategy: str,
    pool_file: str,
    pool_size: int,
    skipped: Sequence[Skipped],
    suggestions: Sequence[Suggestion],
) -> str:
    """The suggested pairs as JSON: run facts, the pool, one object per pair (best first)."""
    return _json(
        {
            "mode": "suggest",
            **info.to_dict(),
            "strategy": strategy,
            "pool": {
                "file": pool_file,
                "pairs": pool_size,
                "skipped": [{"line": s.line, "reason": s.reason} for s in skipped],
            },
            "suggestions": [
                {
                    "rank": s.rank,
                    "line": s.pair.line,
                    "prompt": s.pair.prompt,
                    "response_a": s.pair.response_a,
                    "response_b": s.pair.response_b,
                    "prob_b": s.prob_b,
                    "gain": s.gain,
                }
                for s in suggestions
            ],
        }
    )


def suggestions_text(
    info: RunInfo,
    strategy: str,
    pool_file: str,
    pool_size: int,
    skipped: Sequence[Skipped],
    suggestions: Sequence[Suggestion],
    latent: bool,
) -> str:
    """The suggested pairs, best first: expected gain, predicted choice, the pair."""
    if strategy == "population":
        gain = "information about which training user this is"
    else:
        gain = "mutual information with z" if latent else "entropy of the predicted answer"
    lines = [
        f"Pairs worth asking next: {info.header()}",
        f"strategy {strategy}; {len(suggestions)} of {pool_size} pool pair(s) from {pool_file}; "
        f"gain = {gain} (nats)",
    ]
    for s in suggestions:
        lines += [
            "",
            f"[{s.rank}] pool line {s.pair.line}: gain {s.gain:.3f} nats, "
            f"P(b preferred) = {s.prob_b:.3f}",
            _indent(s.pair.prompt, "    prompt: "),
            _indent(s.pair.response_a, "    a: "),
            _indent(s.pair.response_b, "    b: "),
        ]
    if skipped:
        lines += ["", f"Skipped {len(skipped)} pool pair(s):"]
        lines += [f"  line {s.line}: {s.reason}" for s in skipped]
    return "\n".join(lines) + "\n"
