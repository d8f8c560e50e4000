"""Kasmina: blueprints, the SeedSlot state machine and its gates, gradient isolation, grafting,
device/dtype placement, the gradient collector, and capture safety of the training step."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esper.kasmina import (
    CATALOG,
    GradientCollector,
    GradientIsolationMonitor,
    HostCNN,
    HostConfig,
    KasminaConfig,
    LifecycleConfig,
    MorphogeneticModel,
    SeedSlot,
    UnknownBlueprintError,
    build_model,
    create_seed,
    get_blueprint,
    param_count,
    resolve_device,
)
from esper.leyline import BLUEPRINT_IDS, GateResult, IllegalTransitionError, SeedEvent, SeedStage

S = SeedStage
SHAPE = (3, 16, 16)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Non-default shape settings per blueprint (the channel counts below are multiples of 4).
CUSTOM_PARAMS = {
    "norm": {"groups": 4},
    "attention": {"reduction": 2},
    "depthwise": {"kernel_size": 5},
    "conv_enhance": {"kernel_size": 5, "width_multiplier": 0.5},
}


# ------------------------------------------------------------------------------------------ helpers
def make_model(shape=SHAPE, **cfg) -> MorphogeneticModel:
    torch.manual_seed(0)
    return build_model(KasminaConfig(**cfg), shape)


def batch(shape=SHAPE, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g), torch.randint(0, 10, (n,), generator=g)


def healthy(slot: SeedSlot, *, val_acc=0.5, contribution=0.02, grad_norm=1.0) -> None:
    slot.observe(val_acc=val_acc, contribution=contribution, grad_norm=grad_norm, vanishing=False, exploding=False)


def drive(slot: SeedSlot, target: SeedStage, blueprint="conv_enhance") -> None:
    """Walk a DORMANT slot through the FSM (the way the environment does) until it reaches `target`."""
    cfg, epoch = slot.lifecycle, 0
    gate, event = slot.germinate(blueprint, epoch)
    assert gate.passed and slot.stage is S.GERMINATED
    if target is S.GERMINATED:
        return
    slot.tick(epoch)
    assert slot.stage is S.TRAINING
    if target is S.TRAINING:
        return
    for _ in range(cfg.min_training_epochs):
        healthy(slot)
        slot.tick(epoch)
    gate, _ = slot.advance(epoch)
    assert gate.passed and slot.stage is S.BLENDING, gate
    if target is S.BLENDING:
        slot.tick(epoch)                       # alpha = 1 / blend_steps > 0
        assert 0.0 < float(slot.alpha) < 1.0
        return
    while slot.stage is S.BLENDING:
        healthy(slot)
        slot.tick(epoch)
    assert slot.stage is S.SHADOWING and float(slot.alpha) == 1.0
    if target is S.SHADOWING:
        return
    for _ in range(cfg.shadow_steps):
        healthy(slot)
        slot.tick(epoch)
    gate, _ = slot.advance(epoch)
    assert gate.passed and slot.stage is S.PROBATIONARY, gate
    if target is S.PROBATIONARY:
        return
    for _ in range(cfg.probation_steps):
        healthy(slot)
        slot.tick(epoch)
    gate, _ = slot.advance(epoch)
    assert gate.passed and slot.stage is S.FOSSILIZED, gate
    assert target is S.FOSSILIZED


def perturb(module: nn.Module, seed=0, scale=0.1) -> None:
    """Make a near-identity seed do something: give its zero-initialised parameters random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))


def host_grads(model: nn.Module) -> list[torch.Tensor]:
    host = model.host if isinstance(model, MorphogeneticModel) else model
    return [p.grad.clone() for p in host.parameters()]


def loss_and_backward(model, x, y):
    out = model(x)
    F.cross_entropy(out, y).backward()
    return out.detach()


def seed_grad_norm(slot: SeedSlot) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in slot.seed.parameters()
                                                       if p.grad is not None])))


def standalone_slot(channels=8, **lifecycle) -> SeedSlot:
    torch.manual_seed(0)
    return SeedSlot(0, "s", channels, (channels, 4, 4), LifecycleConfig(**lifecycle))


# ------------------------------------------------------------------------------------------ blueprints
def test_catalog_matches_leyline():
    assert tuple(CATALOG) == BLUEPRINT_IDS
    for bp_id in BLUEPRINT_IDS:
        assert get_blueprint(bp_id).id == bp_id


