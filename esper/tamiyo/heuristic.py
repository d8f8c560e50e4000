"""HeuristicTamiyo: the hand-written controller every learned policy must beat.

Germinate when validation accuracy plateaus; advance a seed whose counterfactual contribution is
good enough for its next gate; cull one that hurts or is stuck. After a cull there is an embargo on
germination (no germinate-cull-germinate thrash), and the culled blueprint collects a penalty that
decays each step; a blueprint whose penalty reaches the ban threshold is skipped. It reads only
the observation and the mask, like the learned policy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from esper.kasmina.config import LifecycleConfig
from esper.leyline import Action, ActionKind, ActionSpace, SeedStage, TamiyoDecision, TensorSchema
from esper.tamiyo.config import HeuristicConfig

S = SeedStage
_WORKING = (S.TRAINING, S.BLENDING, S.SHADOWING, S.PROBATIONARY)


class _SlotView(NamedTuple):
    stage: SeedStage
    blueprint: str | None
    epochs_in_stage: int
    contribution: float
    measured: bool


@dataclass
class _EnvState:
    last_cull_epoch: int | None = None
    penalties: dict[str, float] = field(default_factory=dict)
    rotation: int = 0          # next blueprint to try
    slot_rotation: int = 0     # next slot to try


class HeuristicTamiyo:
    name = "heuristic"
    version = 0

    def __init__(self, cfg: HeuristicConfig, schema: TensorSchema, space: ActionSpace, lifecycle: LifecycleConfig,
                 max_epochs: int) -> None:
        self.cfg, self.schema, self.space, self.lifecycle, self.max_epochs = cfg, schema, space, lifecycle, max_epochs
        self._states: dict[int, _EnvState] = {}
        self._i = {n: schema.index(n) for n in ("epoch_frac", "plateau_epochs", "val_acc",
                                                 f"acc_hist_{cfg.plateau_epochs - 1}")}

    def reset(self, env_indices: Sequence[int]) -> None:
        for k in env_indices:
            self._states[k] = _EnvState()

    def penalties(self, env_index: int) -> dict[str, float]:
        return dict(self._states.setdefault(env_index, _EnvState()).penalties)

    def act(self, obs: np.ndarray, masks: np.ndarray) -> list[TamiyoDecision]:
        return [self._decide(k, obs[k], masks[k]) for k in range(len(obs))]

    # ------------------------------------------------------------------------------------------
    def _slot(self, obs: np.ndarray, s: int) -> _SlotView:
        off = self.schema.slot_offset(s)
        n_st, n_bp = len(SeedStage), len(self.schema.blueprint_ids)
        stage = S(int(np.argmax(obs[off:off + n_st])))
        bp_block = obs[off + n_st:off + n_st + n_bp]
        blueprint = self.schema.blueprint_ids[int(np.argmax(bp_block))] if bp_block.max() > 0 else None
        get = lambda name: float(obs[self.schema.index(f"slot{s}.{name}")])  # noqa: E731
        return _SlotView(stage, blueprint, int(round(get("epochs_in_stage"))), get("contribution"),
                         get("contribution_measured") > 0.5)

    def _decision(self, kind: ActionKind, reason: str, confidence: float, slot: int | None = None,
                  blueprint: str | None = None) -> TamiyoDecision:
        action = Action(kind, slot, blueprint)
        return TamiyoDecision(action, self.space.encode(action), reason, float(min(1.0, max(0.0, confidence))))

    def _decide(self, k: int, obs: np.ndarray, mask: np.ndarray) -> TamiyoDecision:
        cfg, life = self.cfg, self.lifecycle
        st = self._states.setdefault(k, _EnvState())
        for bp in st.penalties:
            st.penalties[bp] *= cfg.penalty_decay
        epoch = int(round(float(obs[self._i["epoch_frac"]]) * self.max_epochs))
        plateau = int(round(float(obs[self._i["plateau_epochs"]])))
        gain = float(obs[self._i["val_acc"]] - obs[self._i[f"acc_hist_{cfg.plateau_epochs - 1}"]])
        slots = [self._slot(obs, s) for s in range(self.space.num_slots)]

        for s, v in enumerate(slots):                      # 1. cull what hurts or is stuck
            if v.stage not in _WORKING or not mask[self.space.cull_start + s]:
                continue
            # A TRAINING seed's counterfactual (added at full strength, untouched by the host) is a
            # rough preview, so harm is judged only once the seed is blended into the forward pass.
            if v.stage is not S.TRAINING and v.measured and v.contribution < cfg.cull_below_contribution:
                return self._cull(st, epoch, s, v, f"seed hurts: contribution {v.contribution:+.3f} < "
                                  f"{cfg.cull_below_contribution:+.3f}", abs(v.contribution - cfg.cull_below_contribution) / 0.05)
            # BLENDING too: it ends by itself only when G3 passes; still blending `patience` steps after the
            # ramp means G3 keeps failing, and the seed would block germination for the rest of the episode.
            if v.epochs_in_stage >= self._stage_need(v.stage) + cfg.patience_epochs:
                return self._cull(st, epoch, s, v, f"seed stuck in {v.stage.name} for {v.epochs_in_stage} steps", 0.6)

        for s, v in enumerate(slots):                      # 2. advance what is ready
            if not mask[self.space.advance_start + s]:
                continue
            threshold = -math.inf if v.stage is S.TRAINING else max(   # TRAINING: G2 needs only a measured preview
                cfg.advance_min_contribution, life.contribution_threshold)
            if v.epochs_in_stage >= self._stage_need(v.stage) and v.measured and v.contribution >= threshold:
                if v.stage is S.TRAINING:
                    return self._decision(ActionKind.ADVANCE, f"seed in TRAINING for {v.epochs_in_stage} steps (preview "
                                          f"{v.contribution:+.3f}): start blending", 0.6, s)
                return self._decision(ActionKind.ADVANCE, f"seed in {v.stage.name} improves: contribution "
                                      f"{v.contribution:+.3f} >= {threshold:+.3f}", 0.5 + 10 * (v.contribution - threshold), s)

        live = sum(v.stage in _WORKING for v in slots)     # 3. germinate on a plateau
        remaining = self.max_epochs - epoch
        germ_conf = plateau / (2.0 * cfg.plateau_epochs)
        if live >= cfg.max_live_seeds:
            return self._decision(ActionKind.WAIT, f"{live} seed(s) in flight", 1.0)
        if epoch < cfg.min_epoch_to_germinate:
            return self._decision(ActionKind.WAIT, f"host warming up (epoch {epoch} < {cfg.min_epoch_to_germinate})", 1.0)
        slow = epoch >= cfg.plateau_epochs and gain < cfg.plateau_min_gain
        if plateau < cfg.plateau_epochs and not slow:
            return self._decision(ActionKind.WAIT, f"still improving (plateau {plateau} < {cfg.plateau_epochs}, "
                                  f"gain {gain:+.3f} over {cfg.plateau_epochs} steps)", 1 - germ_conf)
        if st.last_cull_epoch is not None and epoch - st.last_cull_epoch <= cfg.embargo_epochs:
            return self._decision(ActionKind.WAIT, f"embargo after cull at epoch {st.last_cull_epoch}", 1.0)
        if remaining < life.shortest_path_to_fossil():
            return self._decision(ActionKind.WAIT, f"{remaining} steps left, too few to fossilize a seed", 1.0)
        choice = self._pick(st, mask)
        if choice is None:
            return self._decision(ActionKind.WAIT, "no free slot with an unbanned blueprint", 1.0)
        slot, bp = choice
        why = f"plateau for {plateau} steps" if plateau >= cfg.plateau_epochs else \
            f"gain {gain:+.3f} < {cfg.plateau_min_gain} over {cfg.plateau_epochs} steps"
        return self._decision(ActionKind.GERMINATE, f"{why}: germinate {bp} in slot {slot}",
                              max(germ_conf, 0.5), slot, bp)

    def _stage_need(self, stage: SeedStage) -> int:
        life = self.lifecycle
        return {S.TRAINING: life.min_training_epochs, S.SHADOWING: life.shadow_steps,
                S.PROBATIONARY: life.probation_steps}.get(stage, life.blend_steps)

    def _cull(self, st: _EnvState, epoch: int, s: int, v: _SlotView, reason: str, conf: float) -> TamiyoDecision:
        st.last_cull_epoch = epoch
        if v.blueprint is not None:
            st.penalties[v.blueprint] = st.penalties.get(v.blueprint, 0.0) + self.cfg.blueprint_penalty
        return self._decision(ActionKind.CULL, reason, conf, s)

    def _pick(self, st: _EnvState, mask: np.ndarray) -> tuple[int, str] | None:
        """Lowest-penalty unbanned blueprint, ties broken by rotation order; slots taken in rotation too."""
        bps = self.space.blueprint_ids
        order = [bps[(st.rotation + i) % len(bps)] for i in range(len(bps))]
        allowed = [b for b in order if st.penalties.get(b, 0.0) < self.cfg.ban_threshold]
        n = self.space.num_slots
        for bp in sorted(allowed, key=lambda b: (st.penalties.get(b, 0.0), order.index(b))):
            for s in ((st.slot_rotation + i) % n for i in range(n)):
                if mask[self.space.encode(Action(ActionKind.GERMINATE, s, bp))]:
                    st.rotation = (bps.index(bp) + 1) % len(bps)
                    st.slot_rotation = (s + 1) % n
                    return s, bp
        return None
