"""Leyline: stages and transitions, the action space, the observation schema, versions, import hygiene."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from esper.leyline import (
    ACTIVE_STAGES,
    ADVANCEABLE_STAGES,
    BLUEPRINT_IDS,
    DEFAULT_SCHEMA,
    LEYLINE_VERSION,
    LIVE_STAGES,
    TENSOR_SCHEMA_SIZE,
    VALID_TRANSITIONS,
    Action,
    ActionKind,
    ActionSpace,
    FastTrainingSignals,
    IllegalTransitionError,
    IncompatibleVersionError,
    SchemaMismatchError,
    SeedStage,
    SlotSignals,
    TensorSchema,
    check_compatible,
    check_transition,
)

S = SeedStage
LEGAL = [(a, b) for a, targets in VALID_TRANSITIONS.items() for b in sorted(targets)]
ILLEGAL = [(a, b) for a in SeedStage for b in SeedStage if b not in VALID_TRANSITIONS[a]]


# ------------------------------------------------------------------------------------------ stages
def test_every_stage_has_transitions_entry():
    assert set(VALID_TRANSITIONS) == set(SeedStage)


@pytest.mark.parametrize(("current", "target"), LEGAL, ids=[f"{a.name}->{b.name}" for a, b in LEGAL])
def test_legal_transitions_pass(current, target):
    check_transition(current, target)  # must not raise
    check_transition(int(current), int(target))  # plain ints are accepted too


@pytest.mark.parametrize(("current", "target"), ILLEGAL[::5] + [(S.DORMANT, S.FOSSILIZED), (S.TRAINING, S.FOSSILIZED),
                                                                 (S.FOSSILIZED, S.CULLED), (S.CULLED, S.DORMANT)])
def test_illegal_transitions_raise_naming_both_stages(current, target):
    with pytest.raises(IllegalTransitionError) as info:
        check_transition(current, target)
    msg = str(info.value)
    assert current.name in msg and target.name in msg
    assert isinstance(info.value, ValueError)


def test_lifecycle_happy_path_is_legal_and_illegal_set_nonempty():
    path = [S.DORMANT, S.GERMINATED, S.TRAINING, S.BLENDING, S.SHADOWING, S.PROBATIONARY, S.FOSSILIZED, S.DORMANT]
    for a, b in zip(path, path[1:]):
        check_transition(a, b)
    cull_path = [S.TRAINING, S.CULLED, S.EMBARGOED, S.RESETTING, S.DORMANT]
    for a, b in zip(cull_path, cull_path[1:]):
        check_transition(a, b)
    assert len(ILLEGAL) > 50


def test_stage_sets_consistent_with_transitions():
    # Every live stage can be culled; no other stage can.
    assert {s for s in SeedStage if S.CULLED in VALID_TRANSITIONS[s]} == set(LIVE_STAGES)
    assert ACTIVE_STAGES <= LIVE_STAGES
    assert ADVANCEABLE_STAGES <= LIVE_STAGES
    assert S.TRAINING not in ACTIVE_STAGES


# ------------------------------------------------------------------------------------------ actions
@pytest.mark.parametrize("num_slots", [1, 3])
@pytest.mark.parametrize("blueprints", [BLUEPRINT_IDS, ("attention", "norm")])
def test_action_space_round_trip(num_slots, blueprints):
    space = ActionSpace(num_slots, blueprints)
    assert space.n == 1 + num_slots * len(blueprints) + 2 * num_slots
    actions = [space.decode(i) for i in range(space.n)]
    assert len(set(actions)) == space.n
    for i, a in enumerate(actions):
        assert space.encode(a) == i
    kinds = [a.kind for a in actions]
    assert kinds.count(ActionKind.WAIT) == 1
    assert kinds.count(ActionKind.GERMINATE) == num_slots * len(blueprints)
    assert kinds.count(ActionKind.ADVANCE) == num_slots
    assert kinds.count(ActionKind.CULL) == num_slots
    # numpy / torch integer indices decode the same way
    assert space.decode(np.int64(space.n - 1)) == actions[-1]
    assert space.decode(torch.tensor(1)) == actions[1]


def test_action_space_layout_and_str():
    space = ActionSpace(2)
    assert space.decode(0) == Action(ActionKind.WAIT)
    assert space.decode(1) == Action(ActionKind.GERMINATE, 0, BLUEPRINT_IDS[0])
    assert space.encode(Action(ActionKind.GERMINATE, 1, BLUEPRINT_IDS[-1])) == space.advance_start - 1
    assert space.encode(Action(ActionKind.ADVANCE, 1)) == space.advance_start + 1
    assert space.encode(Action(ActionKind.CULL, 0)) == space.cull_start
    assert str(Action(ActionKind.WAIT)) == "WAIT"
    assert "blueprint=norm" in str(Action(ActionKind.GERMINATE, 0, "norm"))
    assert str(Action(ActionKind.CULL, 2)) == "CULL(slot=2)"
    assert space.describe() == {"n": space.n, "num_slots": 2, "blueprint_ids": list(BLUEPRINT_IDS)}


@pytest.mark.parametrize("bad", [Action(ActionKind.ADVANCE, 3), Action(ActionKind.CULL, -1),
                                 Action(ActionKind.CULL, None), Action(ActionKind.GERMINATE, 5, "norm")])
def test_action_space_bad_slot(bad):
    with pytest.raises(ValueError, match="slot"):
        ActionSpace(3).encode(bad)


def test_action_space_bad_blueprint_and_index():
    space = ActionSpace(2, ("norm",))
    with pytest.raises(ValueError, match="conv_enhance") as info:
        space.encode(Action(ActionKind.GERMINATE, 0, "conv_enhance"))
    assert "norm" in str(info.value)
    for idx in (-1, space.n, space.n + 10):
        with pytest.raises(ValueError, match="out of range"):
            space.decode(idx)
    with pytest.raises(ValueError, match="num_slots"):
        ActionSpace(0)
    with pytest.raises(ValueError, match="blueprint_ids"):
        ActionSpace(1, ("bogus",))
    with pytest.raises(ValueError, match="blueprint_ids"):
        ActionSpace(1, ())


# ------------------------------------------------------------------------------------------ schema
def _full_observation(schema: TensorSchema, rng: np.random.Generator):
    base = FastTrainingSignals(*rng.uniform(-1, 1, len(FastTrainingSignals._fields)).tolist())
    n_scalars = len(SlotSignals._fields) - 2
    slots = [SlotSignals(int(list(SeedStage)[(i * 3 + 2) % len(SeedStage)]), i % len(schema.blueprint_ids),
                         *rng.uniform(-1, 1, n_scalars).tolist()) for i in range(schema.max_slots)]
    return base, slots


@pytest.mark.parametrize("max_slots", [1, 3, 5])
def test_written_length_equals_schema_size_numpy(max_slots):
    schema = TensorSchema(max_slots)
    base, slots = _full_observation(schema, np.random.default_rng(0))
    buf = np.full(schema.size + 7, np.nan, dtype=np.float32)   # sentinel tail catches overruns
    end = schema.write(buf, base, slots)
    assert end == schema.size
    assert np.isfinite(buf[:schema.size]).all()
    assert np.isnan(buf[schema.size:]).all()
    # values land at their named offsets
    np.testing.assert_allclose(buf[schema.index("val_acc")], base.val_acc, rtol=1e-6)
    for i, sig in enumerate(slots):
        assert buf[schema.index(f"slot{i}.alpha")] == pytest.approx(sig.alpha, rel=1e-6)
        assert buf[schema.index(f"slot{i}.stage_{SeedStage(sig.stage).name.lower()}")] == 1.0
        assert buf[schema.index(f"slot{i}.blueprint_{schema.blueprint_ids[sig.blueprint]}")] == 1.0
        stage_block = buf[schema.slot_offset(i):schema.slot_offset(i) + len(SeedStage)]
        assert stage_block.sum() == 1.0
        bp_start = schema.slot_offset(i) + len(SeedStage)
        assert buf[bp_start:bp_start + len(schema.blueprint_ids)].sum() == 1.0


@pytest.mark.parametrize("max_slots", [1, 3])
def test_written_length_equals_schema_size_torch(max_slots):
    schema = TensorSchema(max_slots)
    base, slots = _full_observation(schema, np.random.default_rng(1))
    buf = torch.full((schema.size + 3,), float("nan"), dtype=torch.float32)
    end = schema.write(buf, base, slots)
    assert end == schema.size
    assert torch.isfinite(buf[:schema.size]).all()
    assert torch.isnan(buf[schema.size:]).all()
    ref = np.zeros(schema.size, dtype=np.float32)
    schema.write(ref, base, slots)
    np.testing.assert_allclose(buf[:schema.size].numpy(), ref, rtol=1e-6)


def test_schema_fills_missing_slots_as_empty_and_refuses_too_many():
    schema = TensorSchema(3)
    base, slots = _full_observation(schema, np.random.default_rng(2))
    buf = np.full(schema.size, np.nan, dtype=np.float32)
    assert schema.write(buf, base, slots[:1]) == schema.size
    assert np.isfinite(buf).all()
    for i in (1, 2):
        block = buf[schema.slot_offset(i):schema.slot_offset(i) + schema.slot_size]
        assert block[int(SeedStage.DORMANT)] == 1.0 and block.sum() == 1.0   # only the DORMANT one-hot
    with pytest.raises(ValueError, match="max_slots"):
        schema.write(np.zeros(schema.size), base, slots + slots[:1])


def test_schema_sizes_and_names():
    schema = TensorSchema(3)
    assert schema.base_size == len(FastTrainingSignals._fields)
    assert schema.slot_size == len(SeedStage) + len(BLUEPRINT_IDS) + len(SlotSignals._fields) - 2
    assert schema.size == schema.base_size + 3 * schema.slot_size == len(schema.feature_names)
    assert len(set(schema.feature_names)) == schema.size
    for i, name in enumerate(schema.feature_names):
        assert schema.index(name) == i
    assert schema.index("slot1.alpha") == schema.slot_offset(1) + schema.slot_features.index("alpha")
    with pytest.raises(KeyError, match="slot9.alpha"):
        schema.index("slot9.alpha")
    with pytest.raises(ValueError, match="max_slots"):
        TensorSchema(0)


def test_default_schema_size_constant():
    assert TENSOR_SCHEMA_SIZE == DEFAULT_SCHEMA.size == TensorSchema().size


def test_fingerprint_stable_and_sensitive():
    a, b = TensorSchema(3), TensorSchema(3)
    assert a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 16
    assert TensorSchema(2).fingerprint != a.fingerprint
    assert TensorSchema(3, ("norm", "attention")).fingerprint != a.fingerprint
    assert TensorSchema(3, tuple(reversed(BLUEPRINT_IDS))).fingerprint != a.fingerprint
    a.check_fingerprint(b.fingerprint)  # no error
    with pytest.raises(SchemaMismatchError, match="checkpoint") as info:
        a.check_fingerprint(TensorSchema(2).fingerprint, what="checkpoint")
    assert TensorSchema(2).fingerprint in str(info.value) and a.fingerprint in str(info.value)
    assert isinstance(info.value, ValueError)


def test_fingerprint_stable_across_processes():
    code = "from esper.leyline import TensorSchema; print(TensorSchema(3).fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == TensorSchema(3).fingerprint


# ------------------------------------------------------------------------------------------ versions
def test_check_compatible():
    major = LEYLINE_VERSION.split(".")[0]
    check_compatible(LEYLINE_VERSION)
    check_compatible(f"{major}.99.3")
    for bad in (f"{int(major) + 1}.0.0", f"{int(major) - 1}.9.9"):
        with pytest.raises(IncompatibleVersionError, match=bad.replace(".", r"\.")):
            check_compatible(bad, what="checkpoint")
    for malformed in ("1.0", "abc", "1.x.0", ""):
        with pytest.raises(IncompatibleVersionError, match="malformed"):
            check_compatible(malformed)


# ------------------------------------------------------------------------------------------ hygiene
def test_import_leyline_does_not_import_torch():
    code = "import sys, esper.leyline; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
