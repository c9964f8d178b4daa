"""The word lists of the generated UltraFeedback-shaped data set, read from ``topics.yml``.

The lists themselves are package data (``ultrafeedback/topics.yml``, written
for this project: no downloaded text); this module reads them once, checks
their shape, and exposes them as the typed tuples the generator
(:mod:`.generate`) and the exact judge (:mod:`.judge`) use. Each topic gives
the prompts something to ask (``tasks`` and ``concepts``), the answers
something concrete to say (``steps``) and a small fact bank in which every
fact has a correct and an incorrect version, so that truthfulness is a
property of the text itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

STEPS_PER_TOPIC = 5
FACTS_PER_TOPIC = 4
#: The answer-part and template lists of topics.yml, by module constant.
LISTS = (
    "TASK_TEMPLATES",
    "CONCEPT_TEMPLATES",
    "PROMPT_SUFFIXES",
    "DIRECT_TASK_OPENINGS",
    "DIRECT_CONCEPT_OPENINGS",
    "INDIRECT_OPENINGS",
    "HEDGES",
    "ASSERTIONS",
    "UNCERTAIN_CLOSINGS",
    "OVERCONFIDENT_CLOSINGS",
    "NEUTRAL_CLOSINGS",
    "VAGUE_ADVICE",
)


@dataclass(frozen=True)
class Topic:
    """One subject area of the generated prompts.

    Attributes:
        name: short topic name (stored in each record's ``source``).
        tasks: verb phrases completing "How do I ...?".
        concepts: noun phrases completing "Can you explain ...?".
        steps: ``STEPS_PER_TOPIC`` imperative clauses (concrete advice).
        facts: ``FACTS_PER_TOPIC`` pairs ``(correct, incorrect)``.
    """

    name: str
    tasks: tuple[str, ...]
    concepts: tuple[str, ...]
    steps: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"topics.yml, {where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _topic(entry: dict[str, Any], number: int) -> Topic:
    where = f"topic {number} ({entry.get('name', '?')})"
    facts = entry.get("facts")
    if not isinstance(facts, list) or not all(
        isinstance(f, dict) and set(f) == {"correct", "wrong"} for f in facts
    ):
        raise ValueError(f"topics.yml, {where}: facts must be a list of {{correct, wrong}}")
    topic = Topic(
        name=str(entry["name"]),
        tasks=_strings(entry.get("tasks"), f"{where}, tasks"),
        concepts=_strings(entry.get("concepts"), f"{where}, concepts"),
        steps=_strings(entry.get("steps"), f"{where}, steps"),
        facts=tuple((str(f["correct"]), str(f["wrong"])) for f in facts),
    )
    if len(topic.steps) != STEPS_PER_TOPIC or len(topic.facts) != FACTS_PER_TOPIC:
        raise ValueError(
            f"topics.yml, {where}: needs {STEPS_PER_TOPIC} steps and {FACTS_PER_TOPIC} facts, "
            f"has {len(topic.steps)} and {len(topic.facts)}"
        )
    return topic


def _load() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("topics.yml").read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    lists = {name: _strings(document.get(name.lower()), name.lower()) for name in LISTS}
    topics = tuple(_topic(entry, i) for i, entry in enumerate(document["topics"], start=1))
    return {"TOPICS": topics, **lists}


_LOADED = _load()
TOPICS: tuple[Topic, ...] = _LOADED["TOPICS"]
# Prompt templates. "{x}" is a task (verb phrase) or a concept (noun phrase).
TASK_TEMPLATES: tuple[str, ...] = _LOADED["TASK_TEMPLATES"]
CONCEPT_TEMPLATES: tuple[str, ...] = _LOADED["CONCEPT_TEMPLATES"]
PROMPT_SUFFIXES: tuple[str, ...] = _LOADED["PROMPT_SUFFIXES"]
# Answer parts. The openings say whether the answer addresses the question.
DIRECT_TASK_OPENINGS: tuple[str, ...] = _LOADED["DIRECT_TASK_OPENINGS"]
DIRECT_CONCEPT_OPENINGS: tuple[str, ...] = _LOADED["DIRECT_CONCEPT_OPENINGS"]
INDIRECT_OPENINGS: tuple[str, ...] = _LOADED["INDIRECT_OPENINGS"]
# Calibrated hedges (honesty) and confident framings: each ends right before a fact.
HEDGES: tuple[str, ...] = _LOADED["HEDGES"]
ASSERTIONS: tuple[str, ...] = _LOADED["ASSERTIONS"]
UNCERTAIN_CLOSINGS: tuple[str, ...] = _LOADED["UNCERTAIN_CLOSINGS"]
OVERCONFIDENT_CLOSINGS: tuple[str, ...] = _LOADED["OVERCONFIDENT_CLOSINGS"]
NEUTRAL_CLOSINGS: tuple[str, ...] = _LOADED["NEUTRAL_CLOSINGS"]
VAGUE_ADVICE: tuple[str, ...] = _LOADED["VAGUE_ADVICE"]
