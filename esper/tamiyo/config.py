"""Tamiyo's settings: the heuristic's thresholds and the learned policy network's shape."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HeuristicConfig(BaseModel):
    """Every threshold HeuristicTamiyo uses. Frozen before any PPO tuning (the evaluation compares against these)."""

    model_config = ConfigDict(extra="forbid")

    plateau_epochs: int = Field(3, ge=1, le=4, description="germinate after this many steps without a new best val "
                                "accuracy, or when the val accuracy gained over this many steps is below plateau_min_gain")
    plateau_min_gain: float = Field(0.02, ge=0, description="val-accuracy gain over plateau_epochs that counts as a plateau")
    min_epoch_to_germinate: int = Field(2, ge=0, description="let the host warm up this many steps first")
    max_live_seeds: int = Field(1, ge=1, description="seeds in flight at once")
    advance_min_contribution: float = Field(0.0, description="advance a blended seed whose counterfactual contribution is at least this "
                                            "(a TRAINING seed advances when gate G2 would accept it)")
    cull_below_contribution: float = Field(-0.03, description="cull a blended seed whose contribution falls below this")
    patience_epochs: int = Field(6, ge=1, description="cull a seed that has not been able to advance for this many steps")
    embargo_epochs: int = Field(4, ge=0, description="no germination for this many steps after a cull (anti-thrash)")
    blueprint_penalty: float = Field(1.0, ge=0, description="penalty a blueprint collects per cull")
    penalty_decay: float = Field(0.9, gt=0, le=1, description="per-step multiplicative decay of blueprint penalties")
    ban_threshold: float = Field(2.5, gt=0, description="a blueprint whose penalty reaches this is not germinated")


class NetworkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden: list[int] = Field([128, 128], min_length=1, description="widths of the shared trunk")


class TamiyoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    heuristic: HeuristicConfig = HeuristicConfig()
    network: NetworkConfig = NetworkConfig()
