"""The reward (docs/architecture.md, "The reward"): one function, its weights in RewardConfig, components reported apart.

  acc_gain      w_acc   · (val_acc_t − val_acc_{t−1})               the whole model's progress
  contribution  w_contr · Σ contribution of seeds fossilized this step   credit for the seed's own effect,
                paid once when it is kept (a per-step payment would reward never fossilizing)
  rent          −w_rent · params_added / host_params                   every step
                − w_flops · (step training FLOPs / bare host's − 1)     (compute, as the frontier prices it)
  shaping       γ·Φ(s') − Φ(s), Φ = w_shape · Σ stage potentials + fossils; Φ(terminal) = 0   (Ng et al. 1999)
  terminal      w_term  · final val_acc                                 last step only
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

from esper.leyline import SeedStage
from esper.simic.config import RewardConfig

S = SeedStage
STAGE_POTENTIAL: dict[SeedStage, float] = {
    S.DORMANT: 0.0, S.GERMINATED: 0.5, S.TRAINING: 1.0, S.BLENDING: 2.0, S.SHADOWING: 3.0, S.PROBATIONARY: 4.0,
    S.FOSSILIZED: 5.0, S.CULLED: 0.0, S.EMBARGOED: 0.0, S.RESETTING: 0.0,
}
FOSSIL_POTENTIAL = STAGE_POTENTIAL[S.FOSSILIZED]


class RewardBreakdown(NamedTuple):
    acc_gain: float
    contribution: float
    rent: float
    shaping: float
    terminal: float

    @property
    def total(self) -> float:
        return self.acc_gain + self.contribution + self.rent + self.shaping + self.terminal


def potential(stages: Sequence[SeedStage], fossils: int, cfg: RewardConfig) -> float:
    """Φ(state): a FOSSILIZED slot (transient) counts as a fossil, not twice."""
    live = sum(STAGE_POTENTIAL[s] for s in stages if s is not S.FOSSILIZED)
    return cfg.shaping_weight * (live + FOSSIL_POTENTIAL * fossils)


def compute_reward(cfg: RewardConfig, *, gamma: float, prev_val_acc: float, val_acc: float,
                   fossilized_contributions: Sequence[float], params_added_frac: float, phi_prev: float,
                   phi_next: float, terminal: bool, extra_flops_frac: float = 0.0) -> RewardBreakdown:
    phi_next = 0.0 if terminal else phi_next
    return RewardBreakdown(
        acc_gain=cfg.acc_gain_weight * (val_acc - prev_val_acc),
        contribution=cfg.contribution_weight * float(sum(fossilized_contributions)),
        rent=-cfg.param_rent * params_added_frac - cfg.flops_rent * extra_flops_frac,
        shaping=gamma * phi_next - phi_prev,
        terminal=cfg.terminal_weight * val_acc if terminal else 0.0,
    )
