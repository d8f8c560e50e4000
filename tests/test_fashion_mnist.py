"""Fashion-MNIST in Tolaria: the IDX reader (raw and .gz, both folder layouts), its errors, checksum policy
(official MD5s for full files, a manifest for subsets), the committed real subset in tests/data/fashion_mnist,
and one short episode on it. Tests on the full data run only where `apt-get install dataset-fashion-mnist`
has put it in /usr/share/datasets/fashion-mnist.
"""
from __future__ import annotations

import gzip
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from esper.kasmina import KasminaConfig, LifecycleConfig, build_host, build_model
from esper.kasmina.blueprints import create_seed
from esper.leyline import BLUEPRINT_IDS
from esper.tolaria import DataConfig, DatasetNotFoundError, TolariaConfig, TrainingConfig, load_splits
from esper.tolaria.datasets import (
    FASHION_MANIFEST,
    FASHION_OFFICIAL,
    FASHION_PACKAGE_DIR,
    ChecksumError,
    IDXFormatError,
    load_fashion_mnist,
    parse_idx,
    read_idx,
)

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "tests" / "data" / "fashion_mnist"
SUBSET_TRAIN, SUBSET_TEST = 1600, 400
PACKAGE = Path(FASHION_PACKAGE_DIR)
needs_package = pytest.mark.skipif(not all((PACKAGE / f"{n}.gz").is_file() for n in FASHION_OFFICIAL),
                                   reason=f"no Fashion-MNIST in {PACKAGE} (apt-get install dataset-fashion-mnist)")
CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
         np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


