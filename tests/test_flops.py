"""Compute accounting (esper.tolaria.flops): FLOPs counted on a meta copy, cached per architecture."""
from __future__ import annotations

import copy
import time

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from esper.kasmina import KasminaConfig, MorphogeneticModel, SeedSlot, build_model
from esper.leyline import SeedStage
from esper.tolaria.flops import ComputeTally, FlopCounter, architecture_key, meta_copy
from esper.tolaria.training import counterfactual

S = SeedStage
SHAPE = (3, 32, 32)
BATCH = 64


def make_model() -> MorphogeneticModel:
    torch.manual_seed(0)
    return build_model(KasminaConfig(), SHAPE)


def healthy(slot: SeedSlot) -> None:
    slot.observe(val_acc=0.5, contribution=0.02, grad_norm=1.0, vanishing=False, exploding=False)


def drive(slot: SeedSlot, target: SeedStage, blueprint: str = "conv_enhance") -> None:
    """Walk a DORMANT slot through its gates (as the environment does, with healthy measurements) to `target`.
    Only host bookkeeping plus G1's one-image probe: no training is needed to pass the gates."""
    life = slot.lifecycle
    assert slot.germinate(blueprint, 0)[0].passed
    order = [S.GERMINATED, S.TRAINING, S.BLENDING, S.SHADOWING, S.PROBATIONARY, S.FOSSILIZED]
    while slot.stage is not target:
        assert order.index(slot.stage) < order.index(target), (slot.stage, target)
        healthy(slot)
        if slot.stage is S.TRAINING and slot.epochs_in_stage >= life.min_training_epochs:
            slot.advance(0)
        elif slot.stage is S.SHADOWING and len(slot.stage_contributions) >= life.shadow_steps:
            slot.advance(0)
        elif slot.stage is S.PROBATIONARY and slot.epochs_in_stage >= life.probation_steps:
            slot.advance(0)
        else:
            slot.tick(0)


def real_train_flops(model: MorphogeneticModel, n: int = BATCH) -> int:
    """FlopCounterMode around one real training batch (forward, cross-entropy, backward) of a CPU copy."""
    twin = copy.deepcopy(model).train()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn((n, *SHAPE), generator=g), torch.randint(0, 10, (n,), generator=g)
    with FlopCounterMode(display=False) as mode:
        F.cross_entropy(twin(x), y).backward()
    return mode.get_total_flops()


def test_static_host_training_matches_a_real_batch_times_batches():
    model, counter = make_model(), FlopCounter(SHAPE)
    per_batch = counter.train_flops(model, BATCH)
    assert per_batch == real_train_flops(model) > 0
    tally = ComputeTally()
    tally.add_training(per_batch, batches=7)
    assert tally.training == 7 * real_train_flops(model)
    assert tally.as_dict() == {"training_flops": 7 * per_batch, "decision_flops": 0, "evaluation_flops": 0,
                               "total_flops": 7 * per_batch}


@pytest.mark.parametrize("stage", [S.TRAINING, S.BLENDING])
def test_live_seed_raises_training_flops_and_matches_a_real_batch(stage):
    model, counter = make_model(), FlopCounter(SHAPE)
    static = counter.train_flops(model, BATCH)
    drive(model.slots[1], stage)
    live = counter.train_flops(model, BATCH)
    assert live > static
    assert live == real_train_flops(model)       # the meta copy runs the isolation / blend exactly as the real one


def test_germinated_seed_is_not_computed_yet():
    model, counter = make_model(), FlopCounter(SHAPE)
    static = counter.train_flops(model, BATCH)
    drive(model.slots[0], S.GERMINATED)
    assert counter.train_flops(model, BATCH) == static


