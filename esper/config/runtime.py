"""Runtime settings: how many runners, sync or async, when to stop, checkpoints and faults.

Plain pydantic, read by `esper.runtime`: it lives in `esper.config` so that the composed config sits
below the runtime (importing it never imports Ray).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from esper.tamiyo.policies import PolicyKind


class FaultInjection(BaseModel):
    """Test hooks: kill a runner's process at a named point, once (its first life)."""

    model_config = ConfigDict(extra="forbid")

    kill_runner: int | None = Field(None, ge=0, description="index of the runner to kill")
    at_sample_call: int = Field(2, ge=1, description="...during its Nth sample() call, after the first env step")
    kill_driver_after_updates: int | None = Field(None, ge=1, description="SIGKILL the driver after this many updates")
    kill_learner_at_update: int | None = Field(None, ge=1, description="SIGKILL the learner inside its Nth update "
                                                                     "(first life only)")


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: PolicyKind = "ppo"
    runners: int | Literal["auto"] = Field("auto", description="EnvRunner actors; auto = per GPU × runners_per_gpu, or CPUs - 1")
    envs_per_runner: int = Field(2, ge=1, description="environments in each runner's VectorEnv")
    runners_per_gpu: int = Field(1, ge=1, description="runners sharing one GPU (num_gpus = 1/R each)")
    steps_per_sample: int = Field(8, ge=1, description="environment steps each env takes per sample() call")
    mode: Literal["sync", "async"] = "sync"
    max_policy_lag: int = Field(1, ge=0, description="async: drop trajectories more than this many versions old")
    total_updates: int | None = Field(10, ge=1, description="stop after this many learner updates (ppo), or sampling rounds")
    total_episodes: int | None = Field(None, ge=1, description="stop after this many completed episodes")
    checkpoint_every: int = Field(5, ge=1, description="learner checkpoint every N updates (and at the end)")
    max_restarts: int = Field(3, ge=0, description="restarts Ray grants each runner and the learner")
    faults: FaultInjection = FaultInjection()
