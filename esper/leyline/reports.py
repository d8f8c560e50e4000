"""Cold-path reports: slotted dataclasses for gates, decisions and episode summaries."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from esper.leyline.actions import Action


@dataclass(slots=True)
class GateResult:
    """The outcome of a quality gate: whether it passed, what it checked, the values it saw, why."""

    gate: str                      # "G0".."G5"
    passed: bool
    checks: dict[str, bool] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class TamiyoDecision:
    """What a policy chose, the flat action index, and why."""

    action: Action
    index: int
    reason: str
    confidence: float
    log_prob: float = 0.0          # behaviour log-probability (0 for deterministic policies)
    value: float = 0.0             # critic's estimate (0 when there is none)


@dataclass(slots=True)
class SeedEvent:
    """A seed lifecycle transition, with the gate that allowed (or refused) it."""

    slot: int
    blueprint: str
    from_stage: str
    to_stage: str
    epoch: int
    reason: str
    gate: GateResult | None = None


@dataclass(slots=True, kw_only=True)
class EpisodeSummary:
    """One finished host training run (built with keywords: the fields are many and their order is not a contract)."""

    episode_id: str
    attempt: int
    env_seed: int
    epochs: int
    episode_return: float
    final_val_acc: float
    final_test_acc: float
    best_val_acc: float
    seeds_germinated: int
    seeds_fossilized: int
    seeds_culled: int
    params_host: int
    params_added: int
    rollbacks: int
    policy_version: int = -1
    actions: dict[str, int] = field(default_factory=dict)
    env_index: int = -1
    # Compute (tolaria.flops): forward + backward of every batch trained; the counterfactual evaluations only
    # growth needs; validation and test passes. Wall-clock from reset to the last step.
    training_flops: int = 0
    decision_flops: int = 0
    evaluation_flops: int = 0
    wall_seconds: float = field(default=0.0, compare=False)      # timing, not what happened

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
