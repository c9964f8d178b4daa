"""The project as a user runs it: a KedroSession run, kedro-viz, the notebooks.

One temporary copy of the project runs the default pipeline (DPO, generation
and the report included) in the `test` environment (tiny parameters) on a
tiny random base policy whose tokenizer learns the run's HH texts;
kedro-viz and the notebooks then read it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.project_copy import copy_project, save_tiny_base_policy


@pytest.fixture(scope="module")
def project_run(tmp_path_factory):
    """Copy the project, make the HH pairs and the tiny base policy, then run
    `kedro run --env test` through a KedroSession and time it."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    root = copy_project(tmp_path_factory.mktemp("project"), folders=("conf", "notebooks"))
    old_cwd = Path.cwd()
    os.chdir(root)
    try:
        bootstrap_project(root)
        seconds = {}
        with KedroSession.create(project_path=root, env="test") as session:
            session.run(pipeline_name="ultrafeedback")  # the HH texts the tiny tokenizer learns
        save_tiny_base_policy(root)
        started = time.perf_counter()
        with KedroSession.create(project_path=root, env="test") as session:
            session.run()
        seconds["__default__"] = time.perf_counter() - started
    finally:
        os.chdir(old_cwd)
    return root, seconds


def test_default_pipeline_runs_in_a_session(project_run):
    import pandas as pd

    root, seconds = project_run
    metrics = pd.read_parquet(root / "data/08_reporting/reward_metrics.parquet")
    from steerable_alignment.pipelines.variants import REWARD_DATASETS

    for dataset, spec in REWARD_DATASETS.items():
        models = set(metrics.loc[metrics["dataset"] == dataset, "model"])
        assert models == set(spec.variants) | ({"bayes_optimal"} if spec.oracle else set())
        assert (root / f"data/08_reporting/{dataset}_accuracy_by_context.json").is_file()
    features = root / "data/04_feature/hh/features.safetensors"
    assert features.is_file()  # the packaged MiniLM embedded the generated texts
    assert (root / "data/08_reporting/reward_summary.md").read_text().startswith("# Reward")
    versions = list((root / "data/06_models/synthetic/nppl/reward_model.safetensors").iterdir())
    assert len(versions) == 1 and (versions[0] / "reward_model.safetensors").is_file()
    for name, value in seconds.items():
        print(f"KedroSession run of the {name} pipeline (env test): {value:.1f} s")  # noqa: T201


def test_the_default_run_trains_the_policies_steers_them_and_writes_the_report(project_run):
    import pandas as pd

    root, _ = project_run
    metrics = pd.read_parquet(root / "data/08_reporting/dpo_metrics.parquet")
    policies = {"btl_helpfulness", "btl_honesty", "btl_mixed", "nppl_mixed"}
    assert set(metrics["model"]) == policies
    assert (root / "data/06_models/hh/nppl_mixed/policy").is_dir()
    assert (root / "data/06_models/base_policy/config.json").is_file()
    samples = pd.read_parquet(root / "data/08_reporting/generation_samples.parquet")
    assert set(samples["model"]) == policies
    assert {"reward_helpfulness", "reward_honesty"} <= set(samples.columns)
    gap = pd.read_parquet(root / "data/08_reporting/steering_gap.parquet")
    assert set(gap["num_context"]) == {0, 3} and gap["gap_se"].notna().all()
    assert (gap.loc[gap["num_context"] == 0, "gap"] == 0).all()  # one population latent
    wins = pd.read_parquet(root / "data/08_reporting/generation_win_rates.parquet")
    assert wins["win_rate"].between(0, 1).all()
    report = (root / "data/08_reporting/report.html").read_text(encoding="utf-8")
    assert "Steering gap" in report and "plotly" in report


