"""Captured steps: on CPU the capture machinery runs with an eager stand-in for CUDA graphs, so the
static-buffer plumbing, the warm-up undo and the recapture rules are checked exactly; on a GPU the
real graphs are compared with the eager path."""
from __future__ import annotations

import copy

import pytest
import torch

from esper.kasmina import GradientCollector, KasminaConfig, build_model
from esper.kasmina.config import LifecycleConfig
from esper.tolaria import TrainingConfig
from esper.tolaria.capture import CapturedStep, EagerRecording, default_recording
from esper.tolaria.training import HostTrainer

SHAPE = (3, 16, 16)


def _pair(seed: int = 0, device: str = "cpu", factory=EagerRecording):
    torch.manual_seed(seed)
    model = build_model(KasminaConfig(lifecycle=LifecycleConfig(min_training_epochs=1, blend_steps=2)), SHAPE).to(device)
    twin = copy.deepcopy(model)
    cfg = TrainingConfig(lr=0.05, seed_lr=0.05, amp=False)
    def trainer(m, capture):
        return HostTrainer(m, cfg, GradientCollector(m, 1e-7, 1e3), capture=capture, recording_factory=factory)
    return (model, trainer(model, False)), (twin, trainer(twin, True))


def _batches(n: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, *SHAPE, generator=g).to(device), torch.randint(0, 10, (8,), generator=g).to(device))
            for _ in range(n)]


def _same(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> None:
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(p.float(), q.float(), atol=atol, rtol=0), n


def _germinate_to_training(model, trainer, slot=1):
    s = model.slots[slot]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        s.germinate("conv_enhance", 0)
    s.tick(0)
    trainer.sync_optimizers()


def _drive(eager, captured, batches, events):
    """Train both trainers on the same batches, applying the same lifecycle event before each chunk."""
    (m1, t1), (m2, t2) = eager, captured
    for event in events:
        for m, t in ((m1, t1), (m2, t2)):
            event(m, t)
        for x, y in batches:
            t1.train_step(x, y)
            t2.train_step(x, y)
        _same(m1, m2)
        assert torch.equal(t1.train_metrics, t2.train_metrics)
        assert torch.equal(t1.collector.device_stats(), t2.collector.device_stats())


def _noop(m, t):
    pass


def _advance(m, t, slot=1):
    s = m.slots[slot]
    s.observe(val_acc=0.5, contribution=0.1, grad_norm=1.0, vanishing=False, exploding=False)
    s.epochs_in_stage = 5
    gate, event = s.advance(0)
    assert gate.passed, gate
    t.sync_optimizers()


def _alpha(m, t, slot=1):
    m.slots[slot].alpha.fill_(0.5)      # blending: a tensor change, no new graph


def _cull(m, t, slot=1):
    m.slots[slot].cull(0, "test")
    t.sync_optimizers()


def test_captured_training_equals_eager_through_lifecycle_events():
    eager, captured = _pair()
    batches = _batches(3)
    _drive(eager, captured, batches, [_noop, _germinate_to_training, _advance, _alpha, _cull])
    # one capture per structure: start, germinated (TRAINING), BLENDING, culled -- not per batch or alpha change
    assert captured[1].captured_train.captures == 4


def test_warmup_leaves_no_trace():
    eager, captured = _pair()
    x, y = _batches(1)[0]
    captured[1].train_step(x, y)        # capture (warm-up + undo) then one replay
    eager[1].train_step(x, y)
    _same(eager[0], captured[0])
    for o1, o2 in zip(eager[1].optimizers(), captured[1].optimizers()):
        for s1, s2 in zip(o1.state.values(), o2.state.values()):
            assert torch.equal(s1["momentum_buffer"], s2["momentum_buffer"])


def test_invalidate_forces_recapture_and_rollback_stays_exact():
    eager, captured = _pair()
    batches = _batches(2)
    _drive(eager, captured, batches, [_noop])
    n = captured[1].captured_train.captures
    captured[1].invalidate()
    _drive(eager, captured, batches, [_noop])
    assert captured[1].captured_train.captures == n + 1


def test_captured_eval_equals_eager_including_counterfactual():
    from esper.tolaria.training import counterfactual

    eager, captured = _pair()
    for m, t in (eager, captured):
        _germinate_to_training(m, t)
    (m1, t1), (m2, t2) = eager, captured
    cfg = t1.cfg
    x, y = torch.randn(cfg.eval_batch_size * 2 + 3, *SHAPE), torch.randint(0, 10, (cfg.eval_batch_size * 2 + 3,))

    class Data:                      # the slice of DeviceData that evaluate() uses
        device = torch.device("cpu")

        def eval_batches(self, split, bs, max_batches=None):
            for i in range(0, len(y), bs):
                yield x[i:i + bs], y[i:i + bs]

    for ctx in (lambda m: torch.enable_grad(), lambda m: counterfactual(m, 1)):
        with ctx(m1):
            a = t1.evaluate(Data())
        with ctx(m2):
            b = t2.evaluate(Data())
        assert torch.equal(a, b)
    assert t2.captured_eval.captures == 2            # plain and counterfactual forward


def test_capture_on_cpu_is_refused_clearly():
    with pytest.raises(ValueError, match="CUDA"):
        default_recording(torch.device("cpu"))
    step = CapturedStep(lambda x, y: None, lambda: (), lambda: [])
    with pytest.raises(ValueError, match="eager path"):
        step(torch.zeros(2), torch.zeros(2))


def test_trainer_captures_only_on_cuda_by_default():
    m = build_model(KasminaConfig(), SHAPE)
    t = HostTrainer(m, TrainingConfig(), GradientCollector(m, 1e-7, 1e3))
    assert t.captured_train is None and t.captured_eval is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_agree_with_eager_after_each_event():
    eager, captured = _pair(device="cuda", factory=default_recording)
    batches = _batches(3, "cuda")
    (m1, t1), (m2, t2) = eager, captured
    for event in (_noop, _germinate_to_training, _advance, _alpha, _cull):
        for m, t in (eager, captured):
            event(m, t)
        for x, y in batches:
            t1.train_step(x, y)
            t2.train_step(x, y)
        torch.cuda.synchronize()
        _same(m1, m2, atol=1e-4)     # fp32 here; the bf16 comparison lives in scripts/bench_gpu.py
    assert t2.captured_train.captures == 4