@pytest.mark.parametrize("bp_id", BLUEPRINT_IDS)
@pytest.mark.parametrize("channels", [4, 8, 12, 32])
@pytest.mark.parametrize("custom", [False, True], ids=["default", "custom"])
def test_blueprint_builds_and_starts_at_zero(bp_id, channels, custom):
    params = CUSTOM_PARAMS[bp_id] if custom else None
    torch.manual_seed(channels)
    seed = create_seed(bp_id, channels, params)
    h = torch.randn(3, channels, 6, 10)
    for mode in (True, False):
        seed.train(mode)
        out = seed(h)
        assert out.shape == h.shape
        assert torch.count_nonzero(out) == 0, f"{bp_id} does not start as an exact identity residual"
    assert param_count(bp_id, channels, params) == sum(p.numel() for p in seed.parameters()) > 0


def test_blueprint_shape_settings_take_effect():
    c, k, w = 8, 5, 0.5
    seed = create_seed("conv_enhance", c, {"kernel_size": k, "width_multiplier": w})
    hidden = round(c * w)
    convs = [m for m in seed.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(m.weight.shape) for m in convs] == [(hidden, c, k, k), (c, hidden, k, k)]
    assert param_count("conv_enhance", c, {"kernel_size": k, "width_multiplier": w}) == \
        c * hidden * k * k + 2 * hidden + hidden * c * k * k + c
    dw = [m for m in create_seed("depthwise", c, {"kernel_size": 5}).modules() if isinstance(m, nn.Conv2d)]
    assert dw[0].kernel_size == (5, 5) and dw[0].groups == c
    assert create_seed("norm", c, {"groups": 4}).norm.num_groups == 4
    assert create_seed("attention", c, {"reduction": 2}).fc1.out_channels == 4


def test_unknown_blueprint_lists_known_ones():
    for call in (lambda: create_seed("resnext", 8), lambda: get_blueprint("resnext"),
                 lambda: param_count("resnext", 8)):
        with pytest.raises(UnknownBlueprintError) as info:
            call()
        msg = str(info.value)
        assert "resnext" in msg and all(b in msg for b in BLUEPRINT_IDS)
        assert not msg.startswith('"')        # not KeyError's quoted repr
        assert isinstance(info.value, KeyError)


@pytest.mark.parametrize(("bp_id", "params", "match"), [
    ("conv_enhance", {"kernel_size": 4}, "kernel_size"),
    ("conv_enhance", {"kernel_size": 0}, "kernel_size"),
    ("conv_enhance", {"kernel_size": 3.0}, "kernel_size"),
    ("conv_enhance", {"width_multiplier": 0}, "width_multiplier"),
    ("conv_enhance", {"width_multiplier": -1.5}, "width_multiplier"),
    ("depthwise", {"kernel_size": 2}, "kernel_size"),
    ("norm", {"groups": 3}, "groups"),
    ("norm", {"groups": 0}, "groups"),
    ("attention", {"reduction": 0}, "reduction"),
    ("attention", {"reduction": -2}, "reduction"),
    ("norm", {"group": 2}, "group"),
    ("depthwise", {"width_multiplier": 2.0}, "kernel_size"),   # lists the settings it does have
])
def test_bad_shape_settings_are_clear_errors(bp_id, params, match):
    with pytest.raises(ValueError, match=match) as info:
        create_seed(bp_id, 8, params)
    assert bp_id in str(info.value)


def test_graft_refuses_blueprint_params_that_do_not_fit_the_host():
    with pytest.raises(ValueError, match=r"blueprint_params\.norm.*block0.*8 channels"):
        make_model(blueprint_params={"norm": {"groups": 3}})
    make_model(blueprint_params={"norm": {"groups": 8}})       # divides 8, 16 and 32


# ------------------------------------------------------------------------------------------ state machine
def test_germinate_then_tick_reaches_training():
    slot = standalone_slot()
    gate, event = slot.germinate("norm", epoch=3)
    assert isinstance(gate, GateResult) and gate.gate == "G0" and gate.passed
    assert isinstance(event, SeedEvent)
    assert (event.from_stage, event.to_stage, event.epoch, event.blueprint) == ("DORMANT", "GERMINATED", 3, "norm")
    assert slot.stage is S.GERMINATED and slot.seed is not None and slot.blueprint == "norm"
    assert slot.is_live and slot.seed_param_count() == param_count("norm", 8)
    moves = slot.tick(epoch=3)
    assert len(moves) == 1
    event, gate = moves[0]
    assert gate.gate == "G1" and gate.passed and all(gate.checks.values())
    assert (event.from_stage, event.to_stage) == ("GERMINATED", "TRAINING")
    assert slot.stage is S.TRAINING and slot.epochs_in_stage == 0 and float(slot.alpha) == 0.0
    assert slot.last_gate is gate


