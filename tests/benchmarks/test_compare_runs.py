"""benchmarks/compare_runs.py: two runs' tables and tensors, versions matched, metadata apart."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from tests.benchmarks.scripts import load_benchmark

compare_runs = load_benchmark("compare_runs")


def _run(root, version, weight=0.0, value=1.0, metadata=None, seconds=1.5, loss=0.7):
    reporting = root / "data" / "08_reporting"
    reporting.mkdir(parents=True)
    history = root / "data" / "07_model_output" / "btl" / "training_history.parquet" / version
    history.mkdir(parents=True)
    frame = pd.DataFrame({"step": [10], "train_loss": [loss]})
    if seconds is not None:
        frame["seconds"] = seconds
    frame.to_parquet(history / "training_history.parquet")
    pd.DataFrame({"model": ["btl"], "accuracy": [value]}).to_parquet(reporting / "metrics.parquet")
    (reporting / "summary.md").write_text("# summary\n")
    folder = root / "data" / "06_models" / "btl" / "reward_model.safetensors" / version
    folder.mkdir(parents=True)
    weights = {"w": torch.tensor([weight, 2.0])}
    save_file(weights, str(folder / "reward_model.safetensors"), metadata=metadata)
    return root


def test_same_tables_and_tensors_under_other_versions_are_the_same_results(tmp_path, capsys):
    before = _run(tmp_path / "a", "2026-12-07T08.04.48.876Z")
    after = _run(
        tmp_path / "b", "2026-12-07T09.00.00.000Z", metadata={"trained_with": "{}"}, seconds=9.0
    )  # another wall time in the history: not a result
    assert compare_runs.main([str(before), str(after)]) == 0
    out = capsys.readouterr().out
    assert "reporting files: 3 identical, 0 differ" in out and "1 with identical tensors" in out
    assert "metadata added: trained_with in 1 x reward_model.safetensors" in out
    assert out.rstrip().endswith("SAME RESULTS")


@pytest.mark.parametrize("before_seconds", [None, 1.5])
def test_a_wall_time_column_on_one_side_only_is_not_a_result(tmp_path, capsys, before_seconds):
    after_seconds = None if before_seconds is not None else 2.0
    before = _run(tmp_path / "a", "2026-12-07T08.04.48.876Z", seconds=before_seconds)
    after = _run(tmp_path / "b", "2026-12-07T08.04.48.876Z", seconds=after_seconds)
    assert compare_runs.main([str(before), str(after)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("SAME RESULTS")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"weight": 1e-7}, "tensors differ: 06_models/btl/reward_model.safetensors/"),
        ({"value": 0.5}, "table differs: metrics.parquet"),
        ({"loss": 0.6}, "table differs: 07_model_output/btl/training_history.parquet/"),
    ],
)
def test_a_changed_tensor_or_table_is_named_and_fails(tmp_path, capsys, change, needle):
    before = _run(tmp_path / "a", "2026-12-07T08.04.48.876Z")
    after = _run(tmp_path / "b", "2026-12-07T08.04.48.876Z", **change)
    assert compare_runs.main([str(before), str(after)]) == 1
    out = capsys.readouterr().out
    assert needle in out and out.rstrip().endswith("RESULTS DIFFER")


def test_a_file_only_one_run_wrote_fails_and_a_checkout_without_a_run_is_refused(tmp_path, capsys):
    before = _run(tmp_path / "a", "2026-12-07T08.04.48.876Z")
    after = _run(tmp_path / "b", "2026-12-07T08.04.48.876Z")
    (after / "data" / "08_reporting" / "extra.json").write_text("{}")
    assert compare_runs.main([str(before), str(after)]) == 1
    assert "only in one run: extra.json" in capsys.readouterr().out
    with pytest.raises(SystemExit) as error:
        compare_runs.main([str(before), str(tmp_path / "empty")])
    assert error.value.code == 2
    assert "no data/08_reporting (run `make run` there first)" in capsys.readouterr().err
