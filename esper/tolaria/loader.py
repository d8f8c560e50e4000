"""The device-resident loader: data lives on the device as uint8; batches are sliced by a per-epoch
permutation, normalized and augmented on the device. No worker processes, no host round trips.

One `DeviceData` is shared by every environment on a device; each environment owns a `BatchStream`
with its own generator, so K environments in one process draw exactly what K separate ones would.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from esper.tolaria.datasets import Splits


class DeviceData:
    """The three splits on one device, plus normalization constants."""

    def __init__(self, splits: Splits, device: torch.device, *, channels_last: bool = False) -> None:
        self.device = device
        self.train_x, self.train_y = splits.train_x.to(device), splits.train_y.to(device)
        self.val_x, self.val_y = splits.val_x.to(device), splits.val_y.to(device)
        self.test_x, self.test_y = splits.test_x.to(device), splits.test_y.to(device)
        self.num_classes = splits.num_classes
        self.input_shape = splits.input_shape
        self.mean = torch.tensor(splits.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(splits.std, device=device).view(1, -1, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        x = (x_uint8.float().div_(255.0) - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def eval_batches(self, split: str, batch_size: int, max_batches: int | None = None):
        """(x, y) pairs over a whole split in order, normalized, no augmentation."""
        x_all, y_all = {"val": (self.val_x, self.val_y), "test": (self.test_x, self.test_y),
                        "train": (self.train_x, self.train_y)}[split]
        n = len(y_all)
        for b, start in enumerate(range(0, n, batch_size)):
            if max_batches is not None and b >= max_batches:
                return
            yield self.normalize(x_all[start:start + batch_size]), y_all[start:start + batch_size]


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Per-sample random crop (zero padding `pad`) and horizontal flip, with static shapes and no host sync."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=x.device)
    rows = off[:, :1] + torch.arange(h, device=x.device)
    cols = off[:, 1:] + torch.arange(w, device=x.device)
    out = xp.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    out = out.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    flip = torch.rand(b, generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


class BatchStream:
    """One environment's view of the training split: a fresh permutation each epoch, fixed batch shapes.

    The last partial batch of an epoch is dropped so every batch has the same shape (capture needs it).
    """

    def __init__(self, data: DeviceData, batch_size: int, seed: int, augment: bool) -> None:
        n = len(data.train_y)
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} exceeds the {n} training images")
        self.data, self.batch_size, self.augment = data, batch_size, augment
        self.batches_per_epoch = n // batch_size
        self.generator = torch.Generator(device=data.device)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)
        self._perm: torch.Tensor | None = None
        self._cursor = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._perm is None or self._cursor >= self.batches_per_epoch:
            self._perm = torch.randperm(len(self.data.train_y), generator=self.generator, device=self.data.device)
            self._cursor = 0
        idx = self._perm[self._cursor * self.batch_size:(self._cursor + 1) * self.batch_size]
        self._cursor += 1
        x = self.data.normalize(self.data.train_x[idx])
        if self.augment:
            x = random_crop_flip(x, self.generator).contiguous(memory_format=self.data.memory_format)
        return x, self.data.train_y[idx]
