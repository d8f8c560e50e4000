"""EnvCore: one morphogenetic environment, split into phases so a VectorEnv can interleave K of them.

    begin_step(action)  apply the action, snapshot for the governor          (host)
    train_batch()       one batch of host training                           (device, no sync)
    evaluate()          validation, counterfactuals, test on the last step    (device, no sync)
    device_stats()      every number the step produced, as one device tensor (laid out by StepStatsLayout)
    finish_step(stats)  after the caller's single sync: governor, gates, reward, observation

`MorphogeneticEnv.step` runs the phases for one env; `VectorEnv.step` runs each phase across all
envs before the next, with one synchronisation for all of them (docs/architecture.md, "One env step").

The env knows no policy and writes no telemetry: `finish_step` returns its step, seed, rollback and
diagnostic rows in `info["records"]` and the finished episode in `info["esper_episode"]` (an
`EpisodeSummary`; not `info["episode"]`, which Gymnasium's `RecordEpisodeStatistics` and the RL libraries'
monitors own); whoever drives the env (MorphogeneticEnv for a user stepping by hand, the Sampler for
training) emits them through `esper.nissa.records`, tagged with what it knows (the policy).

An episode ends after `max_epochs` steps (terminated) or, when `reset` is given a shorter `horizon`,
after `horizon` steps (truncated: the env cuts it itself, e.g. for a Gymnasium `TimeLimit`, so the last
step still runs the test split and reports the summary). Without a horizon it is `max_epochs`.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import numpy as np
import torch

from esper.kasmina import GradientCollector, GradientHealth, build_model
from esper.leyline import ADVANCEABLE_STAGES, ActionKind, EpisodeSummary, GateResult, SeedEvent, SeedStage
from esper.simic.environment.context import EnvContext
from esper.simic.environment.governor import Governor
from esper.simic.environment.observation import write_observation
from esper.simic.environment.probe import diagnostic_probe
from esper.simic.environment.rewards import RewardBreakdown, compute_reward, potential
from esper.tamiyo import SignalTracker, action_mask, describe_illegal
from esper.tolaria import BatchStream, HostTrainer, counterfactual, summarise
from esper.tolaria.flops import ComputeTally

S = SeedStage
MEASURED = (S.TRAINING, S.BLENDING, S.SHADOWING, S.PROBATIONARY)   # stages with a counterfactual each step


class IllegalActionError(ValueError):
    pass


class PhaseTimer(Protocol):
    """Times a named phase: `with timer("val_eval"): ...`. EnvCore, VectorEnv and the Sampler call theirs around
    each phase of a step, so a benchmark or profiler can attribute time without patching anything; the
    default, `no_timer`, does nothing (one reused null context: ~0.1 µs a phase)."""

    def __call__(self, phase: str) -> AbstractContextManager: ...


_NOTHING = nullcontext()


def no_timer(phase: str) -> AbstractContextManager:
    return _NOTHING


class StepStatsLayout:
    """Where each number sits in `EnvCore.device_stats()`: named slices, as TensorSchema names the observation.

    Each (loss sum, correct, count) triple is what `tolaria.summarise` reads; the gradient statistics
    at the end are the collector's own layout.
    """

    TRIPLE = 3

    def __init__(self, n_slots: int) -> None:
        t = self.TRIPLE
        self.n_slots = n_slots
        self.train = slice(0, t)
        self.val = slice(t, 2 * t)
        self.counterfactual = slice(2 * t, 2 * t + t * n_slots)        # one triple per slot, seed switched off
        self.counterfactual_base = slice(self.counterfactual.stop, self.counterfactual.stop + t)
        self.test = slice(self.counterfactual_base.stop, self.counterfactual_base.stop + t)
        self.gradients = slice(self.test.stop, None)

    def counterfactuals(self, stats: np.ndarray) -> np.ndarray:
        return stats[self.counterfactual].reshape(self.n_slots, self.TRIPLE)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (global seed, runner, env, episode, ...), stable across processes."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class EnvCore:
    def __init__(self, ctx: EnvContext, env_index: int = 0) -> None:
        self.ctx, self.env_index = ctx, env_index
        self.n_slots = len(ctx.kasmina.slots)
        self.batches_per_step = ctx.tolaria.training.batches_per_step
        self.obs = np.zeros(ctx.schema.size, dtype=np.float32)
        self.tracker = SignalTracker()
        self.governor = Governor(ctx.env.governor)
        self.stream = BatchStream(ctx.data, ctx.tolaria.training.batch_size, 0, ctx.tolaria.data.augment)
        if self.batches_per_step is None:
            self.batches_per_step = self.stream.batches_per_epoch
        self.layout = StepStatsLayout(self.n_slots)
        self.timer: PhaseTimer = no_timer
        self.horizon = ctx.max_epochs         # the step that ends the episode: max_epochs, or earlier (truncated)
        self.model = None

    # ------------------------------------------------------------------------------------ episode
    def reset(self, seed: int, episode_id: str, attempt: int = 0,
              horizon: int | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode; `horizon` (≥ 1) cuts it after that many steps (truncated), if under `max_epochs`."""
        ctx = self.ctx
        if horizon is not None and int(horizon) < 1:
            raise ValueError(f"horizon must be at least 1 step, got {horizon}")
        self.horizon = ctx.max_epochs if horizon is None else min(int(horizon), ctx.max_epochs)
        self.seed, self.episode_id, self.attempt = int(seed), episode_id, attempt
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, 0))
            model = build_model(ctx.kasmina, ctx.data.input_shape)
        self.model = model.to(ctx.device, memory_format=ctx.data.memory_format)
        self.host_train_flops = ctx.flops.train_flops(self.model, ctx.tolaria.training.batch_size)   # no seeds yet
        self.step_train_flops = self.host_train_flops
        life = ctx.kasmina.lifecycle
        self.collector = GradientCollector(self.model, life.grad_vanish_threshold, life.grad_explode_threshold)
        self.trainer = HostTrainer(self.model, ctx.tolaria.training, self.collector)
        self.stream.reseed(derive_seed(seed, 1))
        self._allocate_accumulators()
        self.epoch, self.episode_return, self.rollbacks = 0, 0.0, 0
        self.germinated = self.fossilized = self.culled = 0
        self.action_counts: Counter[str] = Counter()
        self.health: GradientHealth | None = None
        self.final_test_acc = float("nan")
        self.compute = ComputeTally()
        self.started = time.perf_counter()
        val = self.trainer.evaluate(ctx.data, "val").cpu().numpy()           # the episode's baseline
        self._count_eval("val", self.compute.add_evaluation)
        val_loss, val_acc = summarise(val)
        self.tracker.reset(val_loss, val_acc)
        for s in self.model.slots:
            s.val_acc = val_acc
        write_observation(self.obs, ctx.schema, self.tracker.baseline(), ctx.max_epochs, None, self.model, 0)
        self.phi = potential([s.stage for s in self.model.slots], 0, ctx.env.reward)
        return self.obs.copy(), {"action_mask": self.action_mask(), "episode_id": episode_id, "val_acc": val_acc}

    def _allocate_accumulators(self) -> None:
        dev = self.ctx.device
        self.val_acc_t = torch.zeros(3, device=dev)
        self.cf_t = torch.zeros(self.n_slots, 3, device=dev)
        self.cf_base_t = torch.zeros(3, device=dev)
        self.test_t = torch.zeros(3, device=dev)

    def action_mask(self) -> np.ndarray:
        return action_mask([s.stage for s in self.model.slots], self.ctx.space,
                           agent_advances=not self.ctx.env.auto_advance, agent_culls=self.ctx.env.agent_culls)

    def fossil_count(self) -> int:
        return sum(len(s.fossils) for s in self.model.slots)

    # ------------------------------------------------------------------------------------ phases
    def begin_step(self, action: int) -> None:
        if self.model is None:
            raise RuntimeError("call reset() before step()")
        mask = self.action_mask()
        if not (0 <= int(action) < len(mask)) or not mask[int(action)]:
            stages = [s.stage for s in self.model.slots]
            if not 0 <= int(action) < len(mask):
                raise IllegalActionError(f"action {action} out of range [0, {len(mask)})")
            raise IllegalActionError(describe_illegal(int(action), stages, self.ctx.space))
        act = self.ctx.space.decode(int(action))
        self.action_counts[act.kind.name] += 1
        self.last_action = str(act)
        self.step_events: list[tuple[SeedEvent, GateResult | None]] = []
        self.fossilized_contributions: list[float] = []
        if act.kind is ActionKind.GERMINATE:
            slot = self.model.slots[act.slot]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, 2, self.epoch, act.slot))
                gate, event = slot.germinate(act.blueprint, self.epoch)
            self._record(gate, event, slot, act.slot)
            self.germinated += event is not None
        elif act.kind is ActionKind.ADVANCE:
            self._advance(act.slot, record_refusal=True)
        elif act.kind is ActionKind.CULL:
            self.step_events.append((self.model.slots[act.slot].cull(self.epoch, "culled by Tamiyo"), None))
            self.culled += 1
        if self.ctx.env.auto_advance:           # the gates decide: every seed that may move on tries to
            for i, slot in enumerate(self.model.slots):
                if slot.stage in ADVANCEABLE_STAGES:
                    self._advance(i, record_refusal=False)
        self.trainer.sync_optimizers()
        self.trainer.set_progress(self.epoch / self.ctx.max_epochs)
        self.collector.reset()
        self.trainer.train_metrics.zero_()
        with self.timer("governor_snapshot"):
            self.governor.snapshot(self.model, self.trainer.host_opt)
        # The step's training runs on the architecture the action just made (a cached count: no device work).
        self.step_train_flops = self.ctx.flops.train_flops(self.model, self.ctx.tolaria.training.batch_size)
        self.compute.add_training(self.step_train_flops, batches=self.batches_per_step)

    def _advance(self, index: int, record_refusal: bool) -> None:
        slot = self.model.slots[index]
        contribution = slot.last_contribution
        gate, event = slot.advance(self.epoch)
        if event is not None or record_refusal:   # automatic tries are refused most steps: log only the moves
            self._record(gate, event, slot, index)
        if event is not None and slot.stage is S.FOSSILIZED:
            self.fossilized += 1
            self.fossilized_contributions.append(contribution or 0.0)

    def _record(self, gate: GateResult, event: SeedEvent | None, slot, index: int) -> None:
        if event is None:   # a failed gate: the seed stays; report the refusal
            event = SeedEvent(index, slot.blueprint or "", slot.stage.name, slot.stage.name, self.epoch, gate.reason, gate)
        self.step_events.append((event, gate))

    def train_batch(self) -> None:
        x, y = self.stream.next()
        self.trainer.train_step(x, y)

    def evaluate(self) -> None:
        data, tr = self.ctx.data, self.trainer
        cf_batches = self.ctx.tolaria.training.counterfactual_batches
        for t in (self.val_acc_t, self.cf_t, self.cf_base_t, self.test_t):
            t.zero_()
        with self.timer("val_eval"):
            tr.evaluate(data, "val", out=self.val_acc_t)
            self._count_eval("val", self.compute.add_evaluation)
        measured = [i for i, s in enumerate(self.model.slots) if s.seed is not None and s.stage in MEASURED]
        with self.timer("counterfactual"):          # what only growth needs: decision compute
            if measured and cf_batches is not None:
                tr.evaluate(data, "val", max_batches=cf_batches, out=self.cf_base_t)
                self._count_eval("val", self.compute.add_decision, max_batches=cf_batches)
            for i in measured:
                with counterfactual(self.model, i):
                    tr.evaluate(data, "val", max_batches=cf_batches, out=self.cf_t[i])
                self._count_eval("val", self.compute.add_decision, max_batches=cf_batches, switched_off=i)
        if self.epoch + 1 >= self.horizon:           # the episode's last step, terminated or truncated
            with self.timer("test_eval"):
                tr.evaluate(data, "test", out=self.test_t)
                self._count_eval("test", self.compute.add_evaluation)

    def _count_eval(self, split: str, add, max_batches: int | None = None, switched_off: int | None = None) -> None:
        """Book one evaluation pass over `split` (with slot `switched_off`'s seed inverted, if given)."""
        samples = len(self.ctx.data.val_y if split == "val" else self.ctx.data.test_y)
        add(self.ctx.flops.eval_pass_flops(self.model, samples, self.ctx.tolaria.training.eval_batch_size,
                                           max_batches=max_batches, counterfactual=switched_off))

    def device_stats(self) -> torch.Tensor:
        return torch.cat([self.trainer.train_metrics, self.val_acc_t, self.cf_t.flatten(), self.cf_base_t,
                          self.test_t, self.collector.device_stats()])

    # ------------------------------------------------------------------------------------ finish
    def finish_step(self, stats: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        ctx, model, lay = self.ctx, self.model, self.layout
        train, val, cf_base, test = stats[lay.train], stats[lay.val], stats[lay.counterfactual_base], stats[lay.test]
        cf = lay.counterfactuals(stats)
        self.health = health = self.collector.health(stats[lay.gradients])
        records: list[tuple[str, dict]] = []
        train_loss, train_acc = summarise(train)
        val_loss, val_acc = summarise(val)
        base_acc = summarise(cf_base)[1] if ctx.tolaria.training.counterfactual_batches else val_acc

        with self.timer("governor"):
            restored, test = self._govern(train_loss, health, records, test)
        rolled_back = restored is not None
        if rolled_back:                                # the restored host's accuracies replace the step's
            val_loss, val_acc = restored

        for i, s in enumerate(model.slots):
            contribution = None
            if s.seed is not None and s.stage in MEASURED and not rolled_back:
                cf_acc = summarise(cf[i])[1]
                contribution = cf_acc - base_acc if s.stage is S.TRAINING else base_acc - cf_acc
            s.observe(val_acc=val_acc, contribution=contribution, grad_norm=health.mean_norm[i + 1],
                      vanishing=health.vanishing[i + 1], exploding=health.exploding[i + 1])
        for s in model.slots:
            self.step_events.extend(s.tick(self.epoch))
        self.trainer.sync_optimizers()

        prev_val_acc = self.tracker.prev_val_acc
        with self.timer("signals"):
            sig = self.tracker.update(self.epoch + 1, train_loss, train_acc, val_loss, val_acc)
        self.epoch += 1
        terminal = self.epoch >= ctx.max_epochs
        truncated = not terminal and self.epoch >= self.horizon       # cut short: no terminal reward, Φ kept
        phi_next = potential([s.stage for s in model.slots], self.fossil_count(), ctx.env.reward)
        reward = compute_reward(ctx.env.reward, gamma=ctx.gamma, prev_val_acc=prev_val_acc, val_acc=sig.val_acc,
                                fossilized_contributions=self.fossilized_contributions,
                                params_added_frac=model.params_added() / model.host_param_count,
                                phi_prev=self.phi, phi_next=phi_next, terminal=terminal,
                                extra_flops_frac=self.step_train_flops / self.host_train_flops - 1.0)
        self.phi = phi_next
        self.episode_return += reward.total
        with self.timer("signals"):
            write_observation(self.obs, ctx.schema, sig, ctx.max_epochs, health, model, self.fossil_count())
        info = {"action_mask": self.action_mask(), "episode_id": self.episode_id, "attempt": self.attempt,
                "epoch": self.epoch, "train_loss": sig.train_loss, "val_acc": sig.val_acc, "val_loss": sig.val_loss,
                "reward_components": reward._asdict(), "rolled_back": rolled_back, "sanitized": sig.sanitized,
                "seed_events": [e for e, _ in self.step_events]}
        with self.timer("records"):
            records += self._step_records(sig, reward, rolled_back)
        with self.timer("probe"):
            records += [("diagnostic", row) for row in
                        diagnostic_probe(model, ctx.data, ctx.tolaria.training.batch_size, self._key(), self.epoch)]
        info["records"] = records
        if terminal or truncated:
            self.final_test_acc = summarise(test)[1]
            info["esper_episode"] = self.summary()
        return self.obs.copy(), float(reward.total), terminal, truncated, info

    def _govern(self, train_loss: float, health: GradientHealth, records: list,
                test: np.ndarray) -> tuple[tuple[float, float] | None, np.ndarray]:
        """The governor's verdict: cull diverging seeds, roll the host back if it was hit. Returns the restored
        host's (val loss, val acc) — None when nothing was rolled back — and the test statistics to report."""
        model, ctx = self.model, self.ctx
        verdict = self.governor.judge(model, train_loss, health)
        if not verdict.diverged:
            return None, test
        for i in verdict.culprits:
            if model.slots[i].is_live:
                self.step_events.append((model.slots[i].cull(self.epoch, f"governor: {verdict.reason}"), None))
                self.culled += 1
        restored = None
        if verdict.host_affected:
            self.governor.rollback(self.trainer.host_opt)
            self.trainer.invalidate()          # optimizer buffers may have been replaced
            self.rollbacks += 1
            with self.timer("eval_rollback"):
                restored = summarise(self.trainer.evaluate(ctx.data, "val").cpu().numpy())
                self._count_eval("val", self.compute.add_evaluation)
                if self.epoch + 1 >= self.horizon:
                    test = self.trainer.evaluate(ctx.data, "test").cpu().numpy()
                    self._count_eval("test", self.compute.add_evaluation)
        self.trainer.sync_optimizers()
        records.append(("system", {"kind": "rollback" if restored else "governor_cull", "actor": self.episode_id,
                                   "detail": json.dumps({"epoch": self.epoch, "reason": verdict.reason,
                                                         "culled": verdict.culprits})}))
        return restored, test

    def summary(self) -> EpisodeSummary:
        """The episode so far; `policy_version` stays unset (-1): the env knows no policy, its driver tags it."""
        return EpisodeSummary(
            episode_id=self.episode_id, attempt=self.attempt, env_seed=self.seed, epochs=self.epoch,
            episode_return=self.episode_return, final_val_acc=self.tracker.prev_val_acc,
            final_test_acc=self.final_test_acc, best_val_acc=self.tracker.best_val_acc,
            seeds_germinated=self.germinated, seeds_fossilized=self.fossilized, seeds_culled=self.culled,
            params_host=self.model.host_param_count, params_added=self.model.params_added(),
            rollbacks=self.rollbacks, actions=dict(self.action_counts), env_index=self.env_index,
            training_flops=self.compute.training, decision_flops=self.compute.decision,
            evaluation_flops=self.compute.evaluation, wall_seconds=time.perf_counter() - self.started)

    # ------------------------------------------------------------------------------------ records
    def _key(self) -> dict:
        return {"episode_id": self.episode_id, "attempt": self.attempt, "env_index": self.env_index}

    def _step_records(self, sig, reward: RewardBreakdown, rolled_back: bool) -> list[tuple[str, dict]]:
        """This step's `step` row and one `seed` row per lifecycle event (or refused gate)."""
        key = self._key()
        rows = [("step", {**key, "epoch": self.epoch, "action": self.last_action, "train_loss": sig.train_loss,
                          "train_acc": sig.train_acc, "val_loss": sig.val_loss, "val_acc": sig.val_acc,
                          "reward": reward.total, "reward_acc_gain": reward.acc_gain,
                          "reward_contribution": reward.contribution, "reward_rent": reward.rent,
                          "reward_shaping": reward.shaping, "reward_terminal": reward.terminal,
                          "params_added": self.model.params_added(),
                          "live_seeds": sum(s.is_live for s in self.model.slots), "rolled_back": rolled_back,
                          "sanitized": sig.sanitized})]
        for event, gate in self.step_events:
            rows.append(("seed", {**key, "epoch": event.epoch, "slot": event.slot, "blueprint": event.blueprint,
                                  "from_stage": event.from_stage, "to_stage": event.to_stage, "reason": event.reason,
                                  "gate": gate.gate if gate else None, "gate_passed": gate.passed if gate else None,
                                  "gate_checks": json.dumps(gate.checks) if gate else None,
                                  "gate_values": json.dumps(gate.values) if gate else None}))
        return rows
