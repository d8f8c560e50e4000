"""Tamiyo: SignalTracker (NaN/inf handling, plateau counting, histories), HeuristicTamiyo (germinate on a
plateau, advance, cull, embargo against thrash, blueprint penalties and bans, reasons and confidences),
StaticPolicy and the Policy protocol.

The heuristic is driven with synthetic observations written through the TensorSchema, exactly as the
environment writes them, and with masks from `action_mask`, so no host network is trained here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from esper.kasmina import LifecycleConfig
from esper.leyline import (
    ADVANCEABLE_STAGES,
    BLUEPRINT_IDS,
    LIVE_STAGES,
    Action,
    ActionKind,
    ActionSpace,
    FastTrainingSignals,
    SeedStage,
    SlotSignals,
    TensorSchema,
)
from esper.leyline.signals import HISTORY
from esper.tamiyo import (
    LARGE_LOSS,
    HeuristicConfig,
    HeuristicTamiyo,
    Policy,
    SignalTracker,
    StaticPolicy,
    action_mask,
    describe_illegal,
)

S = SeedStage
K = ActionKind
MAX_EPOCHS = 25
NUM_SLOTS = 3
SCHEMA = TensorSchema(NUM_SLOTS, BLUEPRINT_IDS)
SPACE = ActionSpace(NUM_SLOTS, BLUEPRINT_IDS)
LIFE = LifecycleConfig()


# ------------------------------------------------------------------------------------------ helpers
def slot_sig(stage: SeedStage = S.DORMANT, blueprint: str | None = None, epochs: int = 0,
             contribution: float | None = None, embargo_left: int = 0) -> SlotSignals:
    return SlotSignals.empty()._replace(
        stage=int(stage), blueprint=-1 if blueprint is None else BLUEPRINT_IDS.index(blueprint),
        epochs_in_stage=float(epochs), contribution=0.0 if contribution is None else contribution,
        contribution_measured=0.0 if contribution is None else 1.0, embargo_left=float(embargo_left))


def make_obs(epoch: int, plateau: int, slots: dict[int, SlotSignals] | None = None,
             max_epochs: int = MAX_EPOCHS) -> tuple[np.ndarray, np.ndarray]:
    """One observation row (through the schema) and its action mask; slots not given are DORMANT."""
    slots = slots or {}
    base = dict.fromkeys(FastTrainingSignals._fields, 0.0)
    base.update(epoch_frac=epoch / max_epochs, plateau_epochs=float(plateau), val_acc=0.5, best_val_acc=0.5)
    sigs = [slots.get(s, slot_sig()) for s in range(NUM_SLOTS)]
    buf = np.zeros(SCHEMA.size, np.float32)
    assert SCHEMA.write(buf, FastTrainingSignals(**base), sigs) == SCHEMA.size
    mask = action_mask([S(sig.stage) for sig in sigs], SPACE)
    return buf, mask


def heuristic(max_epochs: int = MAX_EPOCHS, lifecycle: LifecycleConfig = LIFE, **cfg) -> HeuristicTamiyo:
    h = HeuristicTamiyo(HeuristicConfig(**cfg), SCHEMA, SPACE, lifecycle, max_epochs)
    h.reset([0])
    return h


def decide(h: HeuristicTamiyo, epoch: int, plateau: int, slots: dict[int, SlotSignals] | None = None):
    obs, mask = make_obs(epoch, plateau, slots, h.max_epochs)
    d = h.act(obs[None], mask[None])[0]
    check_decision(d, mask)
    return d


def check_decision(d, mask: np.ndarray) -> None:
    """Every decision: legal under the mask, index consistent with the action, a reason, confidence in [0, 1]."""
    assert d.index == SPACE.encode(d.action)
    assert mask[d.index], f"illegal decision {d.action}"
    assert isinstance(d.reason, str) and d.reason.strip()
    assert 0.0 <= d.confidence <= 1.0 and math.isfinite(d.confidence)


# ------------------------------------------------------------------------------------------ SignalTracker
def test_tracker_baseline_fills_histories():
    t = SignalTracker()
    t.reset(val_loss=2.3, val_acc=0.1)
    b = t.baseline()
    assert b.epoch == 0 and b.val_loss == 2.3 and b.val_acc == 0.1 and b.best_val_acc == 0.1
    assert b.acc_history == (0.1,) * HISTORY and b.loss_history == (2.3,) * HISTORY
    assert b.plateau_epochs == 0 and not b.sanitized


def test_tracker_deltas_bests_and_histories():
    t = SignalTracker(min_delta=1e-3)
    t.reset(val_loss=2.0, val_acc=0.1)
    s1 = t.update(1, 1.9, 0.2, 1.5, 0.3)
    assert s1.loss_delta == pytest.approx(0.5) and s1.acc_delta == pytest.approx(0.2)
    assert s1.best_val_acc == 0.3 and s1.plateau_epochs == 0
    assert s1.acc_history == (0.1,) * HISTORY              # the history before this step
    s2 = t.update(2, 1.7, 0.3, 1.6, 0.25)
    assert s2.loss_delta == pytest.approx(-0.1) and s2.acc_delta == pytest.approx(-0.05)
    assert s2.best_val_acc == 0.3 and s2.plateau_epochs == 1
    assert s2.acc_history == (0.3, 0.1, 0.1, 0.1)          # most recent first
    assert s2.loss_history == (1.5, 2.0, 2.0, 2.0)
    for e, acc in enumerate((0.26, 0.27, 0.28), start=3):
        s = t.update(e, 1.0, 0.5, 1.0, acc)
    assert s.acc_history == (0.27, 0.26, 0.25, 0.3)        # bounded to HISTORY entries
    assert len(s.loss_history) == HISTORY


def test_tracker_plateau_counting_uses_min_delta():
    t = SignalTracker(min_delta=0.01)
    t.reset(val_loss=2.0, val_acc=0.0)
    plateaus = [t.update(i + 1, 1.0, 0.5, 1.0, acc).plateau_epochs
                for i, acc in enumerate([0.1, 0.2, 0.2, 0.205, 0.19, 0.211, 0.3])]
    # 0.205 is not better than 0.2 by more than min_delta; 0.211 is (by 0.011)
    assert plateaus == [0, 0, 1, 2, 3, 0, 0]
    assert t.best_val_acc == 0.3


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_tracker_sanitizes_nonfinite_inputs(bad):
    t = SignalTracker()
    t.reset(val_loss=2.0, val_acc=0.4)
    s = t.update(1, bad, bad, bad, bad)
    assert s.sanitized
    assert s.train_loss == LARGE_LOSS and s.val_loss == LARGE_LOSS
    assert s.train_acc == 0.0 and s.val_acc == 0.0
    values = [v for v in s if isinstance(v, float)] + list(s.acc_history) + list(s.loss_history)
    assert all(math.isfinite(v) for v in values)
    assert s.loss_delta == pytest.approx(2.0 - LARGE_LOSS) and s.acc_delta == pytest.approx(-0.4)
    assert s.best_val_acc == 0.4 and s.plateau_epochs == 1   # a NaN never counts as an improvement
    s2 = t.update(2, 1.0, 0.5, 1.5, 0.45)                     # the next finite step: finite deltas, not flagged
    assert not s2.sanitized
    assert s2.loss_delta == pytest.approx(LARGE_LOSS - 1.5) and s2.acc_delta == pytest.approx(0.45)
    assert s2.acc_history[0] == 0.0 and s2.loss_history[0] == LARGE_LOSS
    assert s2.best_val_acc == 0.45 and s2.plateau_epochs == 0


def test_tracker_one_bad_input_flags_the_step():
    t = SignalTracker()
    t.reset(val_loss=2.0, val_acc=0.1)
    s = t.update(1, float("nan"), 0.3, 1.5, 0.2)              # only the train loss is bad
    assert s.sanitized and s.train_loss == LARGE_LOSS and s.val_loss == 1.5 and s.val_acc == 0.2
    t2 = SignalTracker()
    t2.reset(val_loss=float("nan"), val_acc=float("inf"))     # a bad baseline is sanitized too
    b = t2.baseline()
    assert b.val_loss == LARGE_LOSS and b.val_acc == 0.0


# ------------------------------------------------------------------------------------------ masks
def test_action_mask_rules_and_illegal_description():
    stages = [S.DORMANT, S.TRAINING, S.EMBARGOED]
    mask = action_mask(stages, SPACE)
    assert mask[0]
    for s, stage in enumerate(stages):
        for b in BLUEPRINT_IDS:
            assert mask[SPACE.encode(Action(K.GERMINATE, s, b))] == (stage is S.DORMANT)
        assert mask[SPACE.encode(Action(K.ADVANCE, s))] == (stage in ADVANCEABLE_STAGES)
        assert mask[SPACE.encode(Action(K.CULL, s))] == (stage in LIVE_STAGES)
    text = describe_illegal(SPACE.encode(Action(K.CULL, 0)), stages, SPACE)
    assert "CULL(slot=0)" in text and "slot 0: DORMANT" in text and "slot 2: EMBARGOED" in text
    with pytest.raises(ValueError, match="2 slot stages"):
        action_mask(stages[:2], SPACE)


# ------------------------------------------------------------------------------------------ heuristic: germinate
def test_waits_while_warming_up_even_on_a_plateau():
    h = heuristic()
    d = decide(h, epoch=1, plateau=10)
    assert d.action.kind is K.WAIT and "warming up" in d.reason


def test_waits_while_still_improving():
    h = heuristic()
    cfg = h.cfg
    for plateau in range(cfg.plateau_epochs):
        d = decide(h, epoch=cfg.min_epoch_to_germinate + 3, plateau=plateau)
        assert d.action.kind is K.WAIT and "still improving" in d.reason


def test_germinates_on_a_plateau_into_a_free_slot():
    h = heuristic()
    d = decide(h, epoch=h.cfg.min_epoch_to_germinate, plateau=h.cfg.plateau_epochs)
    assert d.action.kind is K.GERMINATE
    assert d.action.blueprint in BLUEPRINT_IDS and 0 <= d.action.slot < NUM_SLOTS
    assert "plateau" in d.reason


def test_germinates_only_into_dormant_slots():
    h = heuristic(max_live_seeds=3)
    busy = {0: slot_sig(S.EMBARGOED, "norm", embargo_left=2), 1: slot_sig(S.FOSSILIZED, "attention")}
    for _ in range(5):
        d = decide(h, epoch=10, plateau=5, slots=busy)
        assert d.action.kind is K.GERMINATE and d.action.slot == 2


def test_no_germination_too_late_to_fossilize():
    h = heuristic()
    need = LIFE.shortest_path_to_fossil()
    late = decide(h, epoch=MAX_EPOCHS - need + 1, plateau=10)
    assert late.action.kind is K.WAIT and "too few" in late.reason
    just_in_time = decide(h, epoch=MAX_EPOCHS - need, plateau=10)
    assert just_in_time.action.kind is K.GERMINATE


def test_no_germination_while_a_seed_is_in_flight():
    h = heuristic()
    d = decide(h, epoch=10, plateau=10, slots={1: slot_sig(S.TRAINING, "norm", epochs=0, contribution=None)})
    assert d.action.kind is K.WAIT and "in flight" in d.reason


# ------------------------------------------------------------------------------------------ heuristic: advance
@pytest.mark.parametrize("stage, need", [(S.TRAINING, LIFE.min_training_epochs), (S.SHADOWING, LIFE.shadow_steps),
                                         (S.PROBATIONARY, LIFE.probation_steps)])
def test_advances_a_good_seed_once_the_stage_minimum_has_passed(stage, need):
    h = heuristic()
    for epochs in range(need):
        d = decide(h, epoch=10, plateau=0, slots={1: slot_sig(stage, "depthwise", epochs=epochs, contribution=0.05)})
        assert d.action.kind is K.WAIT, f"advanced after {epochs} < {need} steps in {stage.name}"
    d = decide(h, epoch=10, plateau=0, slots={1: slot_sig(stage, "depthwise", epochs=need, contribution=0.05)})
    assert d.action == Action(K.ADVANCE, 1)
    assert stage.name in d.reason


def test_does_not_advance_unmeasured_or_below_threshold():
    h = heuristic()
    unmeasured = decide(h, epoch=10, plateau=0, slots={0: slot_sig(S.SHADOWING, "norm", epochs=5, contribution=None)})
    assert unmeasured.action.kind is K.WAIT
    # slightly negative: not harmful enough to cull, not good enough to advance past G4
    weak = decide(h, epoch=10, plateau=0, slots={0: slot_sig(S.SHADOWING, "norm", epochs=2, contribution=-0.01)})
    assert weak.action.kind is K.WAIT
    strict = heuristic(lifecycle=LifecycleConfig(contribution_threshold=0.02))
    below = decide(strict, epoch=10, plateau=0, slots={0: slot_sig(S.SHADOWING, "norm", epochs=2, contribution=0.01)})
    assert below.action.kind is K.WAIT                       # the lifecycle's G4/G5 threshold applies too
    training = decide(strict, epoch=10, plateau=0, slots={0: slot_sig(S.TRAINING, "norm", epochs=2, contribution=0.01)})
    assert training.action == Action(K.ADVANCE, 0)           # ... but not to TRAINING (G2 has no threshold)


def test_never_advances_a_blending_seed():
    h = heuristic()
    d = decide(h, epoch=10, plateau=0, slots={0: slot_sig(S.BLENDING, "norm", epochs=LIFE.blend_steps + 1,
                                                          contribution=0.2)})
    assert d.action.kind is K.WAIT                            # BLENDING ends by itself (G3); ADVANCE is masked


# ------------------------------------------------------------------------------------------ heuristic: cull
@pytest.mark.parametrize("stage", [S.BLENDING, S.SHADOWING, S.PROBATIONARY])
def test_culls_a_harmful_seed(stage):
    h = heuristic()
    d = decide(h, epoch=10, plateau=0, slots={2: slot_sig(stage, "attention", epochs=1, contribution=-0.2)})
    assert d.action == Action(K.CULL, 2)
    assert "hurts" in d.reason and d.confidence == 1.0       # far below the threshold: fully confident


def test_a_training_seeds_preview_is_not_judged_as_harm():
    """In TRAINING the counterfactual adds the seed at full strength before the host has adapted: a
    pessimistic preview, not harm. The heuristic advances once G2 allows, whatever the preview's sign."""
    h = heuristic()
    d = decide(h, epoch=10, plateau=0, slots={2: slot_sig(S.TRAINING, "attention", epochs=LIFE.min_training_epochs,
                                                          contribution=-0.2)})
    assert d.action == Action(K.ADVANCE, 2)
    stuck = decide(h, epoch=10, plateau=0, slots={2: slot_sig(
        S.TRAINING, "attention", epochs=LIFE.min_training_epochs + h.cfg.patience_epochs, contribution=-0.2)})
    assert stuck.action == Action(K.CULL, 2) and "stuck" in stuck.reason