def test_germinate_refused_by_g0():
    slot = standalone_slot()
    gate, event = slot.germinate("nope", 0)
    assert not gate.passed and event is None and slot.stage is S.DORMANT and slot.seed is None
    assert gate.checks["blueprint_exists"] is False and "blueprint_exists" in gate.reason
    slot.germinate("norm", 0)
    gate, event = slot.germinate("attention", 0)
    assert not gate.passed and event is None
    assert gate.checks == {"blueprint_exists": True, "slot_free": False, "no_embargo": True}
    assert slot.blueprint == "norm" and slot.stage is S.GERMINATED


def test_g1_culls_a_seed_with_nonfinite_output():
    slot = standalone_slot()
    slot.germinate("norm", 0)
    with torch.no_grad():
        slot.seed.scale.fill_(float("nan"))
    [(event, gate)] = slot.tick(1)
    assert gate.gate == "G1" and not gate.passed and gate.checks["output_finite"] is False
    assert event.to_stage == "CULLED" and slot.stage is S.CULLED and slot.seed is None


def _training_slot(**lifecycle) -> SeedSlot:
    slot = standalone_slot(**lifecycle)
    slot.germinate("conv_enhance", 0)
    slot.tick(0)
    return slot


def _assert_refused(slot, stage, gate, gate_name, failed):
    assert isinstance(gate, GateResult) and gate.gate == gate_name and not gate.passed
    assert slot.stage is stage, "a failed gate must leave the seed where it is"
    assert slot.last_gate is gate
    assert {k for k, ok in gate.checks.items() if not ok} == set(failed)
    for name in failed:
        assert name in gate.reason
    assert gate.values, "a gate reports the values it saw"


def test_g2_min_epochs_and_missing_contribution():
    slot = _training_slot(min_training_epochs=2)
    healthy(slot)
    gate, event = slot.advance(0)
    assert event is None
    _assert_refused(slot, S.TRAINING, gate, "G2", ["min_epochs"])
    assert gate.values["epochs_in_stage"] == 0.0
    slot.tick(0)
    slot.tick(1)
    slot.observe(val_acc=0.5, contribution=None, grad_norm=1.0, vanishing=False, exploding=False)
    gate, _ = slot.advance(2)
    _assert_refused(slot, S.TRAINING, gate, "G2", ["preview_measured"])


def test_g2_accepts_a_pessimistic_preview():
    """A negative full-strength preview does not block blending (G3/G4 judge the seed once blended)."""
    slot = _training_slot()
    for _ in range(2):
        slot.tick(0)
    slot.observe(val_acc=0.5, contribution=-0.2, grad_norm=1.0, vanishing=False, exploding=False)
    gate, event = slot.advance(2)
    assert gate.passed and event is not None and slot.stage is S.BLENDING


@pytest.mark.parametrize(("contribution", "grad_norm", "failed"), [
    (float("nan"), 1.0, ["preview_measured"]),              # a non-finite preview
    (0.01, 0.0, ["gradients_healthy"]),                     # vanishing
    (0.01, 1e6, ["gradients_healthy"]),                     # exploding
    (0.01, float("nan"), ["gradients_healthy"]),            # non-finite
    (float("inf"), float("inf"), ["preview_measured", "gradients_healthy"]),
])
def test_g2_refuses_unmeasured_or_unhealthy(contribution, grad_norm, failed):
    slot = _training_slot()
    for _ in range(2):
        slot.tick(0)
    slot.observe(val_acc=0.5, contribution=contribution, grad_norm=grad_norm, vanishing=False, exploding=False)
    gate, event = slot.advance(2)
    assert event is None
    _assert_refused(slot, S.TRAINING, gate, "G2", failed)
    assert gate.values["contribution"] == contribution or math.isnan(contribution)
    healthy(slot)                                           # recovers: the next advance passes
    gate, event = slot.advance(3)
    assert gate.passed and event.to_stage == "BLENDING" and slot.stage is S.BLENDING


