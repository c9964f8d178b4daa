"""Project settings (https://docs.kedro.org/en/stable/kedro_project_setup/settings.html)."""

from kedro.config import OmegaConfigLoader

from steerable_alignment.hooks import CudaAvailableHook, MissingInputsHook, TrackingHook

# pluggy calls hooks last-registered first: the CUDA check runs before the inputs check.
# kedro-mlflow (a plugin, registered after these) starts its run before any of them;
# TrackingHook adds headline metrics and artefact paths to that run.
HOOKS = (TrackingHook(), MissingInputsHook(), CudaAvailableHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
# Environments such as `gpu` and `test` override single keys, not whole trees.
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
    # kedro-mlflow's settings (conf/base/mlflow.yml), readable before its own hook adds this.
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
}