def test_culls_a_stuck_seed_after_patience():
    h = heuristic()
    need = LIFE.min_training_epochs + h.cfg.patience_epochs
    stuck = {0: slot_sig(S.TRAINING, "norm", epochs=need - 1, contribution=None)}
    assert decide(h, epoch=12, plateau=0, slots=stuck).action.kind is K.WAIT
    stuck = {0: slot_sig(S.TRAINING, "norm", epochs=need, contribution=None)}
    d = decide(h, epoch=12, plateau=0, slots=stuck)
    assert d.action == Action(K.CULL, 0) and "stuck" in d.reason


def test_culls_a_seed_stuck_in_blending():
    """BLENDING ends by itself when G3 passes; a seed still blending `patience` steps after the ramp ended
    keeps failing G3 (val accuracy regressed) and would otherwise block germination for the whole episode."""
    h = heuristic()
    need = LIFE.blend_steps + h.cfg.patience_epochs
    for epochs in (LIFE.blend_steps, need - 1):
        d = decide(h, epoch=12, plateau=5, slots={0: slot_sig(S.BLENDING, "norm", epochs=epochs, contribution=0.0)})
        assert d.action.kind is K.WAIT
    d = decide(h, epoch=12, plateau=5, slots={0: slot_sig(S.BLENDING, "norm", epochs=need, contribution=0.0)})
    assert d.action == Action(K.CULL, 0) and "stuck in BLENDING" in d.reason