def test_blending_ramp_and_g3_regression():
    slot = _training_slot(blend_steps=3, max_regression=0.05)
    for _ in range(2):
        healthy(slot, val_acc=0.6)
        slot.tick(0)
    slot.advance(0)
    assert slot.stage is S.BLENDING and float(slot.alpha) == 0.0 and slot.val_acc_at_stage_entry == 0.6
    alphas = []
    for _ in range(3):
        healthy(slot, val_acc=0.4)                          # regressed by 0.2 since blending began
        assert slot.tick(1) == []
        alphas.append(float(slot.alpha))
    assert alphas == pytest.approx([1 / 3, 2 / 3, 1.0])
    gate = slot.last_gate
    _assert_refused(slot, S.BLENDING, gate, "G3", ["no_regression"])
    assert gate.values["alpha"] == 1.0 and gate.values["val_acc"] == 0.4
    healthy(slot, val_acc=0.58)
    [(event, gate)] = slot.tick(2)
    assert gate.gate == "G3" and gate.passed and event.to_stage == "SHADOWING" and slot.stage is S.SHADOWING
    assert float(slot.alpha) == 1.0


def test_g4_shadow_steps_and_threshold():
    slot = standalone_slot(shadow_steps=2, contribution_threshold=0.01)
    drive(slot, S.SHADOWING)
    gate, event = slot.advance(0)
    assert event is None
    _assert_refused(slot, S.SHADOWING, gate, "G4", ["enough_shadow_steps", "contribution_above_threshold"])
    healthy(slot, contribution=0.05)
    gate, _ = slot.advance(0)
    _assert_refused(slot, S.SHADOWING, gate, "G4", ["enough_shadow_steps"])
    healthy(slot, contribution=0.0)                         # below the threshold
    gate, _ = slot.advance(0)
    _assert_refused(slot, S.SHADOWING, gate, "G4", ["contribution_above_threshold"])
    assert gate.values["min_recent_contribution"] == 0.0 and gate.values["threshold"] == 0.01
    healthy(slot, contribution=0.03)                        # the last two: 0.0, 0.03 -> still refused
    assert not slot.advance(0)[0].passed
    healthy(slot, contribution=0.02)                        # the last two: 0.03, 0.02
    gate, event = slot.advance(0)
    assert gate.passed and event.to_stage == "PROBATIONARY" and slot.stage is S.PROBATIONARY


@pytest.mark.parametrize(("obs", "failed"), [
    ({"contribution": -0.01}, ["still_contributing"]),
    ({"contribution": None}, ["still_contributing"]),
    ({"val_acc": 0.3}, ["no_regression"]),
    ({"grad_norm": float("nan")}, ["gradients_healthy"]),
])
def test_g5_probation_and_contribution(obs, failed):
    slot = standalone_slot(probation_steps=2)
    drive(slot, S.PROBATIONARY)
    gate, event = slot.advance(0)
    assert event is None
    _assert_refused(slot, S.PROBATIONARY, gate, "G5", ["probation_served"])
    kw = {"val_acc": 0.5, "contribution": 0.02, "grad_norm": 1.0} | obs
    for _ in range(2):
        slot.tick(0)
    slot.observe(vanishing=False, exploding=False, **kw)
    gate, event = slot.advance(0)
    assert event is None
    _assert_refused(slot, S.PROBATIONARY, gate, "G5", failed)


def test_fossilize_frees_the_slot_and_keeps_the_fossil():
    slot = standalone_slot()
    drive(slot, S.FOSSILIZED)
    seed_params = slot.fossil_param_count()
    assert slot.seed is None and len(slot.fossils) == 1 and seed_params == param_count("conv_enhance", 8)
    assert float(slot.alpha) == 0.0 and not slot.is_live
    [(event, gate)] = slot.tick(0)
    assert event.to_stage == "DORMANT" and gate is None and slot.stage is S.DORMANT and slot.blueprint is None
    gate, _ = slot.germinate("norm", 1)                     # free for a new seed
    assert gate.passed and len(slot.fossils) == 1
    slot.reset()
    assert len(slot.fossils) == 0 and slot.stage is S.DORMANT and slot.seed is None


def test_cull_embargo_reset_cycle():
    slot = standalone_slot(embargo_steps=3)
    drive(slot, S.TRAINING)
    event = slot.cull(5, "governor: loss diverged")
    assert (event.from_stage, event.to_stage, event.reason) == ("TRAINING", "CULLED", "governor: loss diverged")
    assert slot.stage is S.CULLED and slot.seed is None and not slot.is_live
    [(event, _)] = slot.tick(5)
    assert slot.stage is S.EMBARGOED and slot.embargo_left == 3
    gate, ev = slot.germinate("norm", 6)
    assert not gate.passed and ev is None and gate.checks["no_embargo"] is False and gate.checks["slot_free"] is False
    stages = []
    for epoch in range(6, 10):
        slot.tick(epoch)
        stages.append(slot.stage)
    assert stages == [S.EMBARGOED, S.EMBARGOED, S.RESETTING, S.DORMANT]
    assert slot.embargo_left == 0 and slot.blueprint is None
    assert slot.germinate("norm", 10)[0].passed