def test_each_session_run_is_one_finished_mlflow_run_with_headlines_and_artefacts(project_run):
    """kedro-mlflow records each run in the project's sqlite store (conf/base/mlflow.yml);
    TrackingHook adds the headline numbers of the metrics tables and artefacts.json."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    root, _ = project_run
    assert (root / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{root.as_posix()}/mlflow.db")
    experiment = client.get_experiment_by_name("steerable_alignment")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert {"ultrafeedback", "__default__"} <= set(runs)  # two sessions, two runs
    run = runs["__default__"]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["reward_modelling.synthetic.nppl.training.seed"] == "0"  # flattened node params
    first = runs["ultrafeedback"]  # its own parameters only, not the later run's
    assert first.info.status == "FINISHED" and "ultrafeedback.source.kind" in first.data.params
    assert not any(p.startswith("reward_modelling.") for p in first.data.params)
    metrics = run.data.metrics
    table = pd.read_parquet(root / "data/08_reporting/hh/reward_metrics.parquet")
    row = table.iloc[0]
    name = (
        f"hh_reward_metrics/model:{row['model']}/objective:{row['objective']}"
        f"/num_context:{row['num_context']}/accuracy"
    )
    assert metrics[name] == pytest.approx(row["accuracy"])
    for prefix in ("synthetic_reward_metrics/", "hh_dpo_metrics/", "steering_gap/", "hh_active_"):
        assert any(m.startswith(prefix) for m in metrics), prefix
    artefacts = json.loads(
        (Path(run.info.artifact_uri.removeprefix("file://")) / "artefacts.json").read_text()
    )
    model = artefacts["synthetic.nppl.reward_model"]
    assert Path(model["path"]).is_file() and model["version"] in model["path"]
    policy = artefacts["hh.nppl_mixed.policy"]
    assert policy["path"] == str(root / "data/06_models/hh/nppl_mixed/policy")


def test_every_registered_pipeline_name_runs_in_a_session(project_run):
    """`kedro run --pipeline <name>` for every registered name, as Kedro loads it selectively.

    Kedro imports only the requested pipeline's package (``pipelines/<name>/``), so a
    name that ``register_pipelines()`` knows but no package provides fails only
    here (``dpo_all`` did). After the default run every input exists; nodes
    whose outputs exist are skipped, so ``dpo_all`` trains the HHT policies only.
    """
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession

    root, _ = project_run
    names = sorted(name for name in pipelines if name != "__default__")
    assert "dpo_all" in names
    old_cwd = Path.cwd()
    os.chdir(root)
    try:
        for name in names:
            with KedroSession.create(project_path=root, env="test") as session:
                session.run(pipeline_names=[name], only_missing_outputs=True)
    finally:
        os.chdir(old_cwd)
    assert (root / "data/06_models/hht/nppl_mixed/policy").is_dir()  # made by dpo_all


def _kedro(root: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "KEDRO_ENV": "test"}
    kedro = Path(sys.executable).with_name("kedro")
    return subprocess.run(
        [str(kedro), *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_kedro_viz_build_shows_every_pipeline_and_the_chart(project_run):
    root, _ = project_run
    result = _kedro(root, "viz", "build", "--include-previews")
    assert result.returncode == 0, result.stderr[-3000:]
    api = root / "build" / "api"
    main = json.loads((api / "main").read_text())
    registered = {p["id"] for p in main["pipelines"]}
    expected = {
        "synthetic_data",
        "ultrafeedback",
        "embedding",
        "reward_modelling",
        "evaluation",
        "dpo",
        "report",
    }
    assert expected | {"__default__"} <= registered
    for name in expected:
        pipeline = json.loads((api / "pipelines" / name).read_text())
        assert pipeline["nodes"], name
    names = {n["name"] for n in main["nodes"]}
    assert "reward_metrics" in names
    assert {f"{d}.accuracy_chart" for d in ("synthetic", "hh", "hht")} <= names
    chart = next(n for n in main["nodes"] if n["name"] == "synthetic.accuracy_chart")
    assert chart["dataset_type"].endswith("plotly.json_dataset.JSONDataset")
    preview = json.loads((api / "nodes" / chart["id"]).read_text())
    assert preview.get("preview_type") == "PlotlyPreview" and preview["preview"]["data"]


# Every notebook the docs promise; a missing one fails its test.
NOTEBOOKS = ("synthetic_benchmark.ipynb", "ultrafeedback_rewards.ipynb", "dpo.ipynb")


def test_every_notebook_is_tested():
    assert sorted(p.name for p in (PROJECT_ROOT / "notebooks").glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_executes(project_run, notebook, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    root, _ = project_run
    assert (root / "notebooks" / notebook).is_file(), f"notebooks/{notebook} is missing"
    monkeypatch.setenv("KEDRO_ENV", "test")
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    nb = nbformat.read(root / "notebooks" / notebook, as_version=4)
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(root / "notebooks")}},
    ).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # its session's tracking store is the project's, not one in the notebook's folder
    assert not (root / "notebooks" / "mlflow.db").exists()