@pytest.mark.parametrize("embargo", [1, 2, 4])
def test_embargo_after_a_cull_prevents_thrash(embargo):
    """After a cull at epoch e, no GERMINATE for `embargo_epochs` steps (e+1 .. e+embargo), then it may."""
    h = heuristic(embargo_epochs=embargo, max_live_seeds=1)
    e = 5
    d = decide(h, epoch=e, plateau=6, slots={0: slot_sig(S.SHADOWING, "norm", epochs=1, contribution=-0.2)})
    assert d.action.kind is K.CULL
    # the culled slot is embargoed by the lifecycle too; the other slots are free, the plateau long
    after = {0: slot_sig(S.EMBARGOED, "norm", embargo_left=3)}
    for step in range(1, embargo + 1):
        d = decide(h, epoch=e + step, plateau=6 + step, slots=after)
        assert d.action.kind is K.WAIT and "embargo" in d.reason, f"germinated {step} step(s) after a cull"
    d = decide(h, epoch=e + embargo + 1, plateau=6 + embargo + 1, slots=after)
    assert d.action.kind is K.GERMINATE and d.action.slot != 0


def test_no_embargo_when_embargo_epochs_is_zero():
    h = heuristic(embargo_epochs=0)
    decide(h, epoch=5, plateau=6, slots={0: slot_sig(S.SHADOWING, "norm", epochs=1, contribution=-0.2)})
    assert decide(h, epoch=6, plateau=7).action.kind is K.GERMINATE