@pytest.mark.parametrize("stage", [S.DORMANT, S.GERMINATED, S.BLENDING, S.FOSSILIZED, S.CULLED])
def test_advance_from_illegal_stage_raises(stage):
    slot = standalone_slot()
    if stage is S.CULLED:
        drive(slot, S.TRAINING)
        slot.cull(0, "test")
    elif stage is not S.DORMANT:
        drive(slot, stage)
    assert slot.stage is stage
    with pytest.raises(IllegalTransitionError, match=stage.name):
        slot.advance(0)
    assert slot.stage is stage


def test_cull_from_dormant_is_illegal():
    slot = standalone_slot()
    with pytest.raises(IllegalTransitionError, match="DORMANT -> CULLED"):
        slot.cull(0, "nothing to cull")


def test_graph_version_bumps_on_every_move():
    slot = standalone_slot()
    versions = [slot.graph_version]
    slot.germinate("norm", 0)
    versions.append(slot.graph_version)
    slot.tick(0)
    versions.append(slot.graph_version)
    healthy(slot)
    slot.tick(0)                                            # no move: unchanged
    versions.append(slot.graph_version)
    assert versions == [0, 1, 2, 2]


# ------------------------------------------------------------------------------------------ isolation
@pytest.mark.parametrize("slot_index", [0, 1, 2])
@pytest.mark.parametrize("bp_id", BLUEPRINT_IDS)
def test_training_isolation_exact(slot_index, bp_id):
    model = make_model()
    ref = copy.deepcopy(model)                             # the host alone (no seed ever planted)
    drive(model.slots[slot_index], S.TRAINING, bp_id)
    perturb(model.slots[slot_index].seed, seed=slot_index)  # a seed that actually changes h
    x, y = batch()
    out = loss_and_backward(model, x, y)
    ref_out = loss_and_backward(ref, x, y)
    assert torch.equal(out, ref_out)
    for a, b in zip(host_grads(model), host_grads(ref)):
        assert torch.equal(a, b)
    assert seed_grad_norm(model.slots[slot_index]) > 0
    model.eval(), ref.eval()
    assert torch.equal(model(x), ref(x))


def test_training_isolation_survives_a_nan_seed():
    model = make_model()
    ref = copy.deepcopy(model)
    slot = model.slots[1]
    drive(slot, S.TRAINING)
    with torch.no_grad():
        for p in slot.seed.parameters():
            p.fill_(float("nan"))
    x, y = batch()
    out = loss_and_backward(model, x, y)
    assert torch.isfinite(out).all() and torch.equal(out, loss_and_backward(ref, x, y))
    for a, b in zip(host_grads(model), host_grads(ref)):
        assert torch.isfinite(a).all() and torch.equal(a, b)


def test_blending_trains_host_and_seed_together():
    model = make_model()
    ref = copy.deepcopy(model)
    slot = model.slots[1]
    drive(slot, S.TRAINING)
    for _ in range(2):
        healthy(slot)
        slot.tick(0)
    slot.advance(0)
    assert slot.stage is S.BLENDING and float(slot.alpha) == 0.0
    x, y = batch()
    assert torch.equal(model(x), ref(x))                   # alpha = 0 and a zero-init seed: still the host
    slot.tick(1)
    perturb(slot.seed)
    out = loss_and_backward(model, x, y)
    ref_out = loss_and_backward(ref, x, y)
    assert not torch.allclose(out, ref_out)
    grads, ref_grads = host_grads(model), host_grads(ref)
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(not torch.allclose(a, b) for a, b in zip(grads, ref_grads))  # the seed reaches the host
    assert seed_grad_norm(slot) > 0


