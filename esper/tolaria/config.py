"""Tolaria's settings: which data, how it is split, and how the host is trained."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: Literal["synthetic", "cifar10", "fashion_mnist", "image_folder"] = "synthetic"
    root: str | None = Field(None, description="cifar10: folder holding cifar-10-batches-py; fashion_mnist: folder "
                             "holding the four IDX files (raw or .gz), directly or in FashionMNIST/raw; image_folder: "
                             "folder with train/ and test/")
    download: bool = Field(False, description="cifar10, fashion_mnist: download through torchvision when missing "
                           "(once per node, under a file lock)")
    image_size: int = Field(32, ge=8, description="synthetic and image_folder: side of the square images "
                            "(fashion_mnist is 1x28x28)")
    train_size: int = Field(2048, ge=0, description="synthetic: training images (before the validation split); others: cap, 0 = all")
    val_size: int = Field(1024, ge=32, description="images carved from the training pool for validation (decisions and rewards)")
    test_size: int = Field(1024, ge=32, description="synthetic: held-out test images; others: cap on the test split")
    seed: int = Field(0, description="task seed: synthetic generation and the train/validation split")
    augment: bool = Field(False, description="random crop (pad 4) and horizontal flip on the device (use for CIFAR-10)")

    @field_validator("train_size")
    @classmethod
    def _train_size(cls, v: int, info: ValidationInfo) -> int:
        synthetic = info.data.get("dataset", "synthetic") == "synthetic"
        if v < 64 and (synthetic or v != 0):
            allowed = ">= 64" if synthetic else ">= 64, or 0 for the whole training pool"
            raise ValueError(f"train_size must be {allowed} for dataset {info.data.get('dataset')!r}, got {v}")
        return v


    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of this dataset's images, known without loading them (the config check builds the host on it)."""
        return {"fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}.get(self.dataset,
                                                                           (3, self.image_size, self.image_size))


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = Field("auto", description="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'")
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    batches_per_step: int | None = Field(None, ge=1, description="batches trained per environment step; None = one epoch")
    lr: float = Field(0.1, gt=0, description="host learning rate at the start of an episode")
    seed_lr: float = Field(0.1, gt=0, description="seed learning rate at the start of an episode")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine: both rates anneal to 0 over the episode's max_epochs, like a normal training run")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    grad_clip: float | None = Field(5.0, gt=0, description="per-group gradient-norm clip (host and each seed separately)")
    counterfactual_batches: int | None = Field(None, ge=1, description="validation batches for counterfactual evals; None = all")
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    channels_last: bool = Field(True, description="channels-last memory format on CUDA (ignored on CPU)")
    capture: bool = Field(True, description="replay train/eval steps as CUDA graphs on CUDA (ignored elsewhere)")


class TolariaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