def test_embargo_is_per_environment():
    h = heuristic()
    h.reset([0, 1])
    harmful, _ = make_obs(5, 6, {0: slot_sig(S.SHADOWING, "norm", epochs=1, contribution=-0.2)})
    free, _ = make_obs(5, 6)
    masks = np.stack([action_mask([S.SHADOWING, S.DORMANT, S.DORMANT], SPACE), action_mask([S.DORMANT] * 3, SPACE)])
    d0, d1 = h.act(np.stack([harmful, free]), masks)
    assert d0.action.kind is K.CULL and d1.action.kind is K.GERMINATE
    obs, mask = make_obs(6, 7)
    d0, d1 = h.act(np.stack([obs, obs]), np.stack([mask, mask]))
    assert d0.action.kind is K.WAIT and "embargo" in d0.reason
    assert d1.action.kind is K.GERMINATE                       # env 1 culled nothing: no embargo there
    h.reset([0])                                              # a new episode forgets the cull
    assert h.act(obs[None], mask[None])[0].action.kind is K.GERMINATE


# ------------------------------------------------------------------------------------------ heuristic: penalties
def test_blueprint_penalty_accumulates_per_cull_and_decays():
    h = heuristic(blueprint_penalty=1.0, penalty_decay=0.9, ban_threshold=100.0)
    harmful = {0: slot_sig(S.SHADOWING, "depthwise", epochs=1, contribution=-0.2)}
    decide(h, epoch=5, plateau=0, slots=harmful)
    assert h.penalties(0) == {"depthwise": pytest.approx(1.0)}
    decide(h, epoch=6, plateau=0, slots=harmful)              # decays to 0.9, then +1 for the second cull
    assert h.penalties(0)["depthwise"] == pytest.approx(1.9)
    for n in range(1, 4):
        decide(h, epoch=6 + n, plateau=0)
        assert h.penalties(0)["depthwise"] == pytest.approx(1.9 * 0.9 ** n)
    culled_other = {1: slot_sig(S.SHADOWING, "norm", epochs=1, contribution=-0.2)}
    decide(h, epoch=10, plateau=0, slots=culled_other)
    p = h.penalties(0)
    assert p["norm"] == pytest.approx(1.0) and p["depthwise"] == pytest.approx(1.9 * 0.9 ** 4)


