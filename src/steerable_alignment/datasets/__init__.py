"""Custom Kedro datasets (safetensors tensors, reward models, save_pretrained models, policies)."""

from steerable_alignment.datasets.hf_model import HFPretrainedDataset
from steerable_alignment.datasets.policy_checkpoint import PolicyCheckpointDataset
from steerable_alignment.datasets.safetensors_datasets import RewardModelDataset, TensorDictDataset

__all__ = [
    "HFPretrainedDataset",
    "PolicyCheckpointDataset",
    "RewardModelDataset",
    "TensorDictDataset",
]