def test_isolation_monitor_training_vs_blending():
    model = make_model()
    drive(model.slots[0], S.TRAINING, "depthwise")
    drive(model.slots[2], S.TRAINING, "attention")
    perturb(model.slots[0].seed)
    perturb(model.slots[2].seed, seed=1)
    x, y = batch()
    with GradientIsolationMonitor(model, x, F.cross_entropy, y) as mon:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
    assert mon.max_host_deviation == 0.0
    assert set(mon.seed_grad_norms) == {"block0", "block2"} and all(v > 0 for v in mon.seed_grad_norms.values())

    blend = make_model()
    drive(blend.slots[1], S.BLENDING)
    perturb(blend.slots[1].seed)
    with GradientIsolationMonitor(blend, x, F.cross_entropy, y) as mon:
        blend.zero_grad()
        F.cross_entropy(blend(x), y).backward()
    assert mon.max_host_deviation > 0
    assert mon.seed_grad_norms["block1"] > 0
    assert not any(s.bypass_live_seed for s in blend.slots)   # restored after the host-only pass


def test_counterfactual_flag_inverts_the_seed():
    model = make_model()
    ref = copy.deepcopy(model)
    model.eval(), ref.eval()
    x, _ = batch()
    train_slot, blend_slot = model.slots[0], model.slots[1]
    drive(train_slot, S.TRAINING)
    perturb(train_slot.seed)
    train_slot.counterfactual = True                       # TRAINING: "what if it were fully blended"
    assert not torch.allclose(model(x), ref(x))
    train_slot.counterfactual = False
    assert torch.equal(model(x), ref(x))
    drive(blend_slot, S.SHADOWING)
    perturb(blend_slot.seed, seed=3)
    assert not torch.allclose(model(x), ref(x))
    blend_slot.counterfactual = True                       # active: "what if it were absent"
    assert torch.equal(model(x), ref(x))


# ------------------------------------------------------------------------------------------ grafting
def test_reference_host_slots_infer_channels():
    model = make_model(slots=["block0", "block1", "block2"])
    assert [s.channels for s in model.slots] == [8, 16, 32]
    assert [s.probe_shape for s in model.slots] == [(8, 16, 16), (16, 8, 8), (32, 4, 4)]
    assert [s.name for s in model.slots] == ["block0", "block1", "block2"]
    wide = build_model(KasminaConfig(host=HostConfig(widths=(4, 12, 20))), (3, 32, 32))
    assert [s.channels for s in wide.slots] == [4, 12, 20]
    # the host's own state_dict keys are untouched by grafting
    assert list(model.host.state_dict()) == list(HostCNN().state_dict())
    assert model.host_param_count == sum(p.numel() for p in HostCNN().parameters())


def test_several_live_seeds_forward_backward():
    model = make_model()
    for slot, bp, stage in zip(model.slots, ["conv_enhance", "depthwise", "norm"], [S.TRAINING, S.BLENDING, S.SHADOWING]):
        drive(slot, stage, bp)
        perturb(slot.seed)
    x, y = batch()
    out = loss_and_backward(model, x, y)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert model.params_added() == sum(param_count(bp, c) for bp, c in
                                       [("conv_enhance", 8), ("depthwise", 16), ("norm", 32)])
    assert all(model.seed_parameters(i) for i in range(3))
    assert all(seed_grad_norm(s) > 0 for s in model.slots)


def test_resnet18_host():
    model = build_model(KasminaConfig(host=HostConfig(kind="resnet18"),
                                      slots=["layer1", "layer2", "layer3", "layer4"]), (3, 32, 32))
    assert [s.channels for s in model.slots] == [64, 128, 256, 512]
    for slot, bp, stage in zip(model.slots, ["conv_enhance", "attention", "norm", "depthwise"],
                               [S.TRAINING, S.BLENDING, S.TRAINING, S.TRAINING]):
        drive(slot, stage, bp)
    perturb(model.slots[1].seed)
    slot = model.slots[0]
    assert slot.seed is not None and slot.seed[0].weight.shape[1] == 64
    x, y = batch((3, 32, 32), n=2)
    out = loss_and_backward(model, x, y)
    assert out.shape == (2, 10)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.host.parameters())
    assert seed_grad_norm(model.slots[0]) > 0 and seed_grad_norm(model.slots[1]) > 0
    dotted = build_model(KasminaConfig(host=HostConfig(kind="resnet18"), slots=["layer2.1"]), (3, 32, 32))
    assert dotted.slots[0].channels == 128


def test_bad_slot_layers_are_clear_errors():
    with pytest.raises(ValueError, match="block9") as info:
        make_model(slots=["block0", "block9"])
    assert "block0" in str(info.value) and "head" in str(info.value)
    with pytest.raises(ValueError, match="distinct"):
        make_model(slots=["block0", "block0"])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        make_model(slots=["head"])