def test_lowest_penalty_blueprint_is_preferred():
    h = heuristic(embargo_epochs=0, ban_threshold=100.0)
    first = decide(h, epoch=5, plateau=5)
    assert first.action.kind is K.GERMINATE
    bp = first.action.blueprint
    # cull it: it collects a penalty, every other blueprint has none, so the next seed is another blueprint
    decide(h, epoch=6, plateau=0, slots={first.action.slot: slot_sig(S.SHADOWING, bp, epochs=1, contribution=-0.2)})
    for epoch in range(7, 12):
        d = decide(h, epoch=epoch, plateau=5)
        assert d.action.kind is K.GERMINATE and d.action.blueprint != bp


def test_banned_blueprint_is_never_chosen():
    h = heuristic(max_epochs=50, embargo_epochs=0, blueprint_penalty=10.0, penalty_decay=0.9, ban_threshold=2.5)
    decide(h, epoch=3, plateau=0, slots={0: slot_sig(S.SHADOWING, "conv_enhance", epochs=1, contribution=-0.2)})
    chosen = []
    epoch = 4
    while h.penalties(0)["conv_enhance"] * h.cfg.penalty_decay >= h.cfg.ban_threshold:
        d = decide(h, epoch=epoch, plateau=5)
        assert d.action.kind is K.GERMINATE
        chosen.append(d.action.blueprint)
        epoch += 1
    assert len(chosen) >= 10 and "conv_enhance" not in chosen
    assert set(chosen) == set(BLUEPRINT_IDS) - {"conv_enhance"}   # the rotation covers the others
    d = decide(h, epoch=epoch, plateau=5)                           # decayed below the threshold: allowed again
    assert h.penalties(0)["conv_enhance"] < h.cfg.ban_threshold
    assert d.action.kind is K.GERMINATE


