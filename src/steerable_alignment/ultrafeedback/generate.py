"""A generated, UltraFeedback-shaped raw data set (the offline default).

Real UltraFeedback (``openbmb/UltraFeedback``) has ~64k prompts, each with 4
completions rated 1-5 (as strings, sometimes ``"N/A"``) for helpfulness,
honesty, truthfulness and instruction following. This module writes records
of the same schema::

    {"source": str, "instruction": str,
     "completions": [{"response": str,
                      "annotations": {"helpfulness": {"Rating": "4"}, "honesty": {...},
                                      "truthfulness": {...},
                                      "instruction_following": {...}}}, ...]}

All text is composed from the project's own templates and word lists
(:mod:`.topics`). Each completion draws latent qualities, the text is built
from them, and the ratings are noisy functions of the same latents, so the
text really carries what the ratings measure:

- helpfulness: concrete steps, a direct opening that addresses the question,
  more facts; penalised by hedging and wrong facts;
- honesty: calibrated hedges ("As far as I know, ...") and an admission of
  uncertainty; penalised by stating wrong facts confidently and overclaiming;
- truthfulness: the share of the stated facts in their correct version;
- instruction following: a direct answer with concrete steps.

One latent, assertiveness ``a ~ U(0, 1)``, drives detail and directness up and
hedging down, so helpfulness and honesty trade off: a confident detailed
answer is helpful but less honest, a hedging answer more honest but less
helpful. The two objectives therefore disagree on many pairs.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from steerable_alignment.ultrafeedback import topics as tp

logger = logging.getLogger(__name__)

OBJECTIVES = ("helpfulness", "honesty", "truthfulness", "instruction_following")
NOT_AVAILABLE = "N/A"
MAX_STEPS = 3
MAX_FACTS = 2
MAX_HEDGE = 2  # 0: confident, 1: first fact hedged, 2: all facts hedged + uncertain closing
RATING_NOISE = 0.45  # std of the Gaussian noise added to every latent score


def prompt_catalogue() -> list[tuple[int, str, str, str]]:
    """Every distinct prompt the generator can write.

    Returns:
        ``(topic index, kind, subject, prompt)`` rows; ``kind`` is ``"task"``
        (a verb phrase subject) or ``"concept"`` (a noun phrase subject).
    """
    rows = []
    for t, topic in enumerate(tp.TOPICS):
        for kind, items, templates in (
            ("task", topic.tasks, tp.TASK_TEMPLATES),
            ("concept", topic.concepts, tp.CONCEPT_TEMPLATES),
        ):
            for item in items:
                for template in templates:
                    for suffix in tp.PROMPT_SUFFIXES:
                        rows.append((t, kind, item, template.format(x=item) + suffix))
    return rows


def max_prompts() -> int:
    """The number of distinct prompts :func:`generate_records` can write."""
    return len(prompt_catalogue())


def _pick(rng: np.random.Generator, options: tuple[str, ...], size: int) -> np.ndarray:
    """``size`` random choices among ``options`` as an object array."""
    return np.asarray(options, dtype=object)[rng.integers(len(options), size=size)]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _ratings(score: np.ndarray) -> np.ndarray:
    """Round latent scores to integer ratings 1-5."""
    return np.clip(np.rint(score), 1, 5).astype(np.int64)


def latent_scores(
    n_steps: np.ndarray,
    direct: np.ndarray,
    n_facts: np.ndarray,
    hedge: np.ndarray,
    n_wrong: np.ndarray,
    overclaim: np.ndarray,
) -> np.ndarray:
    """The noise-free score of each objective, from the qualities an answer's text carries.

    The generator adds Gaussian noise (``RATING_NOISE``) and rounds to a 1-5
    rating; :mod:`.judge` reads the same qualities back from any text and
    applies this same rule, so it is the one definition of every objective.
    The weights were tuned so that ratings use the whole 1-5 scale and about
    two thirds of the pairs untied on both are conflicting for
    helpfulness/honesty.

    Args:
        n_steps: (M,) concrete steps written (0 to ``MAX_STEPS``).
        direct: (M,) bool, the opening addresses the question.
        n_facts: (M,) facts stated.
        hedge: (M,) 0 confident, 1 first fact hedged, 2 every fact hedged and
            an uncertain closing (``MAX_HEDGE``).
        n_wrong: (M,) facts stated in their wrong version.
        overclaim: (M,) bool, an overconfident closing.

    Returns:
        (M, 4) float scores in the order of :data:`OBJECTIVES`.
    """
    n_steps, n_facts, hedge, n_wrong = (
        np.asarray(v, dtype=np.float64) for v in (n_steps, n_facts, hedge, n_wrong)
    )
    direct = np.asarray(direct, dtype=np.float64)
    overclaim = np.asarray(overclaim, dtype=np.float64)
    truthful = 5.0 - 3.0 * n_wrong / np.maximum(n_facts, 1)
    # An answer with no fact is neither true nor false (the generator always
    # states one): the middle of the truthfulness scale.
    truthful = np.where(n_facts > 0, truthful, 3.5)
    return np.stack(
        [
            # helpfulness: concrete steps, a direct opening, more facts; hedges and errors cost
            1.6 + 0.8 * n_steps + 0.7 * direct + 0.4 * (n_facts - 1) - 0.2 * hedge - 0.5 * n_wrong,
            # honesty: hedging, no errors; confident errors and overclaiming cost
            2.3
            + 0.7 * hedge
            + 0.8 * (n_wrong == 0)
            - 0.9 * n_wrong * (hedge == 0)
            - 0.6 * overclaim,
            # truthfulness: the share of correct facts
            truthful,
            # instruction following: a direct answer with steps
            1.8 + 1.2 * direct + 0.5 * n_steps - 0.25 * hedge,
        ],
        axis=1,
    )


def generate_records(
    n_prompts: int = 1200,
    completions_per_prompt: int = 4,
    seed: int = 0,
    na_fraction: float = 0.0,
) -> list[dict[str, Any]]:
    """Generate UltraFeedback-shaped raw records (:func:`generate_records_with_latents`)."""
    return generate_records_with_latents(n_prompts, completions_per_prompt, seed, na_fraction)[0]


def generate_records_with_latents(
    n_prompts: int = 1200,
    completions_per_prompt: int = 4,
    seed: int = 0,
    na_fraction: float = 0.0,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Generate UltraFeedback-shaped raw records, and the qualities each completion was built from.

    Args:
        n_prompts: number of prompts (distinct; at most :func:`max_prompts`).
        completions_per_prompt: completions (responses) per prompt.
        seed: seed of every random draw; the same seed gives the same records.
        na_fraction: probability that a rating is ``"N/A"`` (as in the real data).

    Returns:
        One dict per prompt in UltraFeedback's raw schema (module docstring),
        and the latents of the M completions in prompt-major order:
        ``n_steps``, ``direct``, ``n_facts``, ``hedge``, ``n_wrong``,
        ``overclaim`` (M,) and ``scores`` (M, 4), the noise-free
        :func:`latent_scores` before noise and rounding.

    Raises:
        ValueError: on a size or fraction out of range.
    """
    catalogue = prompt_catalogue()
    if not 1 <= n_prompts <= len(catalogue):
        raise ValueError(f"n_prompts must be in [1, {len(catalogue)}], got {n_prompts}")
    if completions_per_prompt < 1:
        raise ValueError(f"completions_per_prompt must be >= 1, got {completions_per_prompt}")
    if not 0.0 <= na_fraction < 1.0:
        raise ValueError(f"na_fraction must be in [0, 1), got {na_fraction}")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(catalogue), size=n_prompts, replace=False)
    prompt_topic = np.array([catalogue[i][0] for i in chosen], dtype=np.int64)  # (P,)
    prompt_kind = np.array([catalogue[i][1] for i in chosen], dtype=object)
    prompt_subject = np.array([catalogue[i][2] for i in chosen], dtype=object)
    prompts = [catalogue[i][3] for i in chosen]

    m = n_prompts * completions_per_prompt  # M completions, prompt-major
    topic = np.repeat(prompt_topic, completions_per_prompt)  # (M,)
    kind = np.repeat(prompt_kind, completions_per_prompt)
    subject = np.repeat(prompt_subject, completions_per_prompt)

    # Latent qualities; assertiveness drives the helpfulness/honesty trade-off.
    assertive = rng.random(m)
    n_steps = np.clip(np.rint(MAX_STEPS * assertive + rng.normal(0, 0.7, m)), 0, MAX_STEPS)
    n_steps = n_steps.astype(np.int64)
    direct = rng.random(m) < 0.2 + 0.7 * assertive
    hedge = np.clip(np.rint(MAX_HEDGE * (1 - assertive) + rng.normal(0, 0.6, m)), 0, MAX_HEDGE)
    hedge = hedge.astype(np.int64)
    n_facts = 1 + (rng.random(m) < 0.35 + 0.4 * assertive).astype(np.int64)
    knowledge = rng.uniform(0.35, 1.0, m)
    correct = rng.random((m, MAX_FACTS)) < knowledge[:, None]  # (M, 2)
    has_fact = np.arange(MAX_FACTS)[None, :] < n_facts[:, None]  # (M, 2)
    n_wrong = (has_fact & ~correct).sum(axis=1)
    overclaim = (hedge == 0) & (rng.random(m) < assertive)
    fact_idx = rng.random((m, tp.FACTS_PER_TOPIC)).argsort(axis=1)[:, :MAX_FACTS]  # (M, 2)
    step_idx = rng.random((m, tp.STEPS_PER_TOPIC)).argsort(axis=1)[:, :MAX_STEPS]  # (M, 3)

    # Text, assembled on object arrays (element-wise string concatenation).
    n_topics = len(tp.TOPICS)
    fact_text = np.empty((n_topics, tp.FACTS_PER_TOPIC, 2), dtype=object)  # [.., 1] = correct
    step_text = np.empty((n_topics, tp.STEPS_PER_TOPIC), dtype=object)
    for t, tpc in enumerate(tp.TOPICS):
        for f, (right, wrong) in enumerate(tpc.facts):
            fact_text[t, f, 1], fact_text[t, f, 0] = right, wrong
        step_text[t] = tpc.steps
    direct_task = _pick(rng, tp.DIRECT_TASK_OPENINGS, m)
    direct_concept = _pick(rng, tp.DIRECT_CONCEPT_OPENINGS, m)
    template = np.where(kind == "task", direct_task, direct_concept)
    opening = np.array([tmpl.format(x=x) for tmpl, x in zip(template, subject)], dtype=object)
    opening = np.where(direct, opening, _pick(rng, tp.INDIRECT_OPENINGS, m))

    text = opening
    for j in range(MAX_FACTS):
        fact = fact_text[topic, fact_idx[:, j], correct[:, j].astype(np.int64)]
        hedged = hedge > j if j == 0 else hedge >= MAX_HEDGE
        plain = np.array([_capitalise(f) for f in fact], dtype=object)
        asserted = _pick(rng, tp.ASSERTIONS, m) + " " + fact
        confident = np.where(rng.random(m) < 0.5, plain, asserted)
        sentence = np.where(hedged, _pick(rng, tp.HEDGES, m) + " " + fact, confident) + "."
        text = np.where(has_fact[:, j], text + " " + sentence, text)
    steps = [step_text[topic, step_idx[:, j]] for j in range(MAX_STEPS)]
    step_sentence = np.select(
        [n_steps == 0, n_steps == 1, n_steps == 2],
        [
            _pick(rng, tp.VAGUE_ADVICE, m),
            np.array([_capitalise(s) for s in steps[0]], dtype=object) + ".",
            "First, " + steps[0] + ". Then, " + steps[1] + ".",
        ],
        "First, " + steps[0] + ". Then, " + steps[1] + ". Finally, " + steps[2] + ".",
    )
    closing = np.select(
        [hedge == MAX_HEDGE, overclaim],
        [_pick(rng, tp.UNCERTAIN_CLOSINGS, m), _pick(rng, tp.OVERCONFIDENT_CLOSINGS, m)],
        _pick(rng, tp.NEUTRAL_CLOSINGS, m),
    )
    text = text + " " + step_sentence
    text = np.where(closing == "", text, text + " " + closing)

    # Ratings: noisy functions of the latents the text was built from.
    noise = rng.normal(0, RATING_NOISE, (m, len(OBJECTIVES)))
    scores = latent_scores(n_steps, direct, n_facts, hedge, n_wrong, overclaim)  # (M, 4)
    ratings = _ratings(scores + noise).astype(str).astype(object)
    ratings[rng.random(ratings.shape) < na_fraction] = NOT_AVAILABLE

    records = []
    for p in range(n_prompts):
        rows = range(p * completions_per_prompt, (p + 1) * completions_per_prompt)
        records.append(
            {
                "source": f"generated/{tp.TOPICS[prompt_topic[p]].name}",
                "instruction": prompts[p],
                "completions": [
                    {
                        "response": text[i],
                        "annotations": {
                            k: {"Rating": ratings[i, o]} for o, k in enumerate(OBJECTIVES)
                        },
                    }
                    for i in rows
                ],
            }
        )
    logger.info(
        "Generated %d UltraFeedback-shaped prompts x %d completions (seed %d)",
        n_prompts,
        completions_per_prompt,
        seed,
    )
    latents = {
        "n_steps": n_steps,
        "direct": direct,
        "n_facts": n_facts,
        "hedge": hedge,
        "n_wrong": n_wrong,
        "overclaim": overclaim,
        "scores": scores,
    }
    return records, latents
