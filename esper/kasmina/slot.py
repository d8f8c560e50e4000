"""SeedSlot: an nn.Module at one injection point that holds a seed and walks it through its stages.

Forward per stage (h = host activation at the slot, after any fossils):
  DORMANT, GERMINATED, CULLED, EMBARGOED, RESETTING, FOSSILIZED -> h
  TRAINING                     -> h in value; the seed learns the residual (isolation.isolated_output)
  BLENDING, SHADOWING, PROBATION -> h + alpha * seed(h), alpha a tensor (1 after blending)
The branch depends only on the stage, a Python value fixed per architecture, never on tensor
values, so a CUDA graph captured for one stage stays valid until the stage changes.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from esper.kasmina import gates
from esper.kasmina.blueprints import CATALOG, create_seed
from esper.kasmina.config import LifecycleConfig
from esper.kasmina.isolation import isolated_output
from esper.leyline import LIVE_STAGES, GateResult, IllegalTransitionError, SeedEvent, SeedStage, check_transition

S = SeedStage


class SeedSlot(nn.Module):
    def __init__(self, index: int, name: str, channels: int, probe_shape: tuple[int, ...], lifecycle: LifecycleConfig,
                 blueprint_params: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.index = index
        self.name = name
        self.channels = channels
        self.probe_shape = tuple(probe_shape)          # (C, H, W) seen at this slot when grafted
        self.lifecycle = lifecycle
        self.blueprint_params = blueprint_params or {}
        self.seed: nn.Module | None = None
        self.fossils = nn.ModuleList()
        # What each fossil was made from, in `fossils` order: {"blueprint": id, "params": shape settings}.
        # With the slot's channel count it rebuilds the fossil's structure (esper.kasmina.grown).
        self.fossil_specs: list[dict[str, Any]] = []
        self.register_buffer("alpha", torch.zeros(()))
        self.bypass_live_seed = False                  # GradientIsolationMonitor's host-only pass
        self.counterfactual = False                    # evaluate with the live seed's effect inverted
        self.stage = S.DORMANT
        self.blueprint: str | None = None
        self._reset_seed_stats()
        self.embargo_left = 0
        self.graph_version = 0                         # bumps whenever the forward's structure changes
        self.last_gate: GateResult | None = None       # the latest gate evaluated, passed or failed

    # ------------------------------------------------------------------ forward
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for fossil in self.fossils:
            h = h + fossil(h)
        seed, stage = self.seed, self.stage
        if seed is None or self.bypass_live_seed:
            return h
        if stage is S.TRAINING:
            if self.counterfactual:                    # "what if it were fully blended"
                return h + seed(h)
            if not self.training:
                return h
            return isolated_output(h, seed(h.detach()))
        if stage in (S.BLENDING, S.SHADOWING, S.PROBATIONARY):
            if self.counterfactual:                    # "what if it were absent"
                return h
            return h + self.alpha * seed(h)
        return h

    # ------------------------------------------------------------------ state
    @property
    def device(self) -> torch.device:
        return self.alpha.device

    @property
    def dtype(self) -> torch.dtype:
        return self.alpha.dtype

    @property
    def is_live(self) -> bool:
        return self.stage in LIVE_STAGES

    def seed_param_count(self) -> int:
        return 0 if self.seed is None else sum(p.numel() for p in self.seed.parameters())

    def fossil_param_count(self) -> int:
        return sum(p.numel() for p in self.fossils.parameters())

    def _reset_seed_stats(self) -> None:
        self.epochs_in_stage = 0
        self.stage_contributions: list[float] = []
        self.last_contribution: float | None = None
        self.val_acc = 0.0
        self.val_acc_at_stage_entry = 0.0
        self.val_acc_at_germination = 0.0
        self.grad_norm = 0.0
        self.grad_vanishing = False
        self.grad_exploding = False

    def _move(self, target: SeedStage, epoch: int, reason: str, gate: GateResult | None) -> SeedEvent:
        check_transition(self.stage, target)
        event = SeedEvent(self.index, self.blueprint or "", self.stage.name, target.name, epoch, reason, gate)
        self.stage = target
        self.epochs_in_stage = 0
        self.stage_contributions = []
        self.val_acc_at_stage_entry = self.val_acc
        self.graph_version += 1
        return event

    # ------------------------------------------------------------------ agent actions
    def germinate(self, blueprint_id: str, epoch: int) -> tuple[GateResult, SeedEvent | None]:
        gate = gates.g0_germinate(blueprint_known=blueprint_id in CATALOG, slot_free=self.stage is S.DORMANT,
                                  embargo_left=self.embargo_left)
        self.last_gate = gate
        if not gate.passed:
            return gate, None
        self.seed = create_seed(blueprint_id, self.channels, self.blueprint_params.get(blueprint_id)).to(
            device=self.device, dtype=self.dtype)
        self.seed.train(self.training)
        self.blueprint = blueprint_id
        val_acc = self.val_acc
        self._reset_seed_stats()
        self.val_acc = self.val_acc_at_germination = val_acc
        return gate, self._move(S.GERMINATED, epoch, f"germinated {blueprint_id}", gate)

    def advance(self, epoch: int) -> tuple[GateResult, SeedEvent | None]:
        cfg = self.lifecycle
        if self.stage is S.TRAINING:
            gate = gates.g2_start_blending(epochs_in_stage=self.epochs_in_stage, contribution=self.last_contribution,
                                           grad_norm=self.grad_norm, cfg=cfg)
            target = S.BLENDING
        elif self.stage is S.SHADOWING:
            gate = gates.g4_start_probation(recent_contributions=self.stage_contributions, cfg=cfg)
            target = S.PROBATIONARY
        elif self.stage is S.PROBATIONARY:
            gate = gates.g5_fossilize(epochs_in_stage=self.epochs_in_stage, contribution=self.last_contribution,
                                      val_acc=self.val_acc, val_acc_at_entry=self.val_acc_at_stage_entry,
                                      grad_norm=self.grad_norm, cfg=cfg)
            target = S.FOSSILIZED
        else:
            raise IllegalTransitionError(
                f"ADVANCE is not possible from {self.stage.name} (slot {self.index}); "
                f"the agent advances only from TRAINING, SHADOWING or PROBATIONARY")
        self.last_gate = gate
        if not gate.passed:
            return gate, None
        event = self._move(target, epoch, gate.reason, gate)
        if target is S.BLENDING:
            self.alpha.fill_(0.0)
        elif target is S.FOSSILIZED:
            self.add_fossil(self.blueprint, self.blueprint_params.get(self.blueprint), self.seed)   # joins the host
            self.seed = None
            self.alpha.fill_(0.0)
        return gate, event

    def add_fossil(self, blueprint_id: str, params: dict[str, Any] | None = None,
                   module: nn.Module | None = None) -> nn.Module:
        """Append a fossil and record the blueprint and shape settings it was made from (`fossil_specs`).

        `module` is the seed that passed G5; without one (rebuilding a saved model) a fresh
        `create_seed(blueprint_id, channels, params)` is built on the slot's device, for the caller to
        load its weights into."""
        params = dict(params or {})
        if module is None:
            module = create_seed(blueprint_id, self.channels, params).to(device=self.device, dtype=self.dtype)
            module.train(self.training)
        self.fossils.append(module)
        self.fossil_specs.append({"blueprint": blueprint_id, "params": params})
        self.graph_version += 1
        return module

    def cull(self, epoch: int, reason: str) -> SeedEvent:
        event = self._move(S.CULLED, epoch, reason, None)
        self.seed = None
        self.alpha.fill_(0.0)
        return event

    # ------------------------------------------------------------------ per-step bookkeeping
    def observe(self, *, val_acc: float, contribution: float | None, grad_norm: float, vanishing: bool,
                exploding: bool) -> None:
        """Record this step's measurements (called once per step, after evaluation)."""
        self.val_acc = val_acc
        self.grad_norm, self.grad_vanishing, self.grad_exploding = grad_norm, vanishing, exploding
        self.last_contribution = contribution
        if contribution is not None:
            self.stage_contributions.append(contribution)

    def tick(self, epoch: int) -> list[tuple[SeedEvent, GateResult | None]]:
        """End of a step: count it and make the automatic moves (G1, blending ramp and G3, cooldowns)."""
        self.epochs_in_stage += 1
        out: list[tuple[SeedEvent, GateResult | None]] = []
        cfg = self.lifecycle
        if self.stage is S.GERMINATED:
            gate = self._g1()
            self.last_gate = gate
            if gate.passed:
                out.append((self._move(S.TRAINING, epoch, gate.reason, gate), gate))
            else:
                out.append((self.cull(epoch, gate.reason), gate))
        elif self.stage is S.BLENDING:
            self.alpha.fill_(min(1.0, self.epochs_in_stage / cfg.blend_steps))
            if self.epochs_in_stage >= cfg.blend_steps:
                gate = gates.g3_blend_done(alpha=float(self.alpha), val_acc=self.val_acc,
                                           val_acc_at_entry=self.val_acc_at_stage_entry, cfg=cfg)
                self.last_gate = gate              # a failed G3 keeps the seed blending; the caller can report it
                if gate.passed:
                    out.append((self._move(S.SHADOWING, epoch, gate.reason, gate), gate))
        elif self.stage is S.FOSSILIZED:
            out.append((self._move(S.DORMANT, epoch, "fossil absorbed; slot free", None), None))
            self.blueprint = None
        elif self.stage is S.CULLED:
            self.embargo_left = cfg.embargo_steps
            out.append((self._move(S.EMBARGOED, epoch, f"embargo for {cfg.embargo_steps} steps", None), None))
        elif self.stage is S.EMBARGOED:
            self.embargo_left -= 1
            if self.embargo_left <= 0:
                self.embargo_left = 0
                out.append((self._move(S.RESETTING, epoch, "embargo over", None), None))
        elif self.stage is S.RESETTING:
            out.append((self._move(S.DORMANT, epoch, "reset", None), None))
            self.blueprint = None
        return out

    def _g1(self) -> GateResult:
        probe = torch.ones((1, *self.probe_shape), device=self.device, dtype=self.dtype)
        was_training = self.seed.training
        self.seed.eval()
        with torch.no_grad():
            out = self.seed(probe)
        self.seed.train(was_training)
        placement = all(p.device == self.device and p.dtype == self.dtype for p in self.seed.parameters())
        return gates.g1_built(shape_ok=out.shape == probe.shape, finite=bool(torch.isfinite(out).all()),
                              placement_ok=placement)

    def reset(self) -> None:
        """Back to an empty slot with no fossils (a new episode)."""
        self.seed = None
        self.fossils = nn.ModuleList()
        self.fossil_specs = []
        self.alpha.fill_(0.0)
        self.stage = S.DORMANT
        self.blueprint = None
        self.embargo_left = 0
        self.last_gate = None
        self._reset_seed_stats()
        self.graph_version += 1