def test_a_fossil_stays_counted():
    model, counter = make_model(), FlopCounter(SHAPE)
    static_train, static_eval = counter.train_flops(model, BATCH), counter.eval_flops(model, BATCH)
    slot = model.slots[2]
    drive(slot, S.FOSSILIZED)
    fossil_train = counter.train_flops(model, BATCH)
    slot.tick(0)                                   # FOSSILIZED -> DORMANT: the slot is free, the fossil stays
    assert slot.stage is S.DORMANT and slot.seed is None and len(slot.fossils) == 1
    assert counter.train_flops(model, BATCH) == fossil_train > static_train
    assert counter.train_flops(model, BATCH) == real_train_flops(model)
    assert counter.eval_flops(model, BATCH) > static_eval
    assert architecture_key(model) != architecture_key(make_model())


def test_different_blueprints_in_the_same_slot_differ():
    counter = FlopCounter(SHAPE)
    figures = {}
    for bp in ("conv_enhance", "depthwise", "attention"):
        model = make_model()
        drive(model.slots[1], S.TRAINING, bp)
        figures[bp] = counter.train_flops(model, BATCH)
    assert len(set(figures.values())) == 3, figures
    assert figures["conv_enhance"] > figures["depthwise"] > figures["attention"]


def test_cache_returns_the_same_number_without_recounting():
    counter = FlopCounter(SHAPE)
    model = make_model()
    first = counter.train_flops(model, BATCH)
    assert counter.counts == 1
    assert counter.train_flops(model, BATCH) == first
    assert counter.train_flops(make_model(), BATCH) == first      # another model, same architecture
    assert counter.counts == 1
    t0 = time.perf_counter()
    for _ in range(1000):
        counter.train_flops(model, BATCH)
    assert (time.perf_counter() - t0) / 1000 < 1e-3             # a lookup, not a count (~ microseconds)
    assert counter.counts == 1
    counter.eval_flops(model, BATCH)                             # another kind: one more count
    counter.train_flops(model, 2 * BATCH)                        # another batch size: one more
    assert counter.counts == 3
    drive(model.slots[0], S.TRAINING)                            # a new architecture: one more
    assert counter.train_flops(model, BATCH) > first
    assert counter.counts == 4


