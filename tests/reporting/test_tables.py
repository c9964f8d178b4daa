import numpy as np
import pandas as pd
import pytest

from steerable_alignment.reporting.tables import MISSING, mean_se_by_context


def long_table():
    return pd.DataFrame(
        {
            "model": ["nppl", "nppl", "btl", "btl", "nppl"],
            "objective": ["all", "all", "all", "all", "user_0"],
            "num_context": [0, 10, 0, 10, 0],
            "acc": [0.7494, 0.9993, 0.75, 0.75, 0.5],
            "se": [0.0057, 0.0003, 0.006, np.nan, 0.01],
        }
    )


def test_one_column_per_context_size_in_percent():
    wide = mean_se_by_context(long_table(), ["objective", "model"], "acc", "se")
    assert list(wide.columns) == ["objective", "model", "0", "10"]
    assert wide.values.tolist() == [
        ["all", "btl", "75.00 ± 0.60", "75.00"],  # no s.e. -> the mean alone
        ["all", "nppl", "74.94 ± 0.57", "99.93 ± 0.03"],
        ["user_0", "nppl", "50.00 ± 1.00", MISSING],  # not scored at 10
    ]


def test_signed_differences_in_raw_units():
    table = pd.DataFrame(
        {"k": ["a", "a"], "num_context": [0, 3], "d": [0.0123, -0.5], "s": [0.001, 0.02]}
    )
    wide = mean_se_by_context(table, ["k"], "d", "s", scale=1.0, decimals=3, signed=True)
    assert wide.values.tolist() == [["a", "+0.012 ± 0.001", "-0.500 ± 0.020"]]


def test_duplicate_rows_and_missing_columns_fail_clearly():
    table = pd.concat([long_table(), long_table().iloc[:1]])
    with pytest.raises(ValueError, match="Several rows for .*'model': 'nppl'"):
        mean_se_by_context(table, ["objective", "model"], "acc", "se")
    with pytest.raises(ValueError, match=r"Columns \['accuracy'\] not in the table"):
        mean_se_by_context(long_table(), ["model"], "accuracy", "se")
