import pytest

from steerable_alignment.models.config import ConfigError, config_from_params
from steerable_alignment.reporting.samples import SampleChoice, sample_blocks
from tests.reporting.artefacts import HOSTILE, generation_samples


def choice(**overrides):
    params = {
        "dataset": "hh",
        "users": ["helpfulness", "honesty"],
        "model": "nppl_mixed",
        "baseline": "btl_mixed",
        "num_context": None,
        "num_prompts": 2,
        **overrides,
    }
    return config_from_params(SampleChoice, params, "report.samples", tuple_keys=("users",))


def test_opposite_users_side_by_side_at_the_largest_context_then_the_baseline():
    blocks = sample_blocks(generation_samples(), choice())
    # The first prompts by id, whatever the table's order (7, 3, 5).
    assert [b.title for b in blocks] == ["Prompt 3", "Prompt 5"]
    first = blocks[0]
    assert first.lead == "Question 3?"
    assert [p.heading for p in first.panels] == [
        "nppl_mixed: helpfulness user, 10 context pairs",
        "nppl_mixed: honesty user, 10 context pairs",
        "btl_mixed (no context)",
    ]
    assert first.panels[0].body == "nppl_mixed answers helpfulness at 10 for prompt 3"
    assert first.panels[1].body == HOSTILE
    # The baseline's answer comes from the first user's smallest context.
    assert first.panels[2].body == "btl_mixed answers helpfulness at 0 for prompt 3"
    assert first.panels[0].facts == (
        ("reward: helpfulness", "0.300"),
        ("reward: honesty", "-0.250"),
        ("judge: helpfulness", "2.30"),
        ("judge: honesty", "3.00"),
        ("styles", "concrete_steps"),
        ("base-model NLL / token", "2.500"),
    )
    assert dict(first.panels[1].facts)["styles"] == "calibrated_hedge"
    assert first.panels[0].emphasised == ("reward: helpfulness", "judge: helpfulness")
    assert first.panels[1].emphasised == ("reward: honesty", "judge: honesty")
    assert first.panels[2].emphasised == ()


def test_a_given_context_size_no_baseline_and_only_complete_prompts():
    samples = generation_samples()
    samples = samples[~((samples["prompt_id"] == 3) & (samples["user"] == "honesty"))]
    blocks = sample_blocks(samples, choice(num_context=0, baseline=None, num_prompts=5))
    assert [b.title for b in blocks] == ["Prompt 5", "Prompt 7"]
    assert [p.heading for p in blocks[0].panels] == [
        "nppl_mixed: helpfulness user, 0 context pairs",
        "nppl_mixed: honesty user, 0 context pairs",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": "hht"}, r"no samples for 'hht'; data sets: \['hh'\]"),
        ({"model": "nppl"}, r"model 'nppl' has no samples on 'hh'; models: \['btl_mixed'"),
        ({"users": ["truthfulness"]}, r"\['truthfulness'\] not among the users of 'nppl_mixed'"),
        ({"num_context": 5}, r"num_context': 5 not generated; sizes: \[0, 10\]"),
    ],
)
def test_choices_absent_from_the_table_name_what_there_is(overrides, message):
    with pytest.raises(ConfigError, match=message):
        sample_blocks(generation_samples(), choice(**overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"users": ["honesty", "honesty"]}, "users': distinct"),
        ({"num_prompts": 0}, "num_prompts': must be positive"),
        ({"colour": "red"}, r"unknown key\(s\) \['colour'\]"),
    ],
)
def test_bad_parameters_fail_at_once(overrides, message):
    with pytest.raises(ConfigError, match=message):
        choice(**overrides)


def test_a_table_without_the_contract_columns_is_refused():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['response'\]"):
        sample_blocks(generation_samples().drop(columns="response"), choice())
