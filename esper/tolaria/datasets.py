"""Datasets as uint8 tensors, split into train / validation / test.

Validation (carved from the training pool) drives decisions and rewards; test is only for final
scores. Nothing falls back to other data: a missing dataset is an error that says how to get it.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


class IDXFormatError(ValueError):
    """A file that is not well-formed IDX, or not the IDX file the dataset needs."""


class ChecksumError(ValueError):
    """A data file whose bytes are not the ones it claims to hold, or that nothing vouches for."""


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


# ---------------------------------------------------------------------------------------- Fashion-MNIST
FASHION_RAW_DIR = Path("FashionMNIST") / "raw"              # torchvision's layout under root
FASHION_PACKAGE_DIR = "/usr/share/datasets/fashion-mnist"   # Debian/Ubuntu: apt-get install dataset-fashion-mnist
FASHION_MANIFEST = "checksums.md5"
FASHION_CLASSES = 10
# Uncompressed file name -> (dims of the official file, MD5 of its uncompressed IDX bytes). The MD5 is of the
# content, not of the .gz: gzipping the same bytes again (Debian's package does) gives another .gz MD5 than
# the ones torchvision's FashionMNIST.resources lists for Zalando's downloads.
FASHION_OFFICIAL = {
    "train-images-idx3-ubyte": ((60000, 28, 28), "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": ((60000,), "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": ((10000, 28, 28), "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": ((10000,), "15d484375f8d13e6eb1aabb0c3f46965"),
}
IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes: magic 0x00 0x00 <dtype code> <ndim>, then ndim big-endian uint32 dims, then the values
    (big-endian, row-major). The size must match the header exactly: a truncated or padded file is an error,
    never a shorter array."""
    if len(data) < 4:
        raise IDXFormatError(f"{name}: {len(data)} bytes, too short for an IDX header (4-byte magic number)")
    if data[:2] == b"\x1f\x8b":
        raise IDXFormatError(f"{name}: gzip-compressed data without a .gz suffix; rename it to {name}.gz or gunzip it")
    if data[0] != 0 or data[1] != 0:
        raise IDXFormatError(f"{name}: magic number 0x{data[:4].hex()} is not an IDX one (it must start 0x0000)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise IDXFormatError(f"{name}: IDX dtype code 0x{code:02x} is unknown; valid codes: "
                             f"{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}")
    if ndim == 0:
        raise IDXFormatError(f"{name}: the IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{name}: {len(data)} bytes, too short for an IDX header with {ndim} dimensions")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    dtype = IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise IDXFormatError(f"{name}: the header declares dims {dims} of {dtype.name} ({expected} bytes with the "
                             f"header), but the file holds {len(data)} bytes (truncated or padded)")
    return np.frombuffer(data, dtype, offset=header).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    """The file's IDX bytes: decompressed when its name ends in .gz."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:   # BadGzipFile is an OSError; EOFError: a truncated stream
        raise IDXFormatError(f"{path}: not a valid gzip file ({type(exc).__name__}: {exc})") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, raw or gzip-compressed (by its .gz suffix). No checksum: see load_fashion_mnist."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def read_manifest(folder: Path) -> dict[str, str]:
    """`checksums.md5` next to a subset, in md5sum's format: `<MD5 of the uncompressed IDX bytes>  <uncompressed
    file name>` per line (# comments allowed). Entries hash the content, so one manifest holds for .gz and raw."""
    path = folder / FASHION_MANIFEST
    if not path.is_file():
        return {}
    entries: dict[str, str] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([0-9a-fA-F]{32}) [ *](\S+)", line)
        if m is None:
            raise ChecksumError(f"{path}:{i}: expected '<32 hex digits>  <file name>', got {line!r}")
        if m.group(2) not in FASHION_OFFICIAL:
            raise ChecksumError(f"{path}:{i}: {m.group(2)!r} is not one of {list(FASHION_OFFICIAL)} (an entry names "
                                f"the uncompressed file and hashes its uncompressed bytes, stored as .gz or not)")
        entries[m.group(2)] = m.group(1).lower()
    return entries


def _stored(folder: Path, name: str) -> Path | None:
    """Where `name` is stored in `folder`: raw first (no decompression), then .gz."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def find_fashion_mnist(root: str | Path) -> Path | None:
    """The first of root, root/FashionMNIST/raw that holds all four IDX files (each raw or .gz), or None."""
    root = Path(root).expanduser()
    for folder in (root, root / FASHION_RAW_DIR):
        if all(_stored(folder, name) for name in FASHION_OFFICIAL):
            return folder
    return None


def _fashion_missing(root: Path) -> str:
    where = []
    for folder in (root, root / FASHION_RAW_DIR):
        missing = [n for n in FASHION_OFFICIAL if not folder.is_dir() or _stored(folder, n) is None]
        where.append(f"{folder} does not exist" if not folder.is_dir() else f"{folder} lacks {missing}")
    return (f"Fashion-MNIST not found: {'; '.join(where)} (each file may be raw or .gz). Get it with "
            f"`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; it puts the four .gz files in "
            f"{FASHION_PACKAGE_DIR}, so set tolaria.data.root={FASHION_PACKAGE_DIR}), or set "
            f"tolaria.data.download=true (torchvision downloads into {root / FASHION_RAW_DIR}), or run "
            f"`python -c \"from torchvision.datasets import FashionMNIST; FashionMNIST('{root}', download=True)\"`, "
            f"or copy the four .gz files of https://github.com/zalandoresearch/fashion-mnist into {root}.")