def test_penalty_at_exactly_the_threshold_bans():
    h = heuristic(embargo_epochs=0, blueprint_penalty=2.5, penalty_decay=1.0, ban_threshold=2.5,
                  max_live_seeds=3)
    for s, bp in enumerate(("norm", "attention", "depthwise")):
        decide(h, epoch=3, plateau=0, slots={s: slot_sig(S.SHADOWING, bp, epochs=1, contribution=-0.2)})
    assert all(h.penalties(0)[bp] == 2.5 for bp in ("norm", "attention", "depthwise"))
    for epoch in range(4, 8):
        d = decide(h, epoch=epoch, plateau=5)
        assert d.action.blueprint == "conv_enhance"
    decide(h, epoch=8, plateau=0, slots={0: slot_sig(S.SHADOWING, "conv_enhance", epochs=1, contribution=-0.2)})
    d = decide(h, epoch=9, plateau=5)
    assert d.action.kind is K.WAIT and "unbanned" in d.reason     # everything banned


# ------------------------------------------------------------------------------------------ heuristic: fuzz
def test_every_decision_is_legal_with_a_reason_and_a_confidence():
    rng = np.random.default_rng(0)
    h = heuristic()
    h.reset(range(8))
    kinds = set()
    for _ in range(60):
        rows, masks = [], []
        for _k in range(8):
            slots = {}
            for s in range(NUM_SLOTS):
                stage = S(int(rng.integers(len(S))))
                bp = None if stage is S.DORMANT else str(rng.choice(BLUEPRINT_IDS))
                contribution = None if rng.random() < 0.3 else float(rng.normal(0, 0.05))
                slots[s] = slot_sig(stage, bp, int(rng.integers(0, 12)), contribution)
            obs, mask = make_obs(int(rng.integers(0, MAX_EPOCHS)), int(rng.integers(0, 8)), slots)
            rows.append(obs)
            masks.append(mask)
        decisions = h.act(np.stack(rows), np.stack(masks))
        assert len(decisions) == 8
        for d, mask in zip(decisions, masks):
            check_decision(d, mask)
            kinds.add(d.action.kind)
    assert kinds == set(ActionKind)                           # the fuzz reached every kind of decision


# ------------------------------------------------------------------------------------------ static, protocol
def test_static_policy_always_waits():
    rng = np.random.default_rng(1)
    p = StaticPolicy()
    p.reset([0, 1, 2])
    obs = rng.normal(size=(3, SCHEMA.size)).astype(np.float32)
    masks = np.stack([action_mask([S(int(x)) for x in rng.integers(0, len(S), NUM_SLOTS)], SPACE) for _ in range(3)])
    decisions = p.act(obs, masks)
    assert len(decisions) == 3
    for d, mask in zip(decisions, masks):
        assert d.action.kind is K.WAIT and d.index == 0
        check_decision(d, mask)


def test_policy_protocol():
    from esper.tamiyo.agent import PPOAgent, make_network

    agent = PPOAgent(make_network(SCHEMA, SPACE, [16]), SCHEMA, SPACE, torch.device("cpu"), seed=0)
    for p in (heuristic(), StaticPolicy(), agent):
        assert isinstance(p, Policy)
        assert isinstance(p.name, str) and isinstance(p.version, int)
    assert {heuristic().name, StaticPolicy.name, agent.name} == {"heuristic", "static", "ppo"}
    assert not isinstance(object(), Policy)
    obs, mask = make_obs(5, 5, {0: slot_sig(S.TRAINING, "norm", epochs=1, contribution=0.1)})
    for d in agent.act(np.stack([obs] * 4), np.stack([mask] * 4)):   # the learned policy obeys the mask too
        check_decision(d, mask)