def test_counting_leaves_the_real_model_untouched():
    model = make_model()
    drive(model.slots[1], S.BLENDING)
    model.train()
    fired = []
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda _p: fired.append(1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    counter = FlopCounter(SHAPE)
    counter.train_flops(model, BATCH)
    counter.eval_flops(model, BATCH)
    counter.eval_flops(model, BATCH, counterfactual=1)
    after = model.state_dict()
    assert state.keys() == after.keys()
    for k, v in state.items():                     # includes BN running stats and num_batches_tracked
        assert after[k].device.type == "cpu" and torch.equal(after[k], v), k
    assert all(p.grad is None for p in model.parameters())
    assert not fired
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and not any(s.counterfactual for s in model.slots)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_meta_copy_holds_no_data():
    model = make_model()
    drive(model.slots[0], S.TRAINING)
    twin = meta_copy(model)
    assert all(t.is_meta for t in [*twin.parameters(), *twin.buffers()])
    assert twin.slots[0].seed is not None and twin.slots[0].seed is not model.slots[0].seed
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def test_eval_is_cheaper_than_training():
    for stage in (None, S.TRAINING, S.BLENDING):
        model, counter = make_model(), FlopCounter(SHAPE)
        if stage is not None:
            drive(model.slots[1], stage)
        assert 0 < counter.eval_flops(model, BATCH) < counter.train_flops(model, BATCH)


def test_counterfactual_eval_follows_the_slot_forward():
    counter = FlopCounter(SHAPE)
    static = counter.eval_flops(make_model(), BATCH)
    training = make_model()
    drive(training.slots[1], S.TRAINING)
    # In eval a TRAINING seed is not run; its counterfactual adds it at full strength.
    assert counter.eval_flops(training, BATCH) == static
    assert counter.eval_flops(training, BATCH, counterfactual=1) > static
    assert counter.eval_flops(training, BATCH, counterfactual=0) == static
    blending = make_model()
    drive(blending.slots[1], S.BLENDING)
    # A blending seed runs in every evaluation except its own counterfactual, which removes it.
    assert counter.eval_flops(blending, BATCH) > static
    assert counter.eval_flops(blending, BATCH, counterfactual=1) == static
    # Only the argument selects a counterfactual: the real slot's flag (set by the context) is not read.
    with counterfactual(blending, 1):
        assert counter.eval_flops(blending, BATCH) > static
        assert counter.eval_flops(blending, BATCH, counterfactual=1) == static


def test_eval_pass_counts_full_short_and_capped_batches():
    model, counter = make_model(), FlopCounter(SHAPE)
    f1024, f452 = counter.eval_flops(model, 1024), counter.eval_flops(model, 452)
    assert counter.eval_pass_flops(model, 2500, 1024) == 2 * f1024 + f452
    assert counter.eval_pass_flops(model, 2500, 1024, max_batches=1) == f1024
    assert counter.eval_pass_flops(model, 2500, 1024, max_batches=3) == 2 * f1024 + f452
    assert counter.eval_pass_flops(model, 2048, 1024) == 2 * f1024
    assert f1024 == 1024 * counter.eval_flops(model, 1)          # matmul/conv FLOPs are linear in the batch


def test_counting_works_under_no_grad_and_inference_mode():
    model, counter = make_model(), FlopCounter(SHAPE)
    expected = FlopCounter(SHAPE).train_flops(model, BATCH)
    with torch.no_grad():
        assert counter.train_flops(model, BATCH) == expected
    with torch.inference_mode():
        assert FlopCounter(SHAPE).train_flops(model, BATCH) == expected


def test_custom_mapping_prices_ops_flopcountermode_leaves_at_zero():
    model = make_model()
    drive(model.slots[0], S.BLENDING, "norm")
    static = FlopCounter(SHAPE).train_flops(make_model(), BATCH)
    assert FlopCounter(SHAPE).train_flops(model, BATCH) == static     # GroupNorm + scale: not counted by default

    def group_norm_flop(x_shape, *args, out_shape=None, **kwargs) -> int:
        n = 1
        for d in x_shape:
            n *= d
        return 5 * n

    priced = FlopCounter(SHAPE, custom_mapping={torch.ops.aten.native_group_norm: group_norm_flop})
    assert priced.train_flops(model, BATCH) > static


def test_tally_adds_and_resets():
    t = ComputeTally()
    t.add_training(10, batches=3)
    t.add_decision(5)
    t.add_evaluation(2)
    t.add_evaluation(2)
    assert (t.training, t.decision, t.evaluation, t.total) == (30, 5, 4, 39)
    t.reset()
    assert t.as_dict()["total_flops"] == 0


# ------------------------------------------------------------------------- in the environment's episode
def test_an_episode_records_its_compute_in_the_summary():
    from esper.simic import EnvConfig, MorphogeneticEnv
    from esper.tolaria import DataConfig, TolariaConfig, TrainingConfig

    from tiny import DATA

    tolaria = TolariaConfig(data=DataConfig(**DATA),
                            training=TrainingConfig(device="cpu", batches_per_step=2, eval_batch_size=64))
    env = MorphogeneticEnv(tolaria=tolaria, env=EnvConfig(max_epochs=12))
    env.reset(seed=0)
    done, info = False, {}
    while not done:                                   # the static host: WAIT every step
        _, _, term, trunc, info = env.step(0)
        done = term or trunc
    s = info["esper_episode"]
    counter = FlopCounter((3, 16, 16))
    per_batch = counter.train_flops(env.core.model, 64)
    assert s.training_flops == per_batch * 2 * 12
    val_pass = counter.eval_pass_flops(env.core.model, 128, 64)
    test_pass = counter.eval_pass_flops(env.core.model, 128, 64)
    assert s.evaluation_flops == val_pass * (12 + 1) + test_pass       # the reset's baseline + each step + test
    assert s.decision_flops == 0 and s.wall_seconds > 0               # nothing to decide about without a seed