def test_deepcopy_keeps_hooks_on_their_own_slots():
    model = make_model()
    twin = copy.deepcopy(model)
    for m in (model, twin):
        for layer_name, slot in zip(["block0", "block1", "block2"], m.slots):
            hooks = list(getattr(m.host, layer_name)._forward_hooks.values())
            assert len(hooks) == 1 and hooks[0].slot is slot
    x, _ = batch()
    model.eval(), twin.eval()
    before = model(x)
    drive(twin.slots[0], S.SHADOWING)
    perturb(twin.slots[0].seed)
    assert model.slots[0].stage is S.DORMANT and model.slots[0].seed is None
    assert torch.equal(model(x), before)                  # the original is untouched
    assert not torch.allclose(twin(x), before)            # the copy's own slot acts


def test_graph_key_tracks_slot_changes():
    model = make_model()
    key = model.graph_key
    model.slots[2].germinate("norm", 0)
    assert model.graph_key != key
    model.reset_slots()
    assert all(s.stage is S.DORMANT for s in model.slots)


# ------------------------------------------------------------------------------------------ device / dtype
def test_float64_model_germinates_float64_seeds():
    model = make_model().to(torch.float64)
    assert all(s.dtype == torch.float64 for s in model.slots)
    drive(model.slots[0], S.TRAINING, "conv_enhance")     # G1 checks the placement
    assert model.slots[0].last_gate.checks["on_slot_device_dtype"]
    assert all(p.dtype == torch.float64 for p in model.slots[0].seed.parameters())
    x, y = batch()
    out = loss_and_backward(model, x.double(), y)
    assert out.dtype == torch.float64


@CUDA
def test_cuda_model_germinates_cuda_seeds():
    model = make_model().to("cuda")
    drive(model.slots[1], S.BLENDING, "depthwise")
    assert model.slots[1].device.type == "cuda"
    assert all(p.is_cuda for p in model.slots[1].seed.parameters())
    x, y = batch()
    out = loss_and_backward(model, x.cuda(), y.cuda())
    assert out.is_cuda and torch.isfinite(out).all()


@CUDA
def test_cuda_training_isolation_exact(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    model = make_model().to("cuda")
    ref = copy.deepcopy(model)
    drive(model.slots[0], S.TRAINING)
    perturb(model.slots[0].seed)
    x, y = batch()
    x, y = x.cuda(), y.cuda()
    assert torch.equal(loss_and_backward(model, x, y), loss_and_backward(ref, x, y))
    for a, b in zip(host_grads(model), host_grads(ref)):
        assert torch.equal(a, b)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
    for bad in ("bogus", "", "gpu0", "cuda:x"):
        with pytest.raises(ValueError, match="not a device"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_resolve_device_cuda_absent():
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match="CUDA") as info:
            resolve_device(spec)
        assert spec in str(info.value) and "cpu" in str(info.value)


@CUDA
def test_resolve_device_cuda_index_out_of_range():
    with pytest.raises(ValueError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


# ------------------------------------------------------------------------------------------ collector
def _collector_model():
    model = make_model()
    drive(model.slots[0], S.TRAINING, "conv_enhance")
    drive(model.slots[1], S.TRAINING, "depthwise")
    for s in model.slots[:2]:
        perturb(s.seed)
    return model


def _group_norms(model):
    groups = [list(model.host_parameters())] + [model.seed_parameters(i) for i in range(len(model.slots))]
    return [float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in g]))) if g else 0.0 for g in groups]


def test_collector_clips_each_group_and_averages():
    model = _collector_model()
    col = GradientCollector(model, vanish_threshold=1e-7, explode_threshold=1e3)
    x, y = batch()
    loss_and_backward(model, x, y)
    before = _group_norms(model)
    assert before[0] > 0.05 and before[1] > 0 and before[2] > 0 and before[3] == 0.0
    col.clip_and_collect(max_norm=0.05)
    after = _group_norms(model)
    for b, a in zip(before, after):
        assert a == pytest.approx(min(b, 0.05), rel=1e-4, abs=1e-7)   # each group clipped on its own
    model.zero_grad()
    loss_and_backward(model, x, y)
    second = _group_norms(model)
    col.clip_and_collect(max_norm=None)                    # no clipping: norms only
    assert _group_norms(model) == second
    stats = col.device_stats().tolist()
    assert col.batches == 2 and len(stats) == 8
    assert stats[:4] == pytest.approx([(a + b) / 2 for a, b in zip(before, second)], rel=1e-5)
    assert stats[4:] == pytest.approx([max(a, b) for a, b in zip(before, second)], rel=1e-5)
    h = col.health(stats)
    assert h.vanishing == [False, False, False, False] and h.exploding == [False] * 4 and h.nonfinite == [False] * 4
    col.reset()
    assert col.batches == 0 and not col.device_stats().any()


