"""The exact judge: the generator's own completions, and texts the generator never writes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from steerable_alignment.ultrafeedback import topics as tp
from steerable_alignment.ultrafeedback.generate import (
    OBJECTIVES,
    generate_records_with_latents,
    latent_scores,
)
from steerable_alignment.ultrafeedback.judge import (
    JUDGE_PREFIX,
    MARKER_PREFIX,
    MARKERS,
    QUALITIES,
    ExactJudge,
    JudgeUnavailable,
    judge_answers,
    judge_knows,
)

SCORES = [f"{JUDGE_PREFIX}{k}" for k in OBJECTIVES]


def _completions(n_prompts: int, seed: int):
    records, latents = generate_records_with_latents(n_prompts, 4, seed)
    prompts = [r["instruction"] for r in records for _ in r["completions"]]
    answers = [c["response"] for r in records for c in r["completions"]]
    return prompts, answers, latents


@pytest.fixture(scope="module")
def judge() -> ExactJudge:
    return ExactJudge()


@pytest.fixture(scope="module")
def generated():
    return _completions(300, seed=5)


@pytest.mark.parametrize("seed", [0, 5])
def test_judge_reads_back_every_latent_of_the_generator(seed):
    prompts, answers, latents = _completions(300, seed)
    table = judge_answers(prompts, answers)
    for quality in QUALITIES:
        np.testing.assert_array_equal(
            table[f"{JUDGE_PREFIX}{quality}"].to_numpy(),
            np.asarray(latents[quality]).astype(np.int64),
            err_msg=quality,
        )
    # The noise-free scores themselves, to the last bit.
    np.testing.assert_array_equal(table[SCORES].to_numpy(), latents["scores"])


def test_judge_ranks_completions_of_a_prompt_as_their_latents_do(generated):
    prompts, answers, latents = generated
    table = judge_answers(prompts, answers)
    scores = table[SCORES].to_numpy().reshape(-1, 4, len(OBJECTIVES))  # (P, 4 completions, K)
    truth = latents["scores"].reshape(-1, 4, len(OBJECTIVES))
    for a, b in itertools.combinations(range(4), 2):
        np.testing.assert_array_equal(
            np.sign(scores[:, a] - scores[:, b]), np.sign(truth[:, a] - truth[:, b])
        )


def test_fact_and_step_phrases_are_unambiguous():
    # No phrase of a topic may contain another of the same topic (a substring
    # would count one fact as two, or a correct fact as wrong).
    for topic in tp.TOPICS:
        phrases = [p for pair in topic.facts for p in pair] + list(topic.steps)
        assert len(set(phrases)) == len(phrases), topic.name
        for a, b in itertools.permutations(phrases, 2):
            assert a.lower() not in b.lower(), (topic.name, a, b)


def _one(judge: ExactJudge, prompt: str, answer: str) -> dict:
    return judge.score([prompt], [answer]).iloc[0].to_dict()


def test_repetition_and_looping_never_raise_a_score(judge, generated):
    prompts, answers, _ = generated
    base = judge.score(prompts, answers)[SCORES].to_numpy()
    doubled = judge.score(prompts, [f"{a} {a}" for a in answers])[SCORES].to_numpy()
    np.testing.assert_array_equal(doubled, base)
    looped = [" ".join([a.split(".")[0] + "."] * 6) for a in answers]  # first sentence x6
    assert (judge.score(prompts, looped)[SCORES].to_numpy() <= base.max(axis=0)).all()


def _garden_prompt() -> str:
    return "How do I grow tomatoes on a balcony?"


def test_degenerate_texts(judge):
    prompt = _garden_prompt()
    garden, other = tp.TOPICS[0], tp.TOPICS[1]
    right, wrong = garden.facts[0]
    steps = garden.steps
    good = (
        "Here is how to grow tomatoes on a balcony. As far as I know, "
        f"{right}. First, {steps[0]}. Then, {steps[1]}. Finally, {steps[2]}."
    )
    best = _one(judge, prompt, good)
    assert best[f"{JUDGE_PREFIX}n_steps"] == 3 and best[f"{JUDGE_PREFIX}direct"] == 1
    assert best[f"{JUDGE_PREFIX}hedge"] == 2 - 1  # first fact hedged, no uncertain closing

    # Every step of the topic, each twice, and a step of another topic: still 3 steps.
    many = good + " " + " ".join(f"{s}." for s in steps * 2) + f" {other.steps[0]}."
    assert _one(judge, prompt, many)[f"{JUDGE_PREFIX}n_steps"] == 3
    assert _one(judge, prompt, many)[SCORES[0]] == best[SCORES[0]]

    # Piling up hedges before the fact is one hedge; hedges with no fact hedge nothing.
    piled = good.replace("As far as I know,", "As far as I know, " * 5)
    assert _one(judge, prompt, piled) == best
    no_fact = "As far as I know, I might be wrong, but I think so. I may be missing details."
    bare = _one(judge, prompt, no_fact)
    assert bare[f"{JUDGE_PREFIX}hedge"] == 0 and bare[f"{JUDGE_PREFIX}n_facts"] == 0
    assert bare[f"{MARKER_PREFIX}calibrated_hedge"]  # the marker still shows the style

    # Another topic's facts are not facts of this answer; a fact in both versions is wrong.
    off_topic = _one(judge, prompt, f"{other.facts[0][0]}. {other.facts[1][0]}.")
    assert off_topic[f"{JUDGE_PREFIX}n_facts"] == 0
    both = _one(judge, prompt, f"{right}. {wrong}.")
    assert both[f"{JUDGE_PREFIX}n_facts"] == 1 and both[f"{JUDGE_PREFIX}n_wrong"] == 1

    # A token loop and an empty answer: nothing to credit.
    for text in ("the the the the the the the the", ""):
        row = _one(judge, prompt, text)
        assert not any(row[f"{MARKER_PREFIX}{m}"] for m in MARKERS)
        assert row[SCORES[0]] < best[SCORES[0]]

    # No text scores above the best the generator can write, per objective.
    support = latent_scores(
        *np.array(list(itertools.product(range(4), (0, 1), (1, 2), range(3), range(3), (0, 1)))).T
    )
    for text in (good, many, piled, no_fact, "", f"{good} {good}"):
        row = _one(judge, prompt, text)
        assert all(row[c] <= support[:, i].max() for i, c in enumerate(SCORES))


def test_a_direct_opening_must_name_the_prompts_subject(judge):
    prompt = _garden_prompt()
    assert _one(judge, prompt, "Here is how to grow tomatoes on a balcony.")[
        f"{JUDGE_PREFIX}direct"
    ]
    assert not _one(judge, prompt, "Here is how to bake bread at home.")[f"{JUDGE_PREFIX}direct"]


def test_reading_ignores_case_spacing_and_curly_apostrophes(judge):
    prompt = _garden_prompt()
    right = tp.TOPICS[0].facts[1][0]
    plain = _one(judge, prompt, f"I'm not certain, but I believe {right}.")
    fancy = _one(judge, prompt, f"I\u2019M NOT   certain, but I believe\n{right.upper()}.")
    assert plain == fancy and plain[f"{JUDGE_PREFIX}hedge"] == 2 - 1


def test_unknown_prompts_are_refused_with_the_reason():
    assert judge_knows([_garden_prompt()])
    assert not judge_knows([_garden_prompt(), "Write a haiku about the sea."])
    with pytest.raises(JudgeUnavailable, match="not generated by the project"):
        judge_answers(["Write a haiku about the sea."], ["Waves."])
    with pytest.raises(ValueError, match="1 prompts but 2 answers"):
        judge_answers([_garden_prompt()], ["a", "b"])
