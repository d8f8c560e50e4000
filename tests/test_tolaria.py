"""Tolaria: datasets and splits, the device-resident loader, and the host trainer."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from esper.kasmina import GradientCollector, KasminaConfig, build_model
from esper.leyline import SeedStage
from esper.tolaria import (
    BatchStream,
    DataConfig,
    DatasetNotFoundError,
    DeviceData,
    HostTrainer,
    TrainingConfig,
    counterfactual,
    load_splits,
    random_crop_flip,
    summarise,
    synthetic_images,
)
from esper.tolaria.training import CORRECT, COUNT, LOSS

S = SeedStage
CPU = torch.device("cpu")
SMALL = dict(train_size=96, val_size=32, test_size=40, image_size=16)


@pytest.fixture(scope="module")
def splits():
    return load_splits(DataConfig(**SMALL, seed=3))


@pytest.fixture(scope="module")
def data(splits):
    return DeviceData(splits, CPU)


# ------------------------------------------------------------------------------------------ synthetic
def test_synthetic_is_deterministic_from_its_seeds():
    a = synthetic_images(50, task_seed=1, sample_seed=2)
    b = synthetic_images(50, task_seed=1, sample_seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    other_samples = synthetic_images(50, task_seed=1, sample_seed=3)
    other_task = synthetic_images(50, task_seed=9, sample_seed=2)
    assert not torch.equal(a[0], other_samples[0])
    assert not torch.equal(a[0], other_task[0])
    assert torch.equal(a[1], other_task[1])              # labels come from the sample seed alone


def test_synthetic_shapes_and_range():
    x, y = synthetic_images(64, task_seed=0, sample_seed=1)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (64,) and y.dtype == torch.int64
    assert 0 <= int(y.min()) and int(y.max()) <= 9 and len(y.unique()) > 5
    assert x.float().std() > 10                          # not a constant image
    x16, _ = synthetic_images(8, task_seed=0, sample_seed=1, image_size=16, num_classes=4)
    assert x16.shape == (8, 3, 16, 16)


def test_load_splits_synthetic(splits):
    assert splits.train_x.shape == (96, 3, 16, 16) and splits.train_x.dtype == torch.uint8
    assert splits.val_x.shape == (32, 3, 16, 16) and splits.test_x.shape == (40, 3, 16, 16)
    assert splits.train_y.shape == (96,) and splits.val_y.shape == (32,) and splits.test_y.shape == (40,)
    assert splits.num_classes == 10 and splits.input_shape == (3, 16, 16)
    train_idx, val_idx = set(splits.train_index.tolist()), set(splits.val_index.tolist())
    assert len(train_idx) == 96 and len(val_idx) == 32 and not train_idx & val_idx
    assert train_idx | val_idx == set(range(128))        # together they are the pool, each position once
    # the splits really are those pool positions
    pool_x, pool_y = synthetic_images(128, task_seed=3, sample_seed=10, image_size=16)
    assert torch.equal(splits.train_x, pool_x[splits.train_index]) and torch.equal(splits.val_y, pool_y[splits.val_index])
    # test is generated separately and is not a copy of any pool image
    flat_pool = {img.numpy().tobytes() for img in pool_x}
    assert not any(img.numpy().tobytes() in flat_pool for img in splits.test_x)
    # mean/std are the training split's
    xf = splits.train_x.float() / 255
    assert splits.mean == pytest.approx(xf.mean((0, 2, 3)).tolist(), rel=1e-5)
    assert splits.std == pytest.approx(xf.std((0, 2, 3)).tolist(), rel=1e-5)


def test_load_splits_deterministic_and_seed_dependent(splits):
    again = load_splits(DataConfig(**SMALL, seed=3))
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y", "train_index", "val_index"):
        assert torch.equal(getattr(splits, name), getattr(again, name)), name
    other = load_splits(DataConfig(**SMALL, seed=4))
    assert not torch.equal(splits.val_index, other.val_index)
    assert not torch.equal(splits.test_x, other.test_x)


def test_val_size_must_leave_training_data(tmp_path):
    root, _ = _write_cifar(tmp_path, per_batch=8, test_n=8)
    with pytest.raises(ValueError, match="val_size"):
        load_splits(DataConfig(dataset="cifar10", root=str(root), val_size=40))


# ------------------------------------------------------------------------------------------ CIFAR-10
def _write_cifar(root, per_batch=10, test_n=12, seed=0):
    """Files in CIFAR-10's own format: pickled dicts with uint8 'data' (N, 3072) and a 'labels' list."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = test_n if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        entry = {"batch_label": f"batch {i}", "labels": labels, "data": data,
                 "filenames": [f"img_{i}_{j}.png" for j in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        written[name] = (data, labels)
    return root, written


def test_cifar10_reads_the_on_disk_format(tmp_path):
    root, written = _write_cifar(tmp_path)
    splits = load_splits(DataConfig(dataset="cifar10", root=str(root), val_size=32, seed=5))
    assert splits.train_x.shape == (18, 3, 32, 32) and splits.val_x.shape == (32, 3, 32, 32)
    assert splits.test_x.shape == (12, 3, 32, 32) and splits.train_x.dtype == torch.uint8
    assert splits.num_classes == 10
    pool_x = np.concatenate([written[f"data_batch_{k}"][0] for k in range(1, 6)]).reshape(-1, 3, 32, 32)
    pool_y = sum((written[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    assert np.array_equal(splits.train_x.numpy(), pool_x[splits.train_index.numpy()])
    assert splits.val_y.tolist() == [pool_y[i] for i in splits.val_index.tolist()]
    test_data, test_labels = written["test_batch"]
    assert np.array_equal(splits.test_x.numpy(), test_data.reshape(-1, 3, 32, 32))   # CHW row-major
    assert splits.test_y.tolist() == test_labels
    assert set(splits.train_index.tolist()).isdisjoint(splits.val_index.tolist())


def test_cifar10_caps_train_and_test(tmp_path):
    root, _ = _write_cifar(tmp_path, per_batch=30, test_n=50)
    splits = load_splits(DataConfig(dataset="cifar10", root=str(root), val_size=32, train_size=64, test_size=40))
    assert len(splits.train_y) == 64 and len(splits.val_y) == 32 and len(splits.test_y) == 40
    everything = load_splits(DataConfig(dataset="cifar10", root=str(root), val_size=32, train_size=0))
    assert len(everything.train_y) == 150 - 32          # train_size=0: the whole remaining pool


def test_cifar10_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_splits(DataConfig(dataset="cifar10", root=str(tmp_path / "nowhere")))
    msg = str(info.value)
    assert "download" in msg and "cifar-10-batches-py" in msg and "data_batch_1" in msg
    assert isinstance(info.value, FileNotFoundError)
    # a partial copy names what is missing
    root, _ = _write_cifar(tmp_path / "partial")
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError, match="test_batch"):
        load_splits(DataConfig(dataset="cifar10", root=str(root), val_size=32))


def test_cifar10_without_root_is_a_clear_error():
    with pytest.raises(ValueError, match="root"):
        load_splits(DataConfig(dataset="cifar10"))


# ------------------------------------------------------------------------------------------ image folder
def _write_image_folder(root, classes=("cat", "dog", "eel"), n_train=12, n_test=3, size=10):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_image_folder(tmp_path):
    root = _write_image_folder(tmp_path)
    splits = load_splits(DataConfig(dataset="image_folder", root=str(root), image_size=16, val_size=32))
    assert splits.num_classes == 3
    assert splits.train_x.shape == (4, 3, 16, 16) and splits.val_x.shape == (32, 3, 16, 16)
    assert splits.test_x.shape == (9, 3, 16, 16) and splits.test_x.dtype == torch.uint8
    assert sorted(splits.test_y.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    labels = torch.cat([splits.train_y, splits.val_y])
    assert torch.bincount(labels).tolist() == [12, 12, 12]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train"):
        load_splits(DataConfig(dataset="image_folder", root=str(tmp_path), val_size=32))
    with pytest.raises(ValueError, match="root"):
        load_splits(DataConfig(dataset="image_folder"))
    root = _write_image_folder(tmp_path / "x")
    (root / "test" / "eel").rename(root / "test" / "emu")
    with pytest.raises(ValueError, match="classes"):
        load_splits(DataConfig(dataset="image_folder", root=str(root), val_size=32))


# ------------------------------------------------------------------------------------------ loader
def test_device_data_normalizes_with_train_stats(splits, data):
    x = data.normalize(data.train_x)
    assert x.dtype == torch.float32 and x.shape == splits.train_x.shape
    assert x.mean((0, 2, 3)).abs().max() < 1e-4
    assert (x.std((0, 2, 3)) - 1).abs().max() < 1e-3
    expected = (splits.val_x[:2].float() / 255 - torch.tensor(splits.mean).view(1, 3, 1, 1)) \
        / torch.tensor(splits.std).view(1, 3, 1, 1)
    assert torch.allclose(data.normalize(data.val_x[:2]), expected, atol=1e-6)
    assert data.train_x.dtype == torch.uint8                # stays uint8 on the device


def test_eval_batches_cover_the_split_in_order(data):
    xs, ys = zip(*data.eval_batches("val", 10))
    assert [len(y) for y in ys] == [10, 10, 10, 2]
    assert torch.equal(torch.cat(ys), data.val_y)
    assert torch.allclose(torch.cat(xs), data.normalize(data.val_x))
    assert len(list(data.eval_batches("test", 10, max_batches=2))) == 2


def _draw(stream, k):
    return [stream.next() for _ in range(k)]


def test_batch_stream_deterministic_and_fixed_shape(data):
    a = _draw(BatchStream(data, 16, seed=7, augment=True), 8)
    b = _draw(BatchStream(data, 16, seed=7, augment=True), 8)
    c = _draw(BatchStream(data, 16, seed=8, augment=True), 8)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert any(not torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))
    assert all(x.shape == (16, 3, 16, 16) and y.shape == (16,) for x, y in a + c)
    stream = BatchStream(data, 16, seed=7, augment=True)
    _draw(stream, 3)
    stream.reseed(7)
    assert torch.equal(stream.next()[0], a[0][0])


def test_batch_stream_epoch_is_a_permutation(data):
    n = len(data.train_y)                                 # 96
    stream = BatchStream(data, 20, seed=0, augment=False)
    assert stream.batches_per_epoch == n // 20 == 4      # the last partial batch is dropped
    train_rows = {row.numpy().tobytes(): i for i, row in enumerate(data.normalize(data.train_x))}
    assert len(train_rows) == n
    for _epoch in range(2):
        seen = []
        for _ in range(stream.batches_per_epoch):
            x, y = stream.next()
            idx = [train_rows[row.numpy().tobytes()] for row in x]
            assert torch.equal(y, data.train_y[idx])
            seen += idx
        assert len(seen) == len(set(seen)) == 80         # no index twice within an epoch
    with pytest.raises(ValueError, match="batch_size"):
        BatchStream(data, n + 1, seed=0, augment=False)


def test_random_crop_flip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    a = random_crop_flip(x, torch.Generator().manual_seed(0))
    b = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    outs = [random_crop_flip(x, torch.Generator().manual_seed(s)) for s in range(1, 6)]
    assert any(not torch.equal(a, o) for o in outs)
    # pad 0: only flips, each sample either unchanged or mirrored
    g = torch.Generator().manual_seed(3)
    big = torch.randn(32, 3, 8, 8)
    out = random_crop_flip(big, g, pad=0)
    same = [(torch.equal(o, i), torch.equal(o, i.flip(2))) for o, i in zip(out, big)]
    assert all(s or f for s, f in same) and any(s for s, _ in same) and any(f for _, f in same)
    # every output value comes from the input or from the zero padding
    vals = set(x.flatten().tolist()) | {0.0}
    assert set(a.flatten().tolist()) <= vals


# ------------------------------------------------------------------------------------------ trainer
def _trainer(model, **cfg):
    tcfg = TrainingConfig(device="cpu", batch_size=16, eval_batch_size=13, **cfg)
    return HostTrainer(model, tcfg, GradientCollector(model, 1e-7, 1e3))


def _model(data):
    torch.manual_seed(0)
    return build_model(KasminaConfig(), data.input_shape)


def test_train_step_reduces_loss_and_counts(data):
    model = _model(data)
    trainer = _trainer(model, lr=0.05)
    x, y = BatchStream(data, 16, seed=0, augment=False).next()
    with torch.no_grad():
        model.eval()
        start = float(torch.nn.functional.cross_entropy(model(x), y))
    for _ in range(15):
        trainer.train_step(x, y)
    model.eval()
    with torch.no_grad():
        end = float(torch.nn.functional.cross_entropy(model(x), y))
    assert end < start * 0.7
    acc = trainer.train_metrics.tolist()
    assert acc[COUNT] == 15 * 16 and 0 <= acc[CORRECT] <= acc[COUNT]
    mean_loss, accuracy = summarise(acc)
    assert 0 < mean_loss < 5 and 0 <= accuracy <= 1
    assert trainer.collector.batches == 15


def test_train_step_metrics_match_a_manual_computation(data):
    model = _model(data)
    trainer = _trainer(model)
    x, y = BatchStream(data, 16, seed=1, augment=False).next()
    ref = _model(data)
    ref.train()
    logits = ref(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    trainer.train_step(x, y)
    acc = trainer.train_metrics
    assert acc[LOSS].item() == pytest.approx(loss.item() * 16, rel=1e-5)
    assert acc[CORRECT].item() == (logits.argmax(1) == y).sum().item()


def test_evaluate_returns_sums_over_the_split(data):
    model = _model(data)
    trainer = _trainer(model)
    out = trainer.evaluate(data, "val")
    loss_sum, correct, n = out.tolist()
    assert n == len(data.val_y) == 32
    model.eval()
    with torch.no_grad():
        logits = model(data.normalize(data.val_x))
    assert loss_sum == pytest.approx(float(torch.nn.functional.cross_entropy(logits, data.val_y, reduction="sum")),
                                     rel=1e-5)
    assert correct == int((logits.argmax(1) == data.val_y).sum())
    assert trainer.evaluate(data, "test")[COUNT].item() == 40
    acc = torch.zeros(3)
    trainer.evaluate(data, "val", out=acc)
    trainer.evaluate(data, "val", out=acc)
    assert acc.tolist() == pytest.approx([2 * loss_sum, 2 * correct, 2 * n], rel=1e-5)
    assert trainer.evaluate(data, "val", max_batches=1)[COUNT].item() == 13


def _walk(slot, to, blueprint="conv_enhance"):
    """Drive a slot forward through the FSM with healthy observations (as the environment would) until `to`."""
    if slot.stage is S.DORMANT:
        assert slot.germinate(blueprint, 0)[0].passed
    for _ in range(50):
        if slot.stage is to:
            return
        slot.observe(val_acc=0.5, contribution=0.02, grad_norm=1.0, vanishing=False, exploding=False)
        if slot.stage in (S.TRAINING, S.SHADOWING, S.PROBATIONARY) and slot.advance(0)[1] is not None:
            continue
        slot.tick(0)
    raise AssertionError(f"slot stuck in {slot.stage.name}")


def test_sync_optimizers_follow_the_lifecycle(data):
    model = _model(data)
    trainer = _trainer(model, seed_lr=0.01)
    host_ids = {id(p) for p in model.host.parameters()}
    opt_ids = lambda opt: {id(p) for g in opt.param_groups for p in g["params"]}  # noqa: E731
    assert opt_ids(trainer.host_opt) == host_ids and trainer.seed_opts == {}
    x, y = BatchStream(data, 16, seed=0, augment=False).next()

    # germinate -> a seed optimizer of its own, at seed_lr, that steps the seed
    _walk(model.slots[1], S.TRAINING)
    trainer.sync_optimizers()
    assert list(trainer.seed_opts) == [1]
    seed_params = list(model.slots[1].seed.parameters())
    assert opt_ids(trainer.seed_opts[1]) == {id(p) for p in seed_params}
    assert trainer.seed_opts[1].param_groups[0]["lr"] == 0.01
    before = [p.detach().clone() for p in seed_params]
    trainer.train_step(x, y)
    assert any(not torch.equal(a, b) for a, b in zip(before, seed_params))

    # fossilize -> the fossil's parameters move into the host optimizer, the seed optimizer goes
    _walk(model.slots[1], S.FOSSILIZED)
    trainer.sync_optimizers()
    assert trainer.seed_opts == {}
    assert opt_ids(trainer.host_opt) == host_ids | {id(p) for p in seed_params}
    assert trainer.host_opt.param_groups[-1]["lr"] == trainer.cfg.lr
    before = [p.detach().clone() for p in seed_params]
    trainer.train_step(x, y)
    assert any(not torch.equal(a, b) for a, b in zip(before, seed_params))   # the host optimizer trains it

    # cull -> the seed optimizer is dropped and nothing joins the host's
    _walk(model.slots[2], S.TRAINING, "norm")
    trainer.sync_optimizers()
    assert list(trainer.seed_opts) == [2]
    model.slots[2].cull(0, "test")
    trainer.sync_optimizers()
    assert trainer.seed_opts == {}
    assert opt_ids(trainer.host_opt) == host_ids | {id(p) for p in seed_params}

    # a new seed in the same slot gets a fresh optimizer
    model.slots[1].tick(0)                                # FOSSILIZED -> DORMANT
    _walk(model.slots[1], S.TRAINING, "depthwise")
    trainer.sync_optimizers()
    assert opt_ids(trainer.seed_opts[1]) == {id(p) for p in model.slots[1].seed.parameters()}

    trainer.reset()
    assert trainer.seed_opts == {} and not trainer.train_metrics.any()


def test_counterfactual_context_restores_the_flag(data):
    model = _model(data)
    _walk(model.slots[0], S.TRAINING)
    with counterfactual(model, 0):
        assert model.slots[0].counterfactual
    assert not model.slots[0].counterfactual
    with pytest.raises(RuntimeError):
        with counterfactual(model, 0):
            raise RuntimeError("boom")
    assert not model.slots[0].counterfactual