def ensure_fashion_mnist(root: str | Path, download: bool) -> Path:
    """Return the folder under `root` holding the four IDX files; download them (once per node, under a lock)
    through torchvision's FashionMNIST if asked, which puts them in root/FashionMNIST/raw."""
    root = Path(root).expanduser()
    folder = find_fashion_mnist(root)
    if folder is not None:
        return folder
    if not download:
        raise DatasetNotFoundError(_fashion_missing(root))
    from filelock import FileLock
    from torchvision.datasets import FashionMNIST

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".fashion_mnist.lock")):   # concurrent runners on one node: one downloads, others wait
        if find_fashion_mnist(root) is None:
            FashionMNIST(str(root), train=True, download=True)
    folder = find_fashion_mnist(root)
    if folder is None:
        raise DatasetNotFoundError(f"torchvision's FashionMNIST download finished, but {_fashion_missing(root)}")
    return folder


def _read_fashion_file(folder: Path, name: str, manifest: dict[str, str]) -> np.ndarray:
    path = _stored(folder, name)
    if path is None:
        raise DatasetNotFoundError(_fashion_missing(folder))
    data = _read_bytes(path)
    array = parse_idx(data, str(path))
    official_dims, official_md5 = FASHION_OFFICIAL[name]
    kind = "labels" if "labels" in name else "images"
    if array.dtype != np.uint8 or array.shape[1:] != official_dims[1:] or array.ndim != len(official_dims):
        want = ", ".join(["N", *map(str, official_dims[1:])])
        raise IDXFormatError(f"{path}: holds {array.dtype.name} of shape {array.shape}; Fashion-MNIST {kind} are "
                             f"uint8 of shape ({want})")
    if len(array) == 0:
        raise IDXFormatError(f"{path}: holds no {kind}")
    if kind == "labels" and int(array.max()) >= FASHION_CLASSES:
        raise IDXFormatError(f"{path}: label {int(array.max())} is outside 0..{FASHION_CLASSES - 1}")
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if len(array) == official_dims[0]:        # the full file: only the official bytes will do, manifest or not
        if md5 != official_md5:
            raise ChecksumError(f"{path}: MD5 of the uncompressed content is {md5}, but the official {name} has "
                                f"{official_md5}; the file is corrupt or altered. Delete it and fetch it again "
                                f"(tolaria.data.download=true, or reinstall dataset-fashion-mnist).")
    elif name in manifest:
        if md5 != manifest[name]:
            raise ChecksumError(f"{path}: MD5 of the uncompressed content is {md5}, but {folder / FASHION_MANIFEST} "
                                f"lists {manifest[name]}; the subset is corrupt or altered")
    else:
        raise ChecksumError(f"{path}: holds {len(array)} {kind}, not the official {official_dims[0]}, and no "
                            f"{folder / FASHION_MANIFEST} lists {name}; a subset is read only when a manifest vouches "
                            f"for its bytes, so a cut-short or foreign file never passes as Fashion-MNIST")
    return array


def load_fashion_mnist(root: str | Path, download: bool = False):
    """The 60k training pool and the 10k test split as uint8 (N, 1, 28, 28) images and int64 labels.

    How files are trusted: a file holding the official count (60,000 train / 10,000 t10k) must have the official
    content: the MD5 of its uncompressed IDX bytes is checked, so Zalando's .gz, torchvision's extracted raw files
    and Debian's re-gzipped copies pass, and a corrupt or altered full file is an error naming it. A file with
    fewer records is a subset (tests/data/fashion_mnist holds one): it is read only when a `checksums.md5` next
    to it lists the MD5 of its uncompressed bytes (see read_manifest); without one it is refused.
    """
    folder = ensure_fashion_mnist(root, download)
    manifest = read_manifest(folder)
    arrays = {name: _read_fashion_file(folder, name, manifest) for name in FASHION_OFFICIAL}
    out = []
    for split in ("train", "t10k"):
        x, y = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if len(x) != len(y):
            raise IDXFormatError(f"{folder}: {split}-images holds {len(x)} images but {split}-labels {len(y)} labels")
        out += [torch.from_numpy(x.astype(np.uint8)).unsqueeze(1), torch.from_numpy(y.astype(np.int64))]
    return (*out, FASHION_CLASSES)


def _load_fashion_mnist(cfg: DataConfig):
    if not cfg.root:
        raise ValueError(f"tolaria.data.root must name a folder for dataset 'fashion_mnist' (e.g. --set "
                         f"tolaria.data.root={FASHION_PACKAGE_DIR} after `apt-get install dataset-fashion-mnist`)")
    return load_fashion_mnist(cfg.root, cfg.download)


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
    loader = {"synthetic": _load_synthetic, "cifar10": _load_cifar10, "fashion_mnist": _load_fashion_mnist,
              "image_folder": _load_image_folder}[cfg.dataset]
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
