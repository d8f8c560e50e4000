"""Datasets as uint8 tensors, split into train / validation / test.

Validation (carved from the training pool) drives decisions and rewards; test is only for final
scores. Nothing falls back to other data: a missing dataset is an error that says how to get it.
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from esper.tolaria.config import DataConfig


@dataclass
class Splits:
    train_x: torch.Tensor      # uint8 (N, C, H, W)
    train_y: torch.Tensor      # int64 (N,)
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]    # per-channel, in [0, 1] units, from the training split
    std: tuple[float, ...]
    train_index: torch.Tensor  # positions in the source training pool (for audits)
    val_index: torch.Tensor

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


class DatasetNotFoundError(FileNotFoundError):
    pass


# ---------------------------------------------------------------------------------------- synthetic
def synthetic_images(n: int, *, task_seed: int, sample_seed: int, image_size: int = 32, num_classes: int = 10,
                     prototypes_per_class: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """A built-in CIFAR-shaped task: each class is a few smooth random colour prototypes; a sample is one of
    its class's prototypes, shifted by up to 3 pixels, plus a faint prototype of a random class and noise.

    The 6k-parameter reference host plateaus far below what it reaches with a residual seed
    (see tests/test_tolaria.py and scripts/bench_task.py). Deterministic from the two seeds.
    """
    pg = torch.Generator().manual_seed(task_seed)
    low = max(2, image_size // 4)
    base = torch.randn(num_classes * prototypes_per_class, 3, low, low, generator=pg)
    protos = F.interpolate(base, size=(image_size, image_size), mode="bicubic", align_corners=False)
    protos = protos / protos.flatten(1).std(1)[:, None, None, None]
    g = torch.Generator().manual_seed(sample_seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    which = y * prototypes_per_class + torch.randint(0, prototypes_per_class, (n,), generator=g)
    shift = torch.randint(-3, 4, (n, 2), generator=g)
    ar = torch.arange(image_size)
    rows = (ar[None, :] - shift[:, :1]) % image_size                      # circular shift as a gather
    cols = (ar[None, :] - shift[:, 1:]) % image_size
    img = protos[which]
    img = img.gather(2, rows[:, None, :, None].expand_as(img)).gather(3, cols[:, None, None, :].expand_as(img))
    distractor = protos[torch.randint(0, protos.shape[0], (n,), generator=g)]
    img = img + 0.6 * distractor + 0.8 * torch.randn(img.shape, generator=g)
    x = ((img / 6 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return x, y


def _load_synthetic(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    pool_x, pool_y = synthetic_images(cfg.train_size + cfg.val_size, task_seed=cfg.seed, sample_seed=cfg.seed * 3 + 1,
                                      image_size=cfg.image_size)
    test_x, test_y = synthetic_images(cfg.test_size, task_seed=cfg.seed, sample_seed=cfg.seed * 3 + 2,
                                      image_size=cfg.image_size)
    return pool_x, pool_y, test_x, test_y, 10


# ---------------------------------------------------------------------------------------- CIFAR-10
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_FILE = "test_batch"


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    data = torch.as_tensor(entry["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32)
    labels = torch.as_tensor(entry.get("labels", entry.get("fine_labels")), dtype=torch.int64)
    return data, labels


def ensure_cifar10(root: str | Path, download: bool) -> Path:
    """Return the cifar-10-batches-py folder under `root`; download it (once per node, under a lock) if asked."""
    root = Path(root).expanduser()
    folder = root / CIFAR_DIR
    needed = [folder / f for f in CIFAR_TRAIN_FILES + [CIFAR_TEST_FILE]]
    if all(p.exists() for p in needed):
        return folder
    if not download:
        missing = [p.name for p in needed if not p.exists()]
        raise DatasetNotFoundError(
            f"CIFAR-10 not found: {folder} lacks {missing}. Download it with `esper data cifar10 --root {root}` "
            f"(or set tolaria.data.download=true), or extract cifar-10-python.tar.gz from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html into {root}.")
    from filelock import FileLock
    from torchvision.datasets import CIFAR10

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".cifar10.lock")):    # concurrent runners on one node: one downloads, others wait
        if not all(p.exists() for p in needed):
            CIFAR10(str(root), train=True, download=True)
    return folder


def _load_cifar10(cfg: DataConfig):
    if not cfg.root:
        raise ValueError("tolaria.data.root must name a folder for dataset 'cifar10' (e.g. --set tolaria.data.root=~/data)")
    folder = ensure_cifar10(cfg.root, cfg.download)
    parts = [_read_cifar_batch(folder / f) for f in CIFAR_TRAIN_FILES]
    pool_x, pool_y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    test_x, test_y = _read_cifar_batch(folder / CIFAR_TEST_FILE)
    return pool_x, pool_y, test_x, test_y, 10


# ---------------------------------------------------------------------------------------- image folder
def _read_folder(path: Path, size: int, classes: list[str] | None):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    if not path.is_dir():
        raise DatasetNotFoundError(f"image folder {path} does not exist; expected {path}/<class>/<image files>")
    tf = v2.Compose([v2.PILToTensor(), v2.Resize((size, size), antialias=True)])
    ds = ImageFolder(str(path), transform=lambda im: tf(im.convert("RGB")))
    if classes is not None and ds.classes != classes:
        raise ValueError(f"{path} has classes {ds.classes}, but the training folder has {classes}")
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    return torch.stack(xs).to(torch.uint8), torch.as_tensor(ys, dtype=torch.int64), ds.classes


def _load_image_folder(cfg: DataConfig):
    if not cfg.root:
        raise ValueError("tolaria.data.root must name a folder with train/ and test/ for dataset 'image_folder'")
    root = Path(cfg.root).expanduser()
    pool_x, pool_y, classes = _read_folder(root / "train", cfg.image_size, None)
    test_x, test_y, _ = _read_folder(root / "test", cfg.image_size, classes)
    return pool_x, pool_y, test_x, test_y, len(classes)


# ---------------------------------------------------------------------------------------- split
def load_splits(cfg: DataConfig) -> Splits:
    """Load `cfg.dataset` and split: validation carved from the training pool by a seeded permutation."""
    loader = {"synthetic": _load_synthetic, "cifar10": _load_cifar10, "image_folder": _load_image_folder}[cfg.dataset]
    pool_x, pool_y, test_x, test_y, num_classes = loader(cfg)
    n_val = cfg.val_size
    if n_val >= len(pool_x):
        raise ValueError(f"tolaria.data.val_size={n_val} leaves no training data (pool has {len(pool_x)} images)")
    perm = torch.randperm(len(pool_x), generator=torch.Generator().manual_seed(cfg.seed + 7919))
    val_index = perm[:n_val]
    train_index = perm[n_val:]
    if cfg.dataset != "synthetic" and cfg.train_size:
        train_index = train_index[:cfg.train_size]
    if cfg.dataset != "synthetic" and cfg.test_size:
        test_x, test_y = test_x[:cfg.test_size], test_y[:cfg.test_size]
    train_x = pool_x[train_index]
    xf = train_x.float() / 255.0
    mean = tuple(float(m) for m in xf.mean((0, 2, 3)))
    std = tuple(max(float(s), 1e-3) for s in xf.std((0, 2, 3)))
    if not all(math.isfinite(v) for v in mean + std):
        raise ValueError("training split statistics are not finite")
    return Splits(train_x, pool_y[train_index], pool_x[val_index], pool_y[val_index], test_x, test_y, num_classes,
                  mean, std, train_index, val_index)