def test_nan_seed_gradient_does_not_scale_the_host():
    model = _collector_model()
    col = GradientCollector(model, vanish_threshold=1e-7, explode_threshold=1e3)
    x, y = batch()
    loss_and_backward(model, x, y)
    with torch.no_grad():
        next(iter(model.slots[0].seed.parameters())).grad.fill_(float("nan"))
    # the host alone, clipped on its own
    host_copy = [nn.Parameter(p.detach().clone()) for p in model.host_parameters()]
    for q, p in zip(host_copy, model.host_parameters()):
        q.grad = p.grad.clone()
    torch.nn.utils.clip_grad_norm_(host_copy, 0.05, foreach=True)
    col.clip_and_collect(max_norm=0.05)
    for q, p in zip(host_copy, model.host_parameters()):
        assert torch.isfinite(p.grad).all() and torch.equal(p.grad, q.grad)
    h = col.health(col.device_stats().tolist())
    assert h.nonfinite == [False, True, False, False]
    assert h.exploding == [False, True, False, False] and h.vanishing[1] is False
    assert math.isfinite(h.mean_norm[0]) and math.isfinite(h.mean_norm[2])


def test_collector_health_flags_vanishing_and_exploding():
    model = _collector_model()
    x, y = batch()
    loss_and_backward(model, x, y)
    norms = _group_norms(model)
    lo, hi = min(norms[:3]), max(norms[:3])
    col = GradientCollector(model, vanish_threshold=hi * 2, explode_threshold=1e9)
    col.clip_and_collect(None)
    h = col.health(col.device_stats().tolist())
    assert h.vanishing == [True, True, True, False]        # the empty slot has nothing to vanish
    assert h.exploding == [False] * 4
    col = GradientCollector(model, vanish_threshold=1e-12, explode_threshold=lo / 2)
    col.clip_and_collect(None)
    h = col.health(col.device_stats().tolist())
    assert h.exploding == [True, True, True, False] and h.vanishing == [False] * 4


def test_collector_picks_up_new_seeds():
    model = make_model()
    col = GradientCollector(model, 1e-7, 1e3)
    assert [len(g) for g in col.groups()][1:] == [0, 0, 0]
    drive(model.slots[2], S.TRAINING, "norm")
    assert len(col.groups()[3]) == len(list(model.slots[2].seed.parameters()))


# ------------------------------------------------------------------------------------------ capture safety
def _staged_model():
    model = make_model()
    drive(model.slots[0], S.TRAINING, "conv_enhance")
    drive(model.slots[1], S.BLENDING, "depthwise")
    drive(model.slots[2], S.SHADOWING, "attention")
    for i, s in enumerate(model.slots):
        perturb(s.seed, seed=i)
    return model


def _fossil_model():
    model = make_model()
    drive(model.slots[0], S.FOSSILIZED, "norm")
    model.slots[0].tick(0)
    drive(model.slots[0], S.TRAINING, "depthwise")        # a new seed on top of the fossil
    drive(model.slots[1], S.PROBATIONARY, "conv_enhance")
    for i, s in enumerate(model.slots[:2]):
        perturb(s.seed, seed=i)
    return model


@pytest.mark.parametrize("build", [_staged_model, _fossil_model], ids=["train-blend-shadow", "fossil-probation"])
def test_training_step_captures_without_graph_breaks(build):
    model = build()
    eager = copy.deepcopy(model)
    x, y = batch()

    def step(m, x, y):
        return F.cross_entropy(m(x), y)

    torch._dynamo.reset()
    try:
        explanation = torch._dynamo.explain(model)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1
        torch._dynamo.reset()
        compiled = torch.compile(lambda x, y: step(model, x, y), fullgraph=True, backend="aot_eager")
        loss = compiled(x, y)
        loss.backward()
    finally:
        torch._dynamo.reset()
    ref_loss = step(eager, x, y)
    ref_loss.backward()
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(model.parameters(), eager.parameters()):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    assert all(model.seed_parameters(i)[-1].grad is not None for i in range(len(model.slots))
               if model.slots[i].seed is not None)
