"""Tolaria: data (built-in synthetic task, CIFAR-10, image folders), the device-resident loader, training."""
from __future__ import annotations

from esper.tolaria.config import DataConfig, TolariaConfig, TrainingConfig
from esper.tolaria.datasets import DatasetNotFoundError, Splits, load_splits, synthetic_images
from esper.tolaria.loader import BatchStream, DeviceData, random_crop_flip
from esper.tolaria.training import HostTrainer, counterfactual, summarise

__all__ = [
    "BatchStream", "DataConfig", "DatasetNotFoundError", "DeviceData", "HostTrainer", "Splits", "TolariaConfig",
    "TrainingConfig", "counterfactual", "load_splits", "random_crop_flip", "summarise", "synthetic_images",
]
