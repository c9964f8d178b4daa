"""Custom Kedro datasets (safetensors tensors and reward models)."""

from steerable_alignment.datasets.safetensors_datasets import RewardModelDataset, TensorDictDataset

__all__ = ["RewardModelDataset", "TensorDictDataset"]