# ------------------------------------------------------------------------------------------ helpers
def idx_bytes(array: np.ndarray, code: int | None = None) -> bytes:
    """IDX bytes for `array` (big-endian), as Zalando's and LeCun's files are written."""
    code = CODES[array.dtype] if code is None else code
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def write_files(folder: Path, files: dict[str, bytes], gz: bool, manifest: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / (f"{name}.gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    if manifest:
        lines = [f"{hashlib.md5(d).hexdigest()}  {n}\n" for n, d in files.items()]
        (folder / FASHION_MANIFEST).write_text("".join(lines))


def fake_files(n_train: int = 200, n_test: int = 50, seed: int = 0) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """Four small IDX files with random images and every class present."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{split}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}-labels-idx1-ubyte"] = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    return {name: idx_bytes(a) for name, a in arrays.items()}, arrays


def fashion_cfg(root: Path | str | None, **kw) -> DataConfig:
    return DataConfig(dataset="fashion_mnist", root=None if root is None else str(root),
                      **{"train_size": 0, "val_size": 64, "test_size": 1024, **kw})


# ------------------------------------------------------------------------------------------ IDX reader
@pytest.mark.parametrize("dtype", list(CODES), ids=lambda d: d.str)
def test_parse_idx_reads_every_dtype_big_endian(dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype) if dtype.kind != "u" else np.arange(24, dtype=dtype)
    out = parse_idx(idx_bytes(a))
    assert out.shape == a.shape and out.dtype == dtype and np.array_equal(out, a)


def test_read_idx_raw_and_gz_agree(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "x").write_bytes(idx_bytes(a))
    (tmp_path / "x.gz").write_bytes(gzip.compress(idx_bytes(a)))
    assert np.array_equal(read_idx(tmp_path / "x"), a) and np.array_equal(read_idx(tmp_path / "x.gz"), a)


GOOD = idx_bytes(np.arange(10, dtype=np.uint8))


@pytest.mark.parametrize("data, match", [
    (b"\x00\x00", "too short for an IDX header"),
    (b"\x01\x00" + GOOD[2:], "magic number 0x01000801 is not an IDX one"),
    (GOOD[:2] + b"\x07" + GOOD[3:], "dtype code 0x07 is unknown; valid codes: 0x08, 0x09"),
    (b"\x00\x00\x08\x00", "declares 0 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x01", "too short for an IDX header with 3 dimensions"),
    (GOOD[:-1], r"declares dims \(10,\) of uint8 \(18 bytes with the header\), but the file holds 17 bytes"),
    (GOOD + b"\x00", "holds 19 bytes"),
    (gzip.compress(GOOD), "gzip-compressed data without a .gz suffix"),
], ids=["short", "magic", "dtype", "ndim0", "short-dims", "truncated", "padded", "gzip-unlabelled"])
def test_malformed_idx_is_a_clear_error(data, match):
    with pytest.raises(IDXFormatError, match=match):
        parse_idx(data, "f")


def test_corrupt_gz_names_the_file(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(GOOD)[:-6])
    with pytest.raises(IDXFormatError, match=r"x\.gz: not a valid gzip file"):
        read_idx(tmp_path / "x.gz")


# ------------------------------------------------------------------------------------------ loader
@pytest.mark.parametrize("layout", ["", "FashionMNIST/raw"], ids=["root", "torchvision"])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_loads_written_files_from_either_layout(tmp_path, layout, gz):
    files, arrays = fake_files()
    write_files(tmp_path / layout, files, gz)
    s = load_splits(fashion_cfg(tmp_path))
    pool_x, pool_y = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10
    assert s.train_x.dtype == torch.uint8 and s.train_y.dtype == torch.int64
    assert len(s.train_x) == 200 - 64 and len(s.val_x) == 64 and len(s.test_x) == 50
    assert np.array_equal(s.train_x[:, 0].numpy(), pool_x[s.train_index.numpy()])
    assert np.array_equal(s.val_y.numpy(), pool_y[s.val_index.numpy()])
    assert np.array_equal(s.test_x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(s.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])


@pytest.mark.parametrize("name, array, match", [
    ("train-images-idx3-ubyte", np.zeros((200, 27, 28), np.uint8), r"uint8 of shape \(200, 27, 28\); .*\(N, 28, 28\)"),
    ("train-images-idx3-ubyte", np.zeros((200, 28, 28), ">i2"), r"holds int16 .*images are uint8"),
    ("train-labels-idx1-ubyte", np.full(200, 10, np.uint8), r"label 10 is outside 0\.\.9"),
    ("t10k-labels-idx1-ubyte", np.zeros(49, np.uint8), "t10k-images holds 50 images but t10k-labels 49 labels"),
    ("t10k-labels-idx1-ubyte", np.zeros(0, np.uint8), "holds no labels"),
], ids=["size", "dtype", "label", "count", "empty"])
def test_wrong_contents_are_clear_errors(tmp_path, name, array, match):
    files, _ = fake_files()
    files[name] = idx_bytes(array)
    write_files(tmp_path, files, gz=True)
    with pytest.raises(IDXFormatError, match=match):
        load_splits(fashion_cfg(tmp_path))


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as exc:
        load_splits(fashion_cfg(tmp_path / "nowhere"))
    msg = str(exc.value)
    for hint in ("apt-get install dataset-fashion-mnist", f"tolaria.data.root={FASHION_PACKAGE_DIR}",
                 "tolaria.data.download=true", "FashionMNIST(", "does not exist"):
        assert hint in msg, hint
    files, _ = fake_files()
    del files["t10k-labels-idx1-ubyte"]
    write_files(tmp_path, files, gz=True)
    with pytest.raises(DatasetNotFoundError, match=r"lacks \['t10k-labels-idx1-ubyte'\]"):
        load_splits(fashion_cfg(tmp_path))
    with pytest.raises(ValueError, match="tolaria.data.root must name a folder for dataset 'fashion_mnist'"):
        load_splits(fashion_cfg(None))


def test_download_goes_through_torchvision_then_our_reader(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:          # stands in for the network: puts files where torchvision would
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            write_files(Path(root) / "FashionMNIST" / "raw", fake_files()[0], gz=False)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    s = load_splits(fashion_cfg(tmp_path / "dl", download=True))
    assert calls == [(str(tmp_path / "dl"), True)] and len(s.test_x) == 50
    load_splits(fashion_cfg(tmp_path / "dl", download=True))
    assert len(calls) == 1                                   # present now: no second download


# ------------------------------------------------------------------------------------------ checksums
def test_full_size_file_must_have_the_official_content(tmp_path):
    """A file with the official record count is checked against the official MD5, manifest or not."""
    files, _ = fake_files()
    files["t10k-images-idx3-ubyte"] = idx_bytes(np.zeros((10000, 28, 28), np.uint8))
    files["t10k-labels-idx1-ubyte"] = idx_bytes(np.zeros(10000, np.uint8))
    write_files(tmp_path, files, gz=True)                     # the manifest lists the fakes' MD5s: no help
    with pytest.raises(ChecksumError, match=r"t10k-images-idx3-ubyte\.gz: MD5 of the uncompressed content is "
                       r"[0-9a-f]{32}, but the official t10k-images-idx3-ubyte has 8181f5470baa50b63fa0f6fddb340f0a"):
        load_splits(fashion_cfg(tmp_path))


def test_subset_needs_a_manifest(tmp_path):
    write_files(tmp_path, fake_files()[0], gz=True, manifest=False)
    with pytest.raises(ChecksumError, match=r"train-images-idx3-ubyte\.gz: holds 200 images, not the official "
                       r"60000, and no .*checksums\.md5 lists train-images-idx3-ubyte"):
        load_splits(fashion_cfg(tmp_path))


def test_subset_must_match_its_manifest(tmp_path):
    files, _ = fake_files()
    write_files(tmp_path, files, gz=False)
    data = bytearray(files["train-labels-idx1-ubyte"])
    data[-1] = (data[-1] + 1) % 10                            # still a valid label, different bytes
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"train-labels-idx1-ubyte: MD5 .* but .*checksums\.md5 lists"):
        load_splits(fashion_cfg(tmp_path))


@pytest.mark.parametrize("line, match", [
    ("not-a-checksum  train-images-idx3-ubyte", r"checksums\.md5:3: expected '<32 hex digits>  <file name>'"),
    (f"{'0' * 32}  train-images-idx3-ubyte.gz", r"'train-images-idx3-ubyte\.gz' is not one of"),
])
def test_malformed_manifest_is_an_error(tmp_path, line, match):
    write_files(tmp_path, fake_files()[0], gz=True, manifest=False)
    (tmp_path / FASHION_MANIFEST).write_text(f"# comments and blank lines are skipped\n\n{line}\n")
    with pytest.raises(ChecksumError, match=match):
        load_splits(fashion_cfg(tmp_path))


# ------------------------------------------------------------------------------------------ the real subset
SUBSET_CFG = fashion_cfg(SUBSET, val_size=320, test_size=SUBSET_TEST)


@pytest.fixture(scope="module")
def subset():
    return load_splits(SUBSET_CFG)


def test_committed_subset_loads(subset):
    s = subset
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10
    assert s.train_x.shape == (SUBSET_TRAIN - 320, 1, 28, 28) and s.val_x.shape == (320, 1, 28, 28)
    assert s.test_x.shape == (SUBSET_TEST, 1, 28, 28)
    assert {s.train_x.dtype, s.val_x.dtype, s.test_x.dtype} == {torch.uint8}
    assert {s.train_y.dtype, s.val_y.dtype, s.test_y.dtype} == {torch.int64}
    for y in (s.train_y, s.val_y, s.test_y):
        assert set(y.tolist()) == set(range(10))             # every class in every split
    assert len(s.mean) == len(s.std) == 1 and 0.2 < s.mean[0] < 0.4 and 0.25 < s.std[0] < 0.45
    assert all(math.isfinite(v) for v in s.mean + s.std)


def test_subset_validation_split_is_seeded_and_disjoint(subset):
    again = load_splits(SUBSET_CFG)
    assert torch.equal(again.val_index, subset.val_index) and torch.equal(again.val_x, subset.val_x)
    train, val = set(subset.train_index.tolist()), set(subset.val_index.tolist())
    assert not train & val and train | val == set(range(SUBSET_TRAIN))
    other = load_splits(SUBSET_CFG.model_copy(update={"seed": 1}))
    assert not torch.equal(other.val_index, subset.val_index)
    capped = load_splits(SUBSET_CFG.model_copy(update={"train_size": 256, "test_size": 100}))
    assert len(capped.train_x) == 256 and torch.equal(capped.test_y, subset.test_y[:100])


@needs_package
def test_subset_is_the_start_of_the_official_files():
    for name in FASHION_OFFICIAL:
        sub, full = read_idx(SUBSET / f"{name}.gz"), read_idx(PACKAGE / f"{name}.gz")
        assert np.array_equal(sub, full[:len(sub)]), name


@needs_package
def test_official_package_files_pass_the_checksums():
    train_x, train_y, test_x, test_y, k = load_fashion_mnist(PACKAGE)
    assert train_x.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28) and k == 10
    assert train_y.bincount().tolist() == [6000] * 10 and test_y.bincount().tolist() == [1000] * 10


# ------------------------------------------------------------------------------------------ host and episode
def test_reference_host_takes_one_channel_28px():
    model = build_model(KasminaConfig(), (1, 28, 28))
    assert model.host.block0[0].in_channels == 1
    assert [s.probe_shape for s in model.slots] == [(8, 28, 28), (16, 14, 14), (32, 7, 7)]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    params = KasminaConfig().blueprint_params
    for slot in model.slots:
        for bp in BLUEPRINT_IDS:
            h = torch.randn(2, *slot.probe_shape)
            assert create_seed(bp, slot.channels, params.get(bp))(h).shape == h.shape, (bp, slot.name)
    with pytest.raises(ValueError, match="needs 3 input channels, the data has 1"):
        build_host(KasminaConfig(host={"kind": "resnet18"}).host, in_channels=1)


def test_short_episode_on_the_real_subset(subset):
    from esper.simic import EnvConfig, MorphogeneticEnv

    life = LifecycleConfig(min_training_epochs=1, blend_steps=2, shadow_steps=1, probation_steps=1, embargo_steps=1)
    tolaria = TolariaConfig(data=SUBSET_CFG, training=TrainingConfig(device="cpu", batch_size=64, batches_per_step=5))
    env = MorphogeneticEnv(kasmina=KasminaConfig(lifecycle=life), tolaria=tolaria, env=EnvConfig(max_epochs=8),
                           device="cpu")
    env.reset(seed=0)
    env.action_space.seed(0)                                  # sample() draws among the legal actions
    done, steps = False, 0
    while not done:
        action = env.action_space.sample()
        assert env.action_masks()[action]
        _, reward, terminated, truncated, info = env.step(action)
        assert math.isfinite(reward) and 0.0 <= info["val_acc"] <= 1.0
        done, steps = terminated or truncated, steps + 1
    acc = info["esper_episode"].final_test_acc
    assert steps == 8 and math.isfinite(acc) and 0.2 < acc <= 1.0   # chance is 0.1


# ------------------------------------------------------------------------------------------ run config
def test_run_config_sections_validate():
    from esper.simic import SimicConfig

    cfg = yaml.safe_load((ROOT / "configs" / "fashion_mnist.yaml").read_text())
    tolaria, kasmina = TolariaConfig(**cfg["tolaria"]), KasminaConfig(**cfg["kasmina"])
    SimicConfig(**cfg["simic"])
    assert tolaria.data.dataset == "fashion_mnist" and tolaria.data.root == FASHION_PACKAGE_DIR
    assert (tolaria.data.train_size, tolaria.data.val_size, tolaria.data.test_size) == (0, 5000, 10000)
    assert kasmina.host.kind == "cnn" and kasmina.host.num_classes == 10


def test_run_config_loads():
    from esper.config import load_config

    cfg = load_config(ROOT / "configs" / "fashion_mnist.yaml")
    assert cfg.tolaria.data.dataset == "fashion_mnist" and cfg.kasmina.host.kind == "cnn"
